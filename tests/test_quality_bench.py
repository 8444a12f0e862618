"""``make quality``'s statistics and report, and the whole benchmark at test scale on the built-in model."""

from __future__ import annotations

import json

import numpy as np

import pytest

from bench import quality as Q
from bench.markdown import write_section


def test_stat_and_paired_differences_tested_on_cells():
    s = Q.stat([1.0, 0.0, None, 1.0, 0.0])
    assert s["n"] == 4 and s["mean"] == 0.5 and s["ci95"] == pytest.approx(1.96 * 0.57735 / 2, abs=1e-3)
    assert Q.stat([None])["mean"] is None and Q.stat([0.3])["ci95"] is None
    # keys (pair, motion, seed); a None on either side drops that video
    a = {(0, "orbit", 0): 1.0, (0, "orbit", 1): 1.0, (0, "swap", 0): None, (1, "orbit", 0): 0.5,
         (1, "swap", 0): 0.9, (1, "swap", 1): 0.7}
    b = {(0, "orbit", 0): 0.0, (0, "orbit", 1): 0.5, (0, "swap", 0): 1.0, (1, "orbit", 0): 0.5,
         (1, "swap", 0): 0.4, (1, "swap", 1): 0.6}
    d = Q.claim(a, b)
    assert d["n"] == 5 and d["mean"] == pytest.approx((1 + 0.5 + 0 + 0.5 + 0.1) / 5)
    cells = [0.75, 0.0, 0.3]  # (0, orbit), (1, orbit), (1, swap)
    assert d["cells"] == 3 and d["cell_mean"] == pytest.approx(sum(cells) / 3, abs=1e-4)
    sd = (sum((c - sum(cells) / 3) ** 2 for c in cells) / 2) ** 0.5
    assert d["cell_ci95"] == pytest.approx(4.303 * sd / 3 ** 0.5, abs=1e-4)  # t with 2 degrees of freedom
    assert not d["supported"]  # 0.35 +- 0.94
    assert Q.t975(11) == 2.201 and abs(Q.t975(60) - 2.000) < 0.002


def test_seeds_of_one_cell_are_not_independent_evidence():
    """Many seeds of one (pair, motion) cell: the per-video interval excludes 0, the claim is unsupported."""
    a = {(0, "orbit", s): 0.5 + 0.01 * s for s in range(20)}
    b = {k: 0.0 for k in a}
    d = Q.claim(a, b)
    assert d["mean"] - d["ci95"] > 0 and d["cells"] == 1 and d["cell_ci95"] is None and not d["supported"]


def _records(videomage_leak, wo_leak):
    recs = []
    for k in range(6):  # six (pair, motion) cells of one seed each
        for name, *_ in Q.VARIANTS:
            leak = wo_leak if name in ("wo_lmot", "beta0:wo_lmot") else videomage_leak
            motion = ("orbit", "swap", "jump_over")[k % 3]
            recs.append({"method": name, "pair": k // 3, "motion": motion, "seed": 0, "subject_fidelity": 0.5,
                         "motion_fidelity": 0.5, "leakage": leak + 0.01 * k, "binding": 0.5,
                         "temporal_consistency": 1.0, "interaction": 0.0, "failed": 0,
                         "motion_fidelity_next": 0.1 if name == "two_motions" else 0.0})
    return recs


def test_claims_are_supported_only_beyond_the_interval():
    methods, controls, options, claims = Q.summarize(_records(0.1, 0.6))
    assert options["two_motions"]["motion_fidelity_next"]["mean"] == pytest.approx(0.1)
    assert options["two_motions"]["vs_videomage"]["motion_fidelity_next"]["supported"]  # 0.1 on all 6 cells
    assert not options["customcrafter"]["vs_videomage"]["motion_fidelity"]["supported"]
    assert set(controls) == {"tau0", "beta0", "motiondirector"} and set(controls["beta0"]) == set(Q.RECIPES)
    assert controls["beta0"]["wo_lmot"]["leakage"]["mean"] == pytest.approx(0.625)
    assert claims["leakage lower with L_mot, noise prior off (beta0: wo_lmot - videomage > 0)"]["supported"]
    assert methods["wo_lmot"]["leakage"]["mean"] == pytest.approx(0.625)
    leak = claims["leakage lower with L_mot (wo_lmot - videomage > 0)"]
    assert leak["mean"] == pytest.approx(0.5) and leak["supported"]
    assert not claims["binding better with L_attn (videomage - wo_lattn > 0)"]["supported"]  # equal
    *_, claims = Q.summarize(_records(0.6, 0.1))
    assert not claims["leakage lower with L_mot (wo_lmot - videomage > 0)"]["supported"]


def test_results_md_sections_are_kept(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmarks\n\nold speed table\n")  # a file from before the sections
    write_section(path, "quality", "## Quality\nq1")
    text = path.read_text()
    assert "old speed table" in text and "q1" in text and text.index("old speed") < text.index("q1")
    write_section(path, "speed", "# Benchmarks\nnew speed")
    write_section(path, "quality", "## Quality\nq2")
    text = path.read_text()
    assert "new speed" in text and "q2" in text and "old speed" not in text and "q1" not in text


def test_quality_runs_end_to_end_at_test_scale(tmp_path, monkeypatch):
    from videomage_core.pretrained import shapesworld_model_dir

    motions = ("orbit", "swap")  # two of the three held-out motions (the second is two_motions' next one)
    res = Q.run(shapesworld_model_dir(), tmp_path / "q", pairs=1, seeds=1, scale="test", results=tmp_path / "r",
                log=lambda s: None, min_samples=2, motions=motions)
    saved = json.loads((tmp_path / "r" / "quality.json").read_text())
    assert set(saved["base"]) >= {"colour", "shape", "motion"}
    assert set(saved["customization"]) == {"subject_before", "subject_after", "subject_parts", *Q.MOTION_ROWS,
                                           "vae_ceiling"}
    parts = saved["customization"]["subject_parts"]
    assert set(parts) == set(Q.SUBJECT_PART_STAGES) and {p[k]["n"] for p in parts.values() for k in p} == {2}
    # the subject LoRA's fidelity is the mean of its parts, video by video (plain subjects: hue and shape)
    scores = saved["customization_scores"]
    assert np.allclose(scores["subject_after"], (np.array(scores["subject_lora_hue"])
                                                 + np.array(scores["subject_lora_shape"])) / 2)
    for r in saved["records"]:  # and so is each two-subject video's
        assert r["subject_fidelity"] == pytest.approx((r["subject_hue"] + r["subject_shape"]) / 2, abs=1e-12)
    ceiling = saved["customization"]["vae_ceiling"]
    assert ceiling["subject_fidelity"]["n"] == 2 * 2 and ceiling["motion_fidelity"]["n"] == 2  # 2 images x 2
    assert ceiling["motion_fidelity"]["mean"] > 0.9  # the references survive the round trip
    assert {saved["customization"][k]["n"] for k in Q.MOTION_ROWS} == {2}  # min_samples 2 over 2 motions
    assert set(saved["methods"]) == set(Q.METHODS)
    controls = saved["controls"]
    assert set(controls) == {"tau0", "beta0", "motiondirector"} and set(controls["beta0"]) == set(Q.RECIPES)
    for m in [*(saved["methods"][k] for k in Q.METHODS), controls["tau0"], controls["motiondirector"],
              *controls["beta0"].values()]:
        for k in ("subject_fidelity", "motion_fidelity", "leakage", "binding", "temporal_consistency"):
            assert set(m[k]) >= {"mean", "ci95"}
        assert m["motion_fidelity"]["n"] == 2
    assert len(saved["records"]) == len(Q.VARIANTS) * 2 and res["settings"]["cells"] == 2
    assert saved["settings"]["motions"] == list(motions)
    assert set(saved["options"]) == {*Q.OPTIONS, "videomage_motion_fidelity_next"}
    assert saved["options"]["two_motions"]["motion_fidelity_next"]["n"] == 2
    assert "Options beyond the paper" in Q.markdown(res) and "Subject fidelity by part" in Q.markdown(res)
    md = (tmp_path / "r" / "RESULTS.md").read_text()
    assert "<!-- quality:start -->" in md and "MotionDirector (baseline)" in md and "tau = 0" in md
    arts = sorted(p.name for p in (tmp_path / "q" / "artifacts").iterdir())
    # subjects, motions (L_mot, plain, MotionDirector), fusions (L_attn, none), the subject_companion
    # option's subjects and fusion, and the motion_check option's retrainings (its first training is motion_<m>)
    checks = saved["settings"]["motion_checks"]
    assert set(checks) == set(motions)
    retrained = 0
    for attempts in checks.values():
        assert 1 <= len(attempts) <= Q.MOTION_CHECKS["test"]["attempts"] and sum(a["kept"] for a in attempts) == 1
        assert [a["training_seed"] for a in attempts] == list(range(attempts[0]["training_seed"],
                                                                     attempts[0]["training_seed"] + len(attempts)))
        assert all(a["passed"] for a in attempts[-1:]) or len(attempts) == Q.MOTION_CHECKS["test"]["attempts"]
        retrained += len(attempts) - 1
    assert sum("_seed" in a for a in arts) == retrained
    assert len(arts) == 2 + 2 * 3 + 2 + 3 + retrained
    assert sum("_companion-" in a for a in arts) == 3
    from videomage_core.artifacts import load_artifact
    trained = load_artifact(next((tmp_path / "q" / "artifacts").glob("subject_p0s0_companion-*")))
    assert [c.split(" and a ")[0] for c in trained.train_args["image_captions"]] == ["a <p0s0>"] * 2
    companion = [r for r in saved["records"] if r["method"] == "subject_companion"]
    assert len(companion) == 2 and "images with a second, named object" in md
    assert {r["method"] for r in saved["records"]} >= {"motion_check", "demo_recipe"} and "`make demo`'s recipe" in md
    assert sum(a.startswith("motion_") and "_md-" in a for a in arts) == 2
    # a run with one more seed reuses every artifact and measured cell: it makes only the new seed's
    # videos (2 motions x every method and control)
    made = []
    generate = Q.C.generate

    def counting(*args, **kwargs):
        made.append(args[5])  # the seed
        return generate(*args, **kwargs)

    monkeypatch.setattr(Q.C, "generate", counting)
    again = Q.run(shapesworld_model_dir(), tmp_path / "q", pairs=1, seeds=2, scale="test", results=None,
                  log=lambda s: None, min_samples=2, motions=motions)
    new_seed = {r["seed"] for r in again["records"]} - {r["seed"] for r in res["records"]}
    assert len(made) == 2 * len(Q.VARIANTS) and set(made) == new_seed and len(new_seed) == 2
    old = [r for r in again["records"] if r["seed"] not in new_seed]
    assert old == res["records"]  # reused as measured
    assert again["reused"] == {"customization": True, "cells": 2} and res["reused"]["cells"] == 0
    assert "2 of 4 (pair, motion, seed) cells" in Q.markdown(again)
    assert len(list((tmp_path / "q" / "cells").glob("p0-*.json"))) == 4
    assert sorted(p.name for p in (tmp_path / "q" / "artifacts").iterdir()) == arts
    # an edit of the measuring code changes every cell's key: they are measured again (the artifacts,
    # keyed without it, are kept)
    from videomage_core.model import load_model

    model = load_model(shapesworld_model_dir())
    recipe = Q.C.Recipe.for_model(model, **Q.SCALES["test"])
    q = Q.Quality(model, recipe, tmp_path / "q", 1, 1, log=lambda s: None, motions=motions,
                  motion_checks=Q.MOTION_CHECKS["test"])
    before = (q.digest(), q.sampling_digest())
    cells = list((tmp_path / "q" / "cells").glob("*.json"))
    assert len(cells) == 5 and all(p.stem.endswith(before[1]) for p in cells)  # 4 cells + customization
    edited = tmp_path / "measures_edited.py"
    edited.write_bytes(Q.MEASURING_CODE[0].read_bytes() + b"\n# a changed detector\n")
    monkeypatch.setattr(Q, "MEASURING_CODE", (edited, *Q.MEASURING_CODE[1:]))
    assert q.digest() == before[0] and q.sampling_digest() != before[1]
    # and so does an edit of the engine's sampler (SCS), which the cells' videos come from
    monkeypatch.undo()
    sampler = tmp_path / "sampling_edited.py"
    sampler.write_bytes((Q.ENGINE / "sampling.py").read_bytes() + b"\n# a changed sampler\n")
    monkeypatch.setattr(Q, "MEASURING_CODE", tuple(sampler if p.name == "sampling.py" else p
                                                   for p in Q.MEASURING_CODE))
    assert q.sampling_digest() != before[1] and q.digest() == before[0]


def test_quality_refuses_unknown_motions():
    with pytest.raises(SystemExit):
        Q.main(["--motions", "moonwalk", "--scale", "test"])


@pytest.mark.parametrize("text, expected", [
    ("", {}),
    ("motion_coverage=all_linear, motion_rank=64,motion_steps=1000",
     {"motion_coverage": "all_linear", "motion_rank": 64, "motion_steps": 1000}),
    ("motion_rank=none,alpha=0.5,cfg=4", {"motion_rank": None, "alpha": 0.5, "cfg": 4.0}),
    ("subject_masks=false", {"subject_masks": False}), ("subject_masks=True", {"subject_masks": True}),
    # a bool or a share: true / false stay booleans, a number is the share
    ("subject_companion=true", {"subject_companion": True}), ("subject_companion=0.5", {"subject_companion": 0.5}),
])
def test_recipe_overrides_take_each_fields_type(text, expected):
    got = Q.recipe_overrides(text)
    assert got == expected and all(type(got[k]) is type(v) for k, v in expected.items())


@pytest.mark.parametrize("text, message", [
    ("motion_rank", "field=value"), ("rank_of_motion=4", "field=value"),
    ("motion_rank=big", "motion_rank: expected a value of type int"),
    ("subject_masks=no", "subject_masks: expected true or false"),
])
def test_recipe_overrides_refuse_what_is_not_a_recipe_field(text, message):
    with pytest.raises(ValueError, match=message):
        Q.recipe_overrides(text)
    with pytest.raises(SystemExit):
        Q.main(["--recipe", text, "--scale", "test"])


def test_stage_digests_retrain_only_the_stage_a_recipe_change_reaches(tmp_path):
    """A subject-recipe change retrains the subjects and their fusion, never the motions (nine 1 000-step
    LoRAs); a motion-recipe change the motions only, and MotionDirector's only where it reads the field
    (its steps, not VideoMage's omega or renderings); a field all read (the LoRA learning rate) everything."""
    from dataclasses import replace

    from videomage_core.model import load_model
    from videomage_core.pretrained import shapesworld_model_dir

    model = load_model(shapesworld_model_dir())
    recipe = Q.C.Recipe.for_model(model, **Q.SCALES["test"])

    def digests(**change):
        q = Q.Quality(model, replace(recipe, **change), tmp_path / "q", 1, 1, log=lambda s: None,
                      motions=("swap",))
        return {stage: q.digest(stage) for stage in Q.NOT_READ_BY}

    base = digests()
    changed = {field: {s for s, d in digests(**{field: value}).items() if d != base[s]}
               for field, value in [("lambda1", 0.0), ("subject_masks", True), ("motion_steps", 7),
                                    ("omega", 0.0), ("motion_renderings_look", "moving"), ("lambda2", 0.1),
                                    ("lr_lora", 1e-4), ("tau", 0), ("fusion_pair_denoising", 0.0)]}
    assert changed == {"lambda1": {"subject", "fusion"}, "subject_masks": {"subject", "fusion"},
                       "motion_steps": {"motion", "motiondirector"}, "omega": {"motion"},
                       "motion_renderings_look": {"motion"}, "lambda2": {"fusion"},
                       "lr_lora": {"subject", "motion", "motiondirector", "fusion"}, "tau": set(),
                       "fusion_pair_denoising": {"fusion"}}
