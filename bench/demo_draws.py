"""``make demo``'s pipeline on several draws and seeds: how typical the demo's one video is.

    python -m bench.demo_draws [--draws 6] [--seeds 3] [--out outputs/demo_draws]

Draw ``d`` is ``videomage demo --seed d``: its inputs (``demo.draw_inputs``) and its training (subject LoRAs
from images with a named companion, their fusion, the motion LoRA checked against its own reference and
retrained when it fails). Each draw is sampled on seeds ``d .. d + seeds - 1`` (the demo shows seed ``d``)
with SCS weighted by region (an option beyond the paper; the demo's VideoMage column, ``demo.SAMPLING``), the
paper's SCS and w/o SCS, and
measured with the exact ShapesWorld detectors. Trained artifacts are cached under ``--out`` (keyed by the model
and the recipe); the summary goes to ``bench/demo_draws.json`` and ``bench/demo_draws.md``. Paired differences
are tested over draws (a draw's seeds share its LoRAs), as ``make quality`` tests over cells.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

from bench.quality_stats import claim, stat
from videomage_core.atomic import atomic_write_json, atomic_write_text
from videomage_core.demo import SAMPLERS  # sampler name -> (generate's mode, weighted by region)

ROOT = Path(__file__).resolve().parent.parent
MEASURES = ("subject_fidelity", "motion_fidelity", "leakage", "subject_hue", "subject_shape")


def _artifacts(model, recipe, scale: str, d: int, folder: Path, log):
    """Draw ``d``'s fused subjects and checked motion, trained as the demo trains them (cached in ``folder``)."""
    from videomage_core.artifacts import load_artifact, save_artifact
    from videomage_core import demo

    pair, reference = demo.draw_inputs(d, recipe.size, recipe.frames)
    folder.mkdir(parents=True, exist_ok=True)

    def cached(path: Path, train):
        if not path.is_file():
            log(f"  draw {d}: training {path.stem}")
            save_artifact(train(), path)
        return load_artifact(path)

    def fuse():
        trained = [demo.train_subject(model, recipe, pair, n, d, folder / "cache") for n in range(len(pair))]
        return demo.fuse_subjects(model, recipe, trained, pair, d, folder / "cache")

    fused = cached(folder / "fused_subjects.safetensors", fuse)
    motion = demo.train_motion(model, recipe, reference, d, scale,
                               trained=lambda k, train: cached(folder / f"motion_seed{k}.safetensors", train))
    return pair, reference, fused, motion


def run(draws: int = 6, seeds: int = 3, out: Path = ROOT / "outputs" / "demo_draws", scale: str = "demo",
        results: Path | None = ROOT / "bench" / "demo_draws.json", model_dir=None, log=print) -> dict:
    from videomage_core.demo import MOTION, SCALES, TOKENS
    from videomage_core.model import load_model
    from videomage_core.pretrained import shapesworld_model_dir
    from videomage_core.shapesworld import customization as C

    t0 = time.perf_counter()
    model = load_model(model_dir or shapesworld_model_dir())
    recipe = C.Recipe.for_model(model, **SCALES[scale])
    key = json.dumps([model.fingerprint, C.recipe_dict(recipe), scale])
    folder = Path(out) / hashlib.sha256(key.encode()).hexdigest()[:8]
    prompt = C.customized_prompt(MOTION, TOKENS)
    records, per_draw = [], []
    for d in range(draws):
        pair, reference, fused, motion = _artifacts(model, recipe, scale, d, folder / f"draw{d}", log)
        for s in range(d, d + seeds):
            for name, (mode, regional) in SAMPLERS.items():
                video = C.generate(model, fused, motion, prompt, recipe, s, mode, regional=regional)
                rec = C.measure_customized(video, pair, reference)
                records.append({"sampler": name, "draw": d, "seed": s, "failed": int(rec["failed"]),
                                **{k: rec[k] for k in MEASURES}})
        per_draw.append({"draw": d, "reference": reference.caption, "motion_checks": motion.info["motion_checks"],
                         "subjects": [f"{o.shape}, hue {o.hue:.0f}" for o in pair]})
        log(f"  draw {d}: {len(records)} videos measured")

    result = {"date": time.strftime("%Y-%m-%d"), "model_fingerprint": model.fingerprint, "scale": scale,
              "draws": draws, "seeds": seeds, "recipe": C.recipe_dict(recipe), **summarize(records),
              "per_draw": per_draw, "records": records, "seconds": round(time.perf_counter() - t0, 1)}
    if results is not None:
        atomic_write_json(results, result, indent=1)
        atomic_write_text(Path(results).with_suffix(".md"), markdown(result))
    return result


def summarize(records: list[dict]) -> dict:
    """Each sampler's means (``samplers``) and, tested over draws (``paired``), the demo's sampler against the
    paper's SCS and against w/o SCS, and the paper's SCS against w/o SCS (the paper's ablation)."""
    from videomage_core.demo import MOTION, SAMPLING

    def values(name, measure):
        return {(r["draw"], MOTION, r["seed"]): r[measure] for r in records if r["sampler"] == name}

    summary = {name: {**{k: stat(values(name, k).values()) for k in MEASURES},
                      "failed": sum(r["failed"] for r in records if r["sampler"] == name)} for name in SAMPLERS}
    pairs = [(SAMPLING, other) for other in SAMPLERS if other != SAMPLING]
    pairs += [("scs", "wo_scs")] if ("scs", "wo_scs") not in pairs else []
    paired = {f"{a} - {b}": {k: claim(values(a, k), values(b, k)) for k in MEASURES[:2]} for a, b in pairs}
    return {"samplers": summary, "paired": paired}


def markdown(result: dict) -> str:
    from videomage_core.demo import SAMPLING

    def cell(s):
        return "n/a" if s["mean"] is None else f"{s['mean']:.2f} +- {s['ci95'] or 0:.2f}"

    lines = [f"# `make demo`'s pipeline on {result['draws']} draws x {result['seeds']} seeds",
             "", "Written by `python -m bench.demo_draws`; draw d is `videomage demo --seed d` (the demo shows draw 0, "
             f"seed 0, sampled with {SAMPLING}: SCS's DDIM step weighted by region, beyond the paper; scs is the "
             "paper's SCS). Means over videos with 95 % intervals (normal approximation); paired differences are "
             "tested over draws (Student t).", "",
             "| sampler | subject fidelity (hue / shape) | motion fidelity | leakage | failed |", "|---|---|---|---|---|"]
    for name, s in result["samplers"].items():
        n = s["subject_fidelity"]["n"]
        parts = " / ".join(f"{s[k]['mean']:.2f}" for k in ("subject_hue", "subject_shape") if s.get(k, {}).get("n"))
        lines.append(f"| {name} | {cell(s['subject_fidelity'])}{f' ({parts})' if parts else ''} | "
                     f"{cell(s['motion_fidelity'])} | "
                     f"{cell(s['leakage'])} | {s['failed']} of {n} |")
    lines += ["", "| paired, over draws | subject fidelity | motion fidelity |", "|---|---|---|"]
    for name, p in result["paired"].items():
        lines.append(f"| {name} | " + " | ".join(
            f"{c['cell_mean']:+.2f} +- {c['cell_ci95'] or 0:.2f}{' (supported)' if c['supported'] else ''}"
            for c in (p["subject_fidelity"], p["motion_fidelity"])) + " |")
    lines += ["", f"| draw | subjects | reference | motion checks (training seed: median of its check; the kept one) "
              f"| {SAMPLING} subject / motion per seed |", "|---|---|---|---|---|"]
    for row in result["per_draw"]:
        checks = "; ".join(f"{c['training_seed']}: {c['median']:.2f}{' kept' if c['kept'] else ''}"
                           for c in row["motion_checks"])
        shown = ", ".join(f"{r['subject_fidelity']:.2f} / {r['motion_fidelity']:.2f}" for r in result["records"]
                          if r["sampler"] == SAMPLING and r["draw"] == row["draw"])
        lines.append(f"| {row['draw']} | {'; '.join(row.get('subjects', []))} | {row['reference']} | {checks} | "
                     f"{shown} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "demo_draws")
    args = parser.parse_args(argv)
    result = run(args.draws, args.seeds, args.out)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
