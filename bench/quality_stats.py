"""The statistics of ``make quality`` (``bench/quality.py``): what is measured in each cell (methods,
controls, options) and how claims are tested (paired differences, Student-t over cells)."""

from __future__ import annotations

import math

import numpy as np

from videomage_core.shapesworld import customization as C

METHODS = ("videomage", "wo_lmot", "wo_lattn", "wo_scs")
BASELINE = "motiondirector"
#: method -> (subject artifact key, motion artifact key, sampler mode)
RECIPES = {
    "videomage": ("fused_p{i}", "motion_{m}", "scs"),
    "wo_lmot": ("fused_p{i}", "motion_{m}_plain", "scs"),
    "wo_lattn": ("fused_p{i}_noattn", "motion_{m}", "scs"),
    "wo_scs": ("fused_p{i}", "motion_{m}", "wo_scs"),
    # MotionDirector as its paper describes: its own dual-path motion (temporal LoRA trained with the
    # spatial LoRA absorbing the reference's appearance, + its appearance-debiased loss); it has no
    # multi-subject fusion, so the subjects' LoRAs are averaged; plain sampling with the noise prior
    BASELINE: ("averaged_p{i}", "motion_{m}_md", "wo_scs"),
}
#: every video of a cell: (record name, recipe, SCS guided, noise prior, option). The controls: "tau0" is
#: SCS's two branches never guided (tau = 0), and "beta0:<method>" each method from fresh noise. The
#: options beyond the paper, on VideoMage: "customcrafter" lowers the subject LoRA's scale in the first
#: steps; "two_motions" adds the next held-out motion's LoRA (scored against both references);
#: "subject_companion" fuses subject LoRAs learned from images that also show a second, named object,
#: each captioned so ("a <s> and a red circle"; Recipe.subject_companion); "scs_regions" weights SCS's DDIM
#: step by the subject tokens' attention maps (Recipe.region_weights; SCSSettings.region_weights);
#: "motion_check" samples VideoMage's fused subjects with a motion LoRA checked against its own reference and
#: retrained when it fails (shapesworld.motion_check, as ``make demo`` trains it); "demo_recipe" both of
#: ``make demo``'s additions together: the subject_companion subjects and the checked motion.
OPTIONS = ("customcrafter", "two_motions", "subject_companion", "scs_regions", "motion_check", "demo_recipe")
#: an option's recipe (an entry of RECIPES or of OPTION_RECIPES)
RECIPE_OF_OPTION = {"customcrafter": "videomage", "two_motions": "videomage", "subject_companion": "companion",
                    "scs_regions": "videomage", "motion_check": "checked", "demo_recipe": "demo"}
OPTION_RECIPES = {"companion": ("fused_p{i}_companion", "motion_{m}", "scs"),
                  "checked": ("fused_p{i}", "motion_{m}_checked", "scs"),
                  "demo": ("fused_p{i}_companion", "motion_{m}_checked", "scs")}
CELL_RECIPES = {**RECIPES, **OPTION_RECIPES}  # every recipe a cell's videos use
VARIANTS = tuple([(name, name, True, True, None) for name in RECIPES] + [("tau0", "videomage", False, True, None)]
                 + [(f"beta0:{name}", name, True, False, None) for name in RECIPES]
                 + [(option, RECIPE_OF_OPTION[option], True, True, option) for option in OPTIONS])
TABLE_MEASURES = ("subject_fidelity", "motion_fidelity", "leakage", "binding", "temporal_consistency")


def stat(values) -> dict:
    """Mean and 95 % half-width (normal approximation) of the values that are not None."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "ci95": None, "n": 0}
    half = float(1.96 * v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else None
    return {"mean": round(float(v.mean()), 4), "ci95": None if half is None else round(half, 4), "n": int(v.size)}


#: 97.5 % quantiles of Student's t for 1..30 degrees of freedom (two-sided 95 % intervals).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


def t975(df: int) -> float:
    return T975[df - 1] if df <= len(T975) else 1.96 + 2.4 / df  # within 0.002 of t beyond 30


def claim(a: dict, b: dict) -> dict:
    """Paired difference a - b over the (pair, motion, seed) keys where both are defined.

    ``mean`` / ``ci95`` / ``n`` treat every video as independent. They are not: the seeds of one
    (pair, motion) cell share that cell's trained LoRAs, so the claim is tested on the cells instead:
    ``cell_mean`` / ``cell_ci95`` are the mean and Student-t half-width of the per-cell mean
    differences (``cells`` of them), and ``supported`` means that interval excludes 0 on the
    claimed side."""
    keys = [k for k in sorted(a) if a[k] is not None and b.get(k) is not None]
    out = stat([a[k] - b[k] for k in keys])
    cells: dict[tuple, list[float]] = {}
    for k in keys:
        cells.setdefault(k[:2], []).append(a[k] - b[k])
    means = np.asarray([np.mean(v) for v in cells.values()], dtype=np.float64)
    k = int(means.size)
    half = float(t975(k - 1) * means.std(ddof=1) / math.sqrt(k)) if k > 1 else None
    out.update(cell_mean=round(float(means.mean()), 4) if k else None,
               cell_ci95=None if half is None else round(half, 4), cells=k)
    out["supported"] = bool(half is not None and out["cell_mean"] - out["cell_ci95"] > 0)
    return out


def summarize(records: list[dict]) -> tuple[dict, dict, dict, dict]:
    """(methods, controls, options, claims) from the per-video records."""
    def stats(name):
        rows = [r for r in records if r["method"] == name]
        out = {k: stat([r.get(k) for r in rows]) for k in C.MEASURES}  # .get: a record may lack the parts
        out["failed"] = int(sum(r["failed"] for r in rows))
        return out

    methods = {name: stats(name) for name in METHODS}
    controls = {"tau0": stats("tau0"), "beta0": {name: stats(f"beta0:{name}") for name in RECIPES},
                BASELINE: stats(BASELINE)}

    def by_cell(name, value):  # (pair, motion, seed) -> value, for one method
        return {(r["pair"], r["motion"], r["seed"]): value(r) for r in records if r["method"] == name}

    def col(measure):
        return lambda r: r[measure]

    def overall(r):  # one number per video: the mean of the four "higher is better" views; a failed
        # video (fewer than two objects) is a failure here as in the method means: 0
        return 0.0 if r["failed"] else \
            float(np.mean([r["subject_fidelity"], r["motion_fidelity"], r["binding"], 1 - r["leakage"]]))

    claims = {
        "leakage lower with L_mot (wo_lmot - videomage > 0)": claim(by_cell("wo_lmot", col("leakage")),
                                                                    by_cell("videomage", col("leakage"))),
        "binding better with L_attn (videomage - wo_lattn > 0)": claim(by_cell("videomage", col("binding")),
                                                                        by_cell("wo_lattn", col("binding"))),
        "motion fidelity better with SCS (videomage - wo_scs > 0)": claim(
            by_cell("videomage", col("motion_fidelity")), by_cell("wo_scs", col("motion_fidelity"))),
        "arrangement (interaction) better with SCS (videomage - wo_scs > 0)": claim(
            by_cell("videomage", col("interaction")), by_cell("wo_scs", col("interaction"))),
        "motion fidelity better with guidance than with tau = 0 (videomage - tau0 > 0)": claim(
            by_cell("videomage", col("motion_fidelity")), by_cell("tau0", col("motion_fidelity"))),
        "leakage lower with L_mot, noise prior off (beta0: wo_lmot - videomage > 0)": claim(
            by_cell("beta0:wo_lmot", col("leakage")), by_cell("beta0:videomage", col("leakage"))),
        "motion fidelity better with SCS, noise prior off (beta0: videomage - wo_scs > 0)": claim(
            by_cell("beta0:videomage", col("motion_fidelity")), by_cell("beta0:wo_scs", col("motion_fidelity"))),
        "VideoMage ahead of MotionDirector on subject fidelity (videomage - motiondirector > 0)": claim(
            by_cell("videomage", col("subject_fidelity")), by_cell(BASELINE, col("subject_fidelity"))),
        "VideoMage ahead of MotionDirector on motion fidelity (videomage - motiondirector > 0)": claim(
            by_cell("videomage", col("motion_fidelity")), by_cell(BASELINE, col("motion_fidelity"))),
        "VideoMage ahead of MotionDirector overall (videomage - motiondirector > 0)": claim(
            by_cell("videomage", overall), by_cell(BASELINE, overall)),
    }
    options = {}
    for option in OPTIONS:
        options[option] = {**stats(option),
                           "motion_fidelity_next": stat([r.get("motion_fidelity_next") for r in records
                                                         if r["method"] == option]),
                           "vs_videomage": {k: claim(by_cell(option, col(k)), by_cell("videomage", col(k)))
                                            for k in ("subject_fidelity", "motion_fidelity", "motion_fidelity_next")}}
    options["videomage_motion_fidelity_next"] = stat([r.get("motion_fidelity_next") for r in records
                                                       if r["method"] == "videomage"])
    return methods, controls, options, claims
