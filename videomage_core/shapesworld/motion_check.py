"""A motion LoRA checked against its own reference, and retrained with the next seed when it fails (beyond
the paper; ``make demo``).

The motion stage (the LoRA and its noise prior on "a shape orbits another shape", no subject) is sampled on
seeds that the demo's shown videos never use, and scored against the reference clip, the LoRA's own
training data. When the median score is below ``PASSING`` (the measure's midpoint), the LoRA is retrained
with the next seed. The first LoRA that passes is kept; when none passes, the one with the best median is
kept. Every attempt's scores go into the artifact's ``info["motion_checks"]`` and the demo's report.

Why (docs/shapesworld.md, session 21): on the demo's draw the recipe's motion LoRA trained with seed 0 drops
the orbit's still centre in every sample (motion stage 0.00, 0.00, 0.00). Trained with seeds 1 and 2 on the
very same reference, it passes (0.00, 0.96, 0.73 and 0.98, 1.00, 0.96). The failure is the training run's,
not the draw's.
"""
from __future__ import annotations

import numpy as np

from ..errors import VideoMageInputError
from . import customization as C

#: the check's sampling seeds are ``CHECK_SEED + seed + i``: apart from the seeds the demo shows
CHECK_SEED = 1000
#: a check passes when the median motion fidelity of its samples reaches this (the measure's midpoint)
PASSING = 0.5


def check_motion(model, motion, reference, recipe: C.Recipe, seeds) -> list[float]:
    """The motion stage's motion fidelity on each of ``seeds``: the LoRA and its noise prior, no subject."""
    prompt = C.motion_stage_prompt(reference.spec.motion)
    return [C.measure_motion(C.generate_with(model, motion, prompt, recipe, int(s), prior_from=motion), reference)
            for s in seeds]


def train_checked_motion(model, reference, recipe: C.Recipe, seed: int, attempts: int = 3, checks: int = 3,
                         callback=None, trained=None):
    """Train the recipe's motion LoRA with ``seed``, ``seed + 1``, ... until one passes its check (at most
    ``attempts`` trainings of ``checks`` samples each). Returns the kept artifact, whose
    ``info["motion_checks"]`` lists every attempt: its training seed, scores, median and whether it was kept.
    ``trained(training_seed, train)``, when given, returns each attempt's artifact, calling ``train()`` only
    when it has none stored (``bench/demo_draws.py`` caches them; the checks always run)."""
    for name, value in (("attempts", attempts), ("checks", checks)):
        if int(value) < 1:
            raise VideoMageInputError(name, f"expected at least 1, got {value}")
    seeds = range(CHECK_SEED + seed, CHECK_SEED + seed + int(checks))
    tried, best = [], None
    for k in range(int(attempts)):
        def train(k=k):
            return C.train_motion_artifact(model, reference, recipe, seed + k, callback=callback)

        artifact = train() if trained is None else trained(seed + k, train)
        scores = check_motion(model, artifact, reference, recipe, seeds)
        median = float(np.median(scores))
        tried.append({"training_seed": seed + k, "check_seeds": list(seeds),
                      "motion_fidelity": [round(s, 4) for s in scores], "median": round(median, 4),
                      "passed": median >= PASSING})
        if best is None or median > best[0]:
            best = (median, k, artifact)
        if median >= PASSING:
            break
    _, kept, artifact = best
    for k, attempt in enumerate(tried):
        attempt["kept"] = k == kept
    artifact.info["motion_checks"] = tried
    return artifact
