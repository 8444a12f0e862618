"""bench/demo_draws.py at test scale on the built-in model: one draw, one seed, every sampler measured, the
summary written, and a second run reusing the trained artifacts (only the checks and sampling run again)."""
from __future__ import annotations

import json

import pytest

from bench import demo_draws


def test_demo_draws_measures_every_sampler_and_reuses_its_training(tmp_path):
    logs = []
    results = tmp_path / "demo_draws.json"
    result = demo_draws.run(draws=1, seeds=1, out=tmp_path / "out", scale="test", results=results, log=logs.append)
    assert [(r["sampler"], r["draw"], r["seed"]) for r in result["records"]] == [
        (name, 0, 0) for name in demo_draws.SAMPLERS]
    for rec in result["records"]:
        assert 0.0 <= rec["subject_fidelity"] <= 1.0 and 0.0 <= rec["motion_fidelity"] <= 1.0
        assert rec["subject_fidelity"] == pytest.approx((rec["subject_hue"] + rec["subject_shape"]) / 2, abs=1e-12)
    assert set(result["samplers"]) == set(demo_draws.SAMPLERS)
    # the demo's sampler (SCS weighted by region) against the paper's SCS and against w/o SCS; the paper's ablation
    assert set(result["paired"]) == {"scs_regions - scs", "scs_regions - wo_scs", "scs - wo_scs"}
    checks = result["per_draw"][0]["motion_checks"]
    assert sum(c["kept"] for c in checks) == 1 and checks[0]["training_seed"] == 0
    saved = json.loads(results.read_text())
    assert saved["records"] == result["records"]
    table = results.with_suffix(".md").read_text()
    assert "| scs |" in table and "| scs_regions subject / motion per seed |" in table
    trained = [line for line in logs if "training" in line]
    assert trained  # the fused subjects and at least one motion LoRA
    logs.clear()
    again = demo_draws.run(draws=1, seeds=1, out=tmp_path / "out", scale="test", results=None, log=logs.append)
    assert not [line for line in logs if "training" in line]
    assert again["records"] == result["records"]  # the same seed gives the same videos
