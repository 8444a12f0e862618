"""Does the engine's motion LoRA transfer a motion on its own? ``make quality``'s motion stage, alone.

    python -m bench.motion_recipe [--model DIR] [--motions orbit,jump_over,swap] [--seeds 8]
                                  [--recipe motion_coverage=attention,motion_rank=4,motion_steps=200]

For each held-out motion: the reference clip ``make quality`` uses (its default 4 subject pairs decide the
reference colours), the motion trained as ``make quality`` trains it
(:func:`videomage_core.shapesworld.customization.train_motion_artifact`: the reference tokens' textual
inversion, then the motion LoRA with L_mot), then ``--seeds`` videos of the generic prompt "a shape <motion>
another shape" (``make quality``'s seeds): with the LoRA alone from fresh noise (beta = 0, the issue's
``motion_lora_only``) and with the LoRA and its noise prior (``motion_after``), each scored by motion
fidelity (``shapesworld.measures``). It costs one motion LoRA per motion, so the motion stage's coverage,
rank and steps can be chosen before a full ``make quality``; :mod:`bench.motion_capacity` gives the upper
bound (every temporal weight trained). Rows merge into ``bench/motion_recipe.json`` / ``.md``, keyed by
model fingerprint, motion and the recipe's motion settings.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


MOTION_FIELDS = ("motion_coverage", "motion_rank", "rank", "motion_steps", "inversion_steps", "lr_lora", "omega")


def probe(model, motion: str, recipe, seeds: int = 8, pairs: int = 4) -> dict:
    """Train ``recipe``'s motion LoRA on ``motion``'s reference; motion fidelity with and without its prior."""
    from videomage_core.shapesworld import customization as C
    from videomage_core.shapesworld.generator import HELD_OUT_INTERACTIONS

    k = HELD_OUT_INTERACTIONS.index(motion)
    every = tuple(s for p in C.subject_pairs(1000, pairs) for s in p)
    ref = C.reference_clip(2000 + k, motion, every, recipe.frames, recipe.size)  # as make quality's
    t0 = time.perf_counter()
    art = C.train_motion_artifact(model, ref, recipe, 500 + k)
    seconds = time.perf_counter() - t0
    prompt = C.motion_stage_prompt(motion)
    scores = {"lora_only": [], "with_prior": []}
    for s in range(seeds):
        seed = 4000 + 100 * k + s
        scores["lora_only"].append(round(C.measure_motion(C.generate_with(model, art, prompt, recipe, seed), ref), 4))
        video = C.generate_with(model, art, prompt, recipe, seed, prior_from=art)
        scores["with_prior"].append(round(C.measure_motion(video, ref), 4))
    settings = {f: getattr(recipe, f) for f in MOTION_FIELDS}
    return {"motion": motion, "recipe": settings, "size": recipe.size, "reference": ref.caption, "prompt": prompt,
            "lora_parameters": int(sum(v.numel() for v in art.lora.values())), "seconds": round(seconds, 1),
            "final_loss": round(float(np.mean(art.losses[-50:])), 5), "motion_fidelity": scores,
            "mean": {key: round(float(np.mean(v)), 3) for key, v in scores.items()},
            "model": str(model.path), "model_fingerprint": model.fingerprint}


def _key(row: dict) -> str:
    return json.dumps([row["model_fingerprint"], row["motion"], row["recipe"]], sort_keys=True)


def markdown(rows: list[dict]) -> str:
    lines = ["# The motion LoRA on its own (the recipe's motion stage)", "",
             "Written by `python -m bench.motion_recipe` (see its docstring). Each row trains the motion as "
             "`make quality` does, then samples the generic prompt: motion fidelity with the LoRA alone (fresh "
             "noise, beta = 0) and with its noise prior, mean (per-seed scores).", "",
             "| model | size | motion | coverage | rank | steps | omega | LoRA params | final L_mot | LoRA alone "
             "| with prior |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rc, sc = r["recipe"], r["motion_fidelity"]
        lines.append(f"| {Path(r['model']).name} `{r['model_fingerprint'][:8]}` | {r['size']} | {r['motion']} | "
                     f"{rc['motion_coverage']} | {rc['motion_rank'] or rc['rank']} | {rc['motion_steps']} | "
                     f"{rc['omega']:g} | {r['lora_parameters']:,} | {r['final_loss']:.4f} | "
                     f"{r['mean']['lora_only']:.2f} ({', '.join(f'{v:.2f}' for v in sc['lora_only'])}) | "
                     f"{r['mean']['with_prior']:.2f} ({', '.join(f'{v:.2f}' for v in sc['with_prior'])}) |")
    return "\n".join(lines) + "\n"


def record(rows_path: Path, row: dict) -> list[dict]:
    """Merge ``row`` into the JSON list at ``rows_path`` (same model, motion and motion settings: replaced)."""
    from bench.markdown import merge_rows

    return merge_rows(rows_path, row, _key, markdown)


def main(argv=None) -> int:
    from bench.recipe_probe import probe_inputs, probe_parser
    from videomage_core.shapesworld.generator import HELD_OUT_INTERACTIONS

    p = probe_parser("motion_recipe", __doc__, 8, "bench/motion_recipe.json")
    p.add_argument("--motions", default=",".join(HELD_OUT_INTERACTIONS), help="comma-separated held-out motions")
    a = p.parse_args(argv)
    motions = [m.strip() for m in a.motions.split(",") if m.strip()]
    if not motions or set(motions) - set(HELD_OUT_INTERACTIONS):
        p.error(f"--motions: expected some of {','.join(HELD_OUT_INTERACTIONS)}, got '{a.motions}'")
    model, recipe = probe_inputs(p, a)
    for motion in motions:
        row = probe(model, motion, recipe, a.seeds)
        record(Path(a.results), row)
        print(f"{motion}: motion fidelity, LoRA alone {row['mean']['lora_only']:.2f}, with its prior "
              f"{row['mean']['with_prior']:.2f} ({row['seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
