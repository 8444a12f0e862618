"""The quality section of ``bench/RESULTS.md`` from ``make quality``'s result (``bench/quality.py``)."""

from __future__ import annotations

from pathlib import Path

from bench.quality_stats import BASELINE, METHODS, TABLE_MEASURES


def _fmt(s: dict) -> str:
    if s.get("mean") is None:
        return "n/a"
    return f"{s['mean']:.3f} ± {s['ci95']:.3f}" if s.get("ci95") is not None else f"{s['mean']:.3f}"


def _renderings_note(recipe: dict) -> str:
    """What the recipe's motion LoRAs train on, where it goes beyond the paper (``Recipe.motion_renderings``)."""
    n = recipe.get("motion_renderings", 0)
    return (f" Beyond the paper, VideoMage's motion LoRAs (and w/o L_mot's) train on their reference and {n} "
            "renderings of its paths in random hues and shapes (`Recipe.motion_renderings`); MotionDirector's, "
            "on the reference alone.") if n else ""


def _later_option_rows(opt: dict, recipe: dict, d) -> list[str]:
    """The rows of the options added after session 17 (absent from a quality.json written before them)."""
    weights = recipe.get("region_weights") or ("?", "?")
    labels = {"subject_companion": "subject LoRAs learned from images with a second, named object, each "
                                   "captioned so (\"a <s> and a red circle\"), fused",
              "scs_regions": f"SCS's DDIM step weighted by region: the subject branch's share {weights[0]} where "
                             f"its tokens are not attended, up to {weights[1]} where they are most",
              "motion_check": "the motion LoRA checked on its own reference and retrained with the next seed when "
                              "it fails (median motion stage < 0.5; at most 3 trainings), as `make demo` trains it",
              "demo_recipe": "`make demo`'s recipe: the companion subjects (above) with the checked motion"}
    return [f"| {label} | {_fmt(c['subject_fidelity'])} | {_fmt(c['motion_fidelity'])} | "
            f"{_fmt(c['motion_fidelity_next'])} | {d(c, 'subject_fidelity')} / {d(c, 'motion_fidelity')} / "
            f"{d(c, 'motion_fidelity_next')} |"
            for name, label in labels.items() if (c := opt.get(name)) is not None]


def _subject_parts_rows(result: dict) -> list[str]:
    """Subject fidelity split into hue and shape, from one LoRA alone to the two-subject videos (absent from a
    quality.json written before session 22)."""
    parts = result["customization"].get("subject_parts")
    if not parts:
        return []
    L = ["", "### Subject fidelity by part: hue and shape", "",
         "| what draws the subject | hue | shape |", "|---|---|---|",
         f"| its own subject LoRA, alone (\"a <s> standing still\") | {_fmt(parts['subject_lora']['hue'])} | "
         f"{_fmt(parts['subject_lora']['shape'])} |",
         f"| its pair's fused LoRA, alone (same prompt and seeds) | {_fmt(parts['fused_lora']['hue'])} | "
         f"{_fmt(parts['fused_lora']['shape'])} |"]
    rows = [(name, result["methods"][name]) for name in ("videomage", "wo_scs")]
    rows += [(f"option {name}", o) for name, o in (result.get("options") or {}).items() if "subject_hue" in o]
    L += [f"| {label}, in the two-subject videos | {_fmt(m['subject_hue'])} | {_fmt(m['subject_shape'])} |"
          for label, m in rows]
    L += ["", ("Hue: 1 within 10 degrees of the subject's, 0 beyond 60; shape: the fraction of frames whose "
               "detected shape is the subject's (`measures.fidelity_parts`), of the object that scores best for "
               "the subject; in two-subject videos averaged over both subjects and times the presence factor, so "
               "their mean is the subject fidelity above.")]
    return L


def markdown(result: dict) -> str:
    b, c, s = result["base"], result["customization"], result["settings"]
    ceil = c.get("vae_ceiling", {})
    L = ["## Quality on ShapesWorld (`make quality`)", "",
         f"Written by `python -m bench.quality` on {result['machine']}, {result['date']}, in "
         f"{result['seconds'] / 60:.1f} min. Model: `{Path(s['model']).name}` ({s['model_fingerprint']}); "
         f"{s['pairs']} subject pairs x {len(s['motions'])} held-out motions ({', '.join(s['motions'])}) x "
         f"{s['seeds']} seeds = {s['cells']} videos per method; {s['recipe']['frames']} frames at "
         f"{s['recipe']['size']} px, {s['recipe']['sample_steps']} DDIM steps, CFG {s['recipe']['cfg']}, "
         f"tau {s['recipe']['tau']}. Mean ± 95 % half-width. All measures are exact detectors "
         f"(`videomage_core/shapesworld/measures.py`, `detection.py`); leakage: lower is better.", "",
         "### Base model (held-out prompts)", "",
         "| colour | shape | motion |", "|---|---|---|",
         f"| {_fmt(b['colour'])} | {_fmt(b['shape'])} | {_fmt(b['motion'])} |", "",
         f"Targets: colour >= 0.8, shape >= 0.65, motion >= 0.6 (chance 0.25 / 0.33 / 0.2). {b.get('source', '')}",
         "", "### Customization (one LoRA, before -> after)", "",
         "| measure | before | after | target | VAE ceiling |", "|---|---|---|---|---|",
         f"| subject fidelity | {_fmt(c['subject_before'])} | {_fmt(c['subject_after'])} | >= 0.6 vs <= 0.1 "
         f"| {_fmt(ceil.get('subject_fidelity', {}))} |",
         f"| motion fidelity | {_fmt(c['motion_before'])} | {_fmt(c['motion_after'])} | >= 0.6 vs <= 0.2 "
         f"| {_fmt(ceil.get('motion_fidelity', {}))} |",
         "", ("VAE ceiling: the subjects' own images and the reference clips after an encode + decode, scored "
              "the same way (the most a perfect UNet could reach through this VAE)."),
         "", ("Motion \"after\" is the motion as every VideoMage sampler uses it: its LoRA, sampling from its "
              "reference's inverted noise (the noise prior, beta "
              f"{s['recipe']['noise_prior_beta']}). Each half alone: LoRA with fresh noise "
              f"{_fmt(c.get('motion_lora_only', {}))}, noise prior on the base model "
              f"{_fmt(c.get('motion_prior_only', {}))}."
              + _renderings_note(s['recipe'])),
         "", "### Methods (as the paper's Tables 1-2)", "",
         "| method | subject fidelity | motion fidelity | leakage (lower) | binding | temporal consistency | "
         "interaction | failed videos |", "|---|---|---|---|---|---|---|---|"]
    for name in METHODS:
        m = result["methods"][name]
        L.append(f"| {name} | " + " | ".join(_fmt(m[k]) for k in (*TABLE_MEASURES, "interaction"))
                 + f" | {m['failed']} |")
    ctl = result.get("controls") or {}
    if ctl:
        L += ["", "### Controls", "",
              "| video | subject fidelity | motion fidelity | leakage (lower) | binding | temporal consistency | "
              "interaction | failed videos |", "|---|---|---|---|---|---|---|---|"]
        rows = [("MotionDirector (baseline)", ctl[BASELINE]), ("VideoMage, tau = 0 (two branches, no guidance)",
                                                                ctl["tau0"])]
        rows += [(f"{name}, noise prior off (beta = 0)", v) for name, v in ctl["beta0"].items()]
        for label, m in rows:
            L.append(f"| {label} | " + " | ".join(_fmt(m[k]) for k in (*TABLE_MEASURES, "interaction"))
                     + f" | {m['failed']} |")
        L += ["", ("tau = 0 samples with both of SCS's branches, averaged, but never guides them: what SCS adds "
                   "beyond averaging two models. beta = 0 starts every method from fresh noise instead of the "
                   "reference's inverted latents, which carry its layout and its appearance: what each method "
                   "does without the noise prior. MotionDirector: its dual-path motion LoRA (spatial LoRA on "
                   "single frames absorbing appearance, temporal LoRA with its appearance-debiased loss; same "
                   "rank, steps and learning rate as VideoMage's), the subjects' LoRAs averaged, plain sampling.")]
    opt = result.get("options") or {}
    if opt:
        cc, two = opt["customcrafter"], opt["two_motions"]
        d = lambda o, k: _fmt({"mean": o["vs_videomage"][k].get("cell_mean"), "ci95": o["vs_videomage"][k].get("cell_ci95")})
        L += ["", "### Options beyond the paper (on VideoMage, same cells)", "",
              "| option | subject fidelity | motion fidelity | motion fidelity to the second motion | "
              "vs VideoMage: subject / motion / second motion (per-cell difference) |", "|---|---|---|---|---|",
              f"| CustomCrafter's early subject scale ({s['recipe'].get('early_subject_scale')} for the first "
              f"{s['recipe'].get('early_subject_steps')} steps) | {_fmt(cc['subject_fidelity'])} | "
              f"{_fmt(cc['motion_fidelity'])} | {_fmt(cc['motion_fidelity_next'])} | {d(cc, 'subject_fidelity')} / "
              f"{d(cc, 'motion_fidelity')} / {d(cc, 'motion_fidelity_next')} |",
              f"| two motion LoRAs (the cell's + the next held-out motion's, weight 1 each) | "
              f"{_fmt(two['subject_fidelity'])} | {_fmt(two['motion_fidelity'])} | {_fmt(two['motion_fidelity_next'])} | "
              f"{d(two, 'subject_fidelity')} / {d(two, 'motion_fidelity')} / {d(two, 'motion_fidelity_next')} |",
              *_later_option_rows(opt, s['recipe'], d),
              "", (f"VideoMage's own videos score {_fmt(opt['videomage_motion_fidelity_next'])} against the second "
                   "motion's reference: the baseline for the last column (a combined video that shows both "
                   "motions would score above it there while keeping its first motion).")]
    L += _subject_parts_rows(result)
    L += ["", ("A failed video (fewer than two objects detected) scores 0 on every measure, and on the "
               "overall score of the baseline claim below, except leakage, which leaves it out (a 0 there "
               "would reward the failure). Subject fidelity in a two-subject video counts where both subjects are "
               "shown together: the mean of the two subjects' fidelity times the presence factor of the frames "
               "that show both, apart (`measures.pair_subject_fidelity`; since session 15), as motion fidelity "
               "already did.")]
    L += ["", "### The paper's claims (paired differences over the same videos)", "",
          "| claim | per video (n) | per (pair, motion) cell | supported |", "|---|---|---|---|"]
    for k, v in result["claims"].items():
        cell = _fmt({"mean": v.get("cell_mean"), "ci95": v.get("cell_ci95")})
        L.append(f"| {k} | {_fmt(v)} ({v['n']}) | {cell} ({v.get('cells', 0)} cells) | "
                 f"{'yes' if v['supported'] else 'no'} |")
    L += ["", ("The seeds of one (pair, motion) cell share its trained LoRAs, so they are not independent "
               "evidence: a claim counts as supported when the Student-t 95 % interval of the per-cell mean "
               "differences excludes 0 on the claimed side. The per-video interval (normal, every video "
               "independent) is shown for comparison; it is narrower than the evidence allows. Cells also "
               "share LoRAs across a row (a pair's fused subjects) and a column (a motion), so even the "
               "per-cell interval is optimistic about new subjects and motions; more pairs and motions, not "
               "more seeds, would narrow it.")]
    if result["timings"]:
        L += ["", "Training times (s): " + ", ".join(f"{k} {v}" for k, v in result["timings"].items()), ""]
    else:
        L += ["", "Training: every LoRA came from an earlier run's artifacts (`--out`), so the time above is "
              "the measuring alone.", ""]
    reused = result.get("reused") or {}
    if reused.get("cells") or reused.get("customization"):
        what = [f"{reused.get('cells', 0)} of {result['settings']['cells']} (pair, motion, seed) cells"]
        what += ["the customization measures"] if reused.get("customization") else []
        L += [f"Measuring: {' and '.join(what)} came from an earlier run's cache (`--out`; same model, "
              "artifacts and sampling settings), so the time above covers the rest.", ""]
    return "\n".join(L)
