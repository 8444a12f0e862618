"""bench.direction_probe: the word-swap sensitivity behind the model card's direction analysis, the
distinct-embedding arm, and a two-step fine-tune that leaves the built-in model untouched."""

from __future__ import annotations

import functools
import hashlib
import json

import pytest
import torch

from bench import direction_probe as P
from videomage_core.model import load_model
from videomage_core.pretrained import shapesworld_model_dir


@pytest.fixture(scope="module")
def builtin():
    return load_model(shapesworld_model_dir())


def test_direction_words_barely_reach_the_unet_of_the_shipped_model(builtin):
    s = P.sensitivity(builtin, seeds=(0,), timesteps=(900, 300))
    assert set(s) == {"direction", "colour", "shape"}
    for kind in s.values():
        assert kind["text_distance"] > 0 and kind["prediction_change"] > 0
    # the model card's finding: a direction swap moves text and noise prediction far less than a colour swap
    assert s["direction"]["text_distance"] < s["colour"]["text_distance"] / 5
    assert s["direction"]["prediction_change"] < s["colour"]["prediction_change"] / 5


def test_distinct_direction_embeddings_are_orthonormal_and_touch_only_those_rows(builtin):
    te = builtin.text_encoder
    before = te.get_input_embeddings().weight.detach().clone()
    try:
        P.distinct_direction_embeddings(te, builtin.tokenizer)
        w = te.get_input_embeddings().weight.detach()
        ids = [builtin.tokenizer.convert_tokens_to_ids(d + "</w>") for d in P.DIRECTIONS]
        rows = w[ids]
        torch.testing.assert_close(rows @ rows.T, torch.eye(len(ids)), atol=1e-5, rtol=0)
        others = [i for i in range(len(w)) if i not in ids]
        assert torch.equal(w[others], before[others])
    finally:
        with torch.no_grad():
            te.get_input_embeddings().weight.copy_(before)


def _digest(folder) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.read_bytes())
    return h.hexdigest()


def test_a_two_step_finetune_writes_its_report_and_keeps_the_builtin_model(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "sensitivity", functools.partial(P.sensitivity, seeds=(0,), timesteps=(600,)))
    src = shapesworld_model_dir()
    digest = _digest(src)
    with pytest.raises(SystemExit, match="outside the built-in model"):
        P.finetune(src / "probe", "distinct", steps=1, samples=1)
    rep = P.finetune(tmp_path / "probe", "distinct", steps=2, samples=1, log=lambda m: None, sample_steps=2)
    saved = json.loads((tmp_path / "probe" / "direction_probe.json").read_text())
    assert saved == json.loads(json.dumps(rep))
    assert rep["steps"] == 2 and rep["directions"]["videos"] == 7  # seven held-out direction prompts
    assert set(rep["sensitivity_start"]) == set(rep["sensitivity_end"]) == set(P.SWAPS)
    assert rep["sensitivity_start"]["direction"]["text_distance"] > 4  # the distinct arm's norm-1 rows
    assert 0 <= rep["directions"]["named_direction"] <= rep["directions"]["moved"] <= 7
    assert (tmp_path / "probe" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert _digest(src) == digest
