"""Does the engine's subject LoRA draw its subject? ``make quality``'s subject stage, alone.

    python -m bench.subject_recipe [--model DIR] [--pairs 2] [--seeds 4]
                                   [--recipe subject_steps=400,lr_lora=5e-4,lambda1=0.1]

For each subject of ``make quality``'s first ``--pairs`` pairs (the same subjects, images and seeds): the
subject LoRA trained as ``make quality`` trains it
(:func:`videomage_core.shapesworld.customization.train_subject_artifact`), then ``--seeds`` videos of
"a <token> standing still" (``make quality``'s prompt and seeds; the first ``--seeds`` of them), each scored
by subject fidelity (``shapesworld.measures``) and split into what it averages: hue agreement, shape
agreement and, for a textured subject, texture agreement of the best-matching object. The base model's
videos of "a shape standing still" with the same seeds give the "before" column. It costs one subject LoRA
per subject, so the subject stage's steps, rank, learning rates and lambda1 can be chosen before a full
``make quality``. Rows merge into ``bench/subject_recipe.json`` / ``.md``, keyed by model fingerprint and
the recipe's subject settings.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

SUBJECT_FIELDS = ("subject_steps", "rank", "lr_lora", "lr_token", "lambda1", "images", "prior_videos", "subject_masks",
                  "subject_companion")
PARTS = ("fidelity", "hue", "shape", "texture")


def score_parts(frames, subject) -> dict:
    """Subject fidelity of a one-subject video and its parts (hue, shape, texture: None when plain)."""
    from videomage_core.shapesworld.customization import measure_subject_parts

    parts = measure_subject_parts(frames, subject)
    fidelity = float(np.mean([v for v in parts.values() if v is not None]))
    return {"fidelity": round(fidelity, 4), **{k: None if v is None else round(v, 4) for k, v in parts.items()}}


def _mean(rows: list[dict], part: str):
    vals = [r[part] for r in rows if r[part] is not None]
    return round(float(np.mean(vals)), 3) if vals else None


def probe(model, recipe, pairs: int = 2, seeds: int = 4, log=print) -> dict:
    """Train ``recipe``'s subject LoRA on each subject of the first ``pairs`` pairs; score before / after."""
    from videomage_core.shapesworld import customization as C
    from videomage_core.shapesworld.generator import SUPERCLASS

    before, after, seconds, losses = [], [], [], []
    for i, pair in enumerate(C.subject_pairs(1000, pairs)):  # make quality's subjects
        for k, subj in enumerate(pair):
            token = f"<p{i}s{k}>"
            t0 = time.perf_counter()
            art = C.train_subject_artifact(model, subj, token, recipe, 10 * i + k)
            seconds.append(time.perf_counter() - t0)
            losses.append(float(np.mean(art.losses[-50:])))
            for s in range(seeds):
                seed = 3000 + 100 * i + 10 * k + s  # make quality's seeds
                video = C.generate_with(model, None, f"a {SUPERCLASS} standing still", recipe, seed)
                before.append(score_parts(video, subj))
                after.append(score_parts(C.generate_with(model, art, f"a {token} standing still", recipe, seed), subj))
            log(f"  {token} ({subj.shape}, hue {subj.hue:.0f}, {subj.texture}): after "
                f"{np.mean([a['fidelity'] for a in after[-seeds:]]):.2f} ({seconds[-1]:.0f} s)")
    settings = {f: getattr(recipe, f) for f in SUBJECT_FIELDS}
    return {"recipe": settings, "size": recipe.size, "subjects": 2 * pairs, "seeds": seeds,
            "seconds_per_subject": round(float(np.mean(seconds)), 1), "final_loss": round(float(np.mean(losses)), 5),
            "scores": {"before": before, "after": after},
            "mean": {"before": {p: _mean(before, p) for p in PARTS}, "after": {p: _mean(after, p) for p in PARTS}},
            "model": str(model.path), "model_fingerprint": model.fingerprint}


def _key(row: dict) -> str:
    return json.dumps([row["model_fingerprint"], row["recipe"], row["subjects"], row["seeds"]], sort_keys=True)


def _cell(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _companions(recipe: dict) -> str:
    """" (4)": how many of the images show a named companion (Recipe.subject_companion); "" for none."""
    with_companion = round(float(recipe.get("subject_companion", False)) * recipe["images"])
    return f" ({with_companion})" if with_companion else ""


def markdown(rows: list[dict]) -> str:
    lines = ["# The subject LoRA on its own (the recipe's subject stage)", "",
             "Written by `python -m bench.subject_recipe` (see its docstring). Each row trains every subject as "
             "`make quality` does, then samples \"a <token> standing still\": subject fidelity and its parts "
             "(hue, shape, texture agreement of the best-matching object), means over subjects x seeds; "
             "\"before\" is the base model's \"a shape standing still\" with the same seeds; images (n): n of "
             "them show the subject beside a named object (`Recipe.subject_companion`).", "",
             "| model | size | steps | rank | lr LoRA | lr token | lambda1 | images (with a companion) | L_sub on "
             "| subjects x seeds | s / subject | before | after | hue | shape | texture |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rc, m = r["recipe"], r["mean"]["after"]
        lines.append(f"| {Path(r['model']).name} `{r['model_fingerprint'][:8]}` | {r['size']} | {rc['subject_steps']} | "
                     f"{rc['rank']} | {rc['lr_lora']:g} | {rc['lr_token']:g} | {rc['lambda1']:g} | {rc['images']}"
                     f"{_companions(rc)} | "
                     f"{'subject mask' if rc['subject_masks'] else 'whole image'} | "
                     f"{r['subjects']} x {r['seeds']} | {r['seconds_per_subject']:.0f} | "
                     f"{_cell(r['mean']['before']['fidelity'])} | **{_cell(m['fidelity'])}** | {_cell(m['hue'])} | "
                     f"{_cell(m['shape'])} | {_cell(m['texture'])} |")
    return "\n".join(lines) + "\n"


def record(rows_path: Path, row: dict) -> list[dict]:
    """Merge ``row`` into the JSON list at ``rows_path`` (same model, settings and sample count: replaced)."""
    from bench.markdown import merge_rows

    return merge_rows(rows_path, row, _key, markdown)


def main(argv=None) -> int:
    from bench.recipe_probe import add_pairs_option, probe_inputs, probe_parser

    p = probe_parser("subject_recipe", __doc__, 4, "bench/subject_recipe.json")
    add_pairs_option(p, "subject pairs (make quality's first ones); 2 subjects each")
    a = p.parse_args(argv)
    model, recipe = probe_inputs(p, a)
    row = probe(model, recipe, a.pairs, a.seeds)
    record(Path(a.results), row)
    b, m = row["mean"]["before"], row["mean"]["after"]
    print(f"subject fidelity {b['fidelity']:.2f} -> {m['fidelity']:.2f} (hue {_cell(m['hue'])}, shape "
          f"{_cell(m['shape'])}, texture {_cell(m['texture'])}; {row['seconds_per_subject']:.0f} s per subject)",
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
