"""Do both subjects reach the video? ``make quality``'s two-subject stages, one at a time.

    python -m bench.fusion_recipe [--model DIR] [--pairs 2] [--seeds 3] [--out outputs/fusion_recipe]
                                  [--recipe fusion_steps=200,lambda2=1.2,tau=15,noise_prior_beta=0.2]

For each of ``make quality``'s first ``--pairs`` subject pairs, with its "orbit" reference: the subject LoRAs,
their fusion and the orbit motion, trained as ``make quality`` trains them (cached in ``--out`` on the
recipe fields each stage reads, so a sampling or fusion change retrains nothing else), then ``--seeds``
videos (``make quality``'s cell seeds) at each stage:

- ``own``: each subject's own LoRA, "a <token> standing still" (what :mod:`bench.subject_recipe` measures);
- ``fused``: the fused LoRA, the same prompts (what fusion keeps of each subject);
- ``fused_two``: the fused LoRA, "a <s1> and a <s2> approach each other" (an interaction pretraining taught;
  no motion LoRA): does one adapter draw two subjects at once;
- ``scs``: the full pipeline, "a <s1> orbits a <s2>" with the motion LoRA, SCS and the noise prior.

Each two-subject video scores both subjects' fidelity (the best-matching of the two largest objects,
``shapesworld.measures``), the weaker of the two (0 when a subject is missing: the failure the demo shows),
and the objects found; ``scs`` adds motion fidelity, leakage and the interaction. Rows merge into
``bench/fusion_recipe.json`` / ``.md``, keyed by model fingerprint, sample count and the recipe.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MOTION = "orbit"
STAGES = ("own", "fused", "fused_two", "scs")
#: the recipe fields this probe's rows differ by (training of subjects, fusion and motion are cached
#: on all of them; sampling fields change only the videos)
FIELDS = ("subject_steps", "images", "fusion_steps", "lambda2", "lr_lora", "motion_steps", "motion_rank",
          "motion_renderings", "motion_prior_from", "omega", "tau", "alpha", "beta_s", "motion_prompt",
          "subject_interaction", "noise_prior_beta", "sample_steps", "cfg", "subject_companion")


def two_subject_scores(frames, pair) -> dict:
    """Both subjects' fidelity in a two-object video, the weaker one, and how many objects were found."""
    from videomage_core.shapesworld import measures as M

    arr = np.asarray(frames.float().numpy())
    try:
        an = M.analyze(arr, 2)
    except (ValueError, IndexError):
        return {"fidelity": 0.0, "weaker": 0.0, "objects": 0}
    each = [M.subject_fidelity(an, s, 2) for s in pair]
    return {"fidelity": round(float(np.mean(each)), 4), "weaker": round(float(min(each)), 4),
            "objects": len(an.objects)}


def _mean(rows: list[dict], key: str):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(float(np.mean(vals)), 3) if vals else None


def probe(model, recipe, out: Path, pairs: int = 2, seeds: int = 3, log=print) -> dict:
    """Train (or reuse) the stages' artifacts for the first ``pairs`` pairs; score each stage's videos."""
    from bench.quality import Quality
    from videomage_core.shapesworld import customization as C
    from videomage_core.shapesworld.generator import HELD_OUT_INTERACTIONS, interaction_prompt

    q = Quality(model, recipe, Path(out), pairs, seeds, log=log, motions=(MOTION,))
    ref = q.references[MOTION]
    motion = q._cached(f"motion_{MOTION}", lambda: C.train_motion_artifact(model, ref, recipe, 500), "motion")
    scores = {s: [] for s in STAGES}
    for i, pair in enumerate(q.pairs):
        tokens = (q.token(i, 0), q.token(i, 1))
        subs = [q._cached(f"subject_p{i}s{k}", lambda k=k: C.train_subject_artifact(
            model, pair[k], tokens[k], recipe, 10 * i + k, q.out / "cache"), "subject") for k in range(2)]
        fused = q._cached(f"fused_p{i}", lambda: C.fuse_artifact(model, subs, pair, recipe, 700 + i,
                                                                 cache_dir=q.out / "cache"), "fusion")
        for s in range(seeds):
            seed = 5000 + 97 * i + 13 * HELD_OUT_INTERACTIONS.index(MOTION) + s  # make quality's cell seeds
            for name, art in (("own", None), ("fused", fused)):
                each = [C.measure_subject(C.generate_with(model, art or subs[k], f"a {tokens[k]} standing still",
                                                          recipe, seed), pair[k]) for k in range(2)]
                scores[name].append({"fidelity": round(float(np.mean(each)), 4), "weaker": round(min(each), 4),
                                     "objects": None})
            both = interaction_prompt("approach", f"a {tokens[0]}", f"a {tokens[1]}")
            scores["fused_two"].append(two_subject_scores(C.generate_with(model, fused, both, recipe, seed), pair))
            video = C.generate(model, fused, motion, C.customized_prompt(MOTION, tokens), recipe, seed, "scs")
            m = C.measure_customized(video, pair, ref)
            scores["scs"].append({**two_subject_scores(video, pair),
                                  **{k: m[k] for k in ("motion_fidelity", "leakage", "interaction")}})
            log(f"  pair {i} seed {s}: " + ", ".join(f"{k} {v[-1]['fidelity']:.2f}/{v[-1]['weaker']:.2f}"
                                                      for k, v in scores.items()))
    keys = ("fidelity", "weaker", "objects", "motion_fidelity", "leakage", "interaction")
    return {"recipe": {f: getattr(recipe, f) for f in FIELDS}, "size": recipe.size, "pairs": pairs, "seeds": seeds,
            "scores": scores,
            "mean": {st: {k: _mean(v, k) for k in keys if any(k in r for r in v)} for st, v in scores.items()},
            "model": str(model.path), "model_fingerprint": model.fingerprint}


def _key(row: dict) -> str:
    return json.dumps([row["model_fingerprint"], row["recipe"], row["pairs"], row["seeds"]], sort_keys=True)


def _cell(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _subject_branch(recipe: dict) -> str:
    """The subject branch's prompt column: the target prompt, or the pretraining interaction asked for."""
    return recipe.get("subject_interaction") or "target"


def _prior(recipe: dict) -> str:
    """The prior's beta, and what it inverts where that is not the reference (beyond the paper)."""
    source = recipe.get("motion_prior_from", "reference")
    return f"{recipe['noise_prior_beta']:g}" + ("" if source == "reference" else f" of {source}")


def markdown(rows: list[dict]) -> str:
    lines = ["# Two subjects in one video (the recipe's fusion and sampling stages)", "",
             "Written by `python -m bench.fusion_recipe` (see its docstring). Means over pairs x seeds of subject "
             "fidelity (mean of the two subjects / the weaker one; a missing subject scores 0) at each stage: "
             "own = each subject's LoRA alone, fused = the fused LoRA on one subject, fused two = the fused LoRA "
             "on \"a <s1> and a <s2> approach each other\", SCS = the whole pipeline on \"a <s1> orbits a <s2>\" "
             "(with its motion fidelity, leakage and interaction). Subject branch prompt: SCS's subject branch reads the "
             "target prompt (the paper), or a pretraining interaction's caption of the two tokens (beyond the paper: "
             "\"chase\" is \"a <s1> chases a <s2>\"). Motion looks: the reference clip alone (1, the paper), or with "
             "renderings of its paths in random hues and shapes (beyond the paper, `Recipe.motion_renderings`). "
             "Subject images with a companion: the share of each subject's images that also show a named object "
             "(beyond the paper, `Recipe.subject_companion`; 0 %: the paper). "
             "Prior beta \"of looks\": the noise prior inverts the mean latents of the reference and its renderings instead of "
             "the reference's (beyond the paper, `Recipe.motion_prior_from`).", "",
             "| model | subject images with a companion | fusion steps | lambda2 | tau | alpha | beta_s | motion branch prompt | subject branch prompt | prior beta | motion omega | motion rank | motion steps | motion looks | pairs x seeds | own | fused | fused two "
             "| SCS | SCS motion | SCS leakage | SCS interaction |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rc, m = r["recipe"], r["mean"]
        pair_cell = {st: f"{_cell(m[st]['fidelity'])} / {_cell(m[st]['weaker'])}" for st in STAGES}
        lines.append(f"| {Path(r['model']).name} `{r['model_fingerprint'][:8]}` | "
                     f"{float(rc.get('subject_companion', False)):.0%} | {rc['fusion_steps']} | "
                     f"{rc['lambda2']:g} | {rc['tau']} | {_cell(rc['alpha']) if rc['alpha'] is not None else 'model'} | "
                     f"{rc.get('beta_s', 0.5):g} | {rc.get('motion_prompt', 'superclass')} | {_subject_branch(rc)} | "
                     f"{_prior(rc)} | {rc['omega']:g} | "
                     f"{rc['motion_rank']} | {rc['motion_steps']} | {1 + rc.get('motion_renderings', 0)} | "
                     f"{r['pairs']} x {r['seeds']} | {pair_cell['own']} | "
                     f"{pair_cell['fused']} | {pair_cell['fused_two']} | **{pair_cell['scs']}** | "
                     f"{_cell(m['scs']['motion_fidelity'])} | {_cell(m['scs']['leakage'])} | "
                     f"{_cell(m['scs']['interaction'])} |")
    return "\n".join(lines) + "\n"


def record(rows_path: Path, row: dict) -> list[dict]:
    """Merge ``row`` into the JSON list at ``rows_path`` (same model, recipe and sample count: replaced)."""
    from bench.markdown import merge_rows

    return merge_rows(rows_path, row, _key, markdown)


def main(argv=None) -> int:
    from bench.recipe_probe import add_pairs_option, probe_inputs, probe_parser

    p = probe_parser("fusion_recipe", __doc__, 3, "bench/fusion_recipe.json")
    add_pairs_option(p, "subject pairs (make quality's first ones)")
    p.add_argument("--out", default="outputs/fusion_recipe", help="where the trained artifacts are cached")
    a = p.parse_args(argv)
    model, recipe = probe_inputs(p, a)
    row = probe(model, recipe, Path(a.out), a.pairs, a.seeds)
    record(Path(a.results), row)
    print("  ".join(f"{st} {_cell(row['mean'][st]['fidelity'])} (weaker {_cell(row['mean'][st]['weaker'])})"
                    for st in STAGES), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
