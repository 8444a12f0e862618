"""``bench/motion_capacity.py``: each variant trains exactly its part of the model, and rows merge by key."""
from __future__ import annotations

import pytest
import torch

from bench import motion_capacity as MC


@pytest.fixture(scope="module")
def model():
    from videomage_core.model import load_model
    from videomage_core.pretrained import shapesworld_model_dir

    return load_model(shapesworld_model_dir())


@pytest.mark.parametrize("variant,parts,excluded", [
    ("unet", ("conv_in", "temp_convs", "attentions"), ()),
    ("temporal_modules", ("temp_convs", "temp_attentions", "transformer_in"), ("conv_in", ".attentions.")),
    ("temporal_attention", ("temp_attentions", "transformer_in"), ("temp_convs", ".attentions.")),
])
def test_full_variants_train_their_layers_only(model, variant, parts, excluded):
    params, adapters = MC._trainable(model, variant, 4, 0)
    names = {id(p): n for n, p in model.unet.named_parameters()}
    chosen = [names[id(p)] for p in params]
    assert adapters == [] and all(any(part in n for n in chosen) for part in parts)
    assert not any(ex in n for n in chosen for ex in excluded)


def test_lora_variants_cover_projections_or_every_linear(model):
    from videomage_core.lora import delete_lora, lora_layers

    sizes = {}
    for variant in ("lora_projections", "lora_linear"):
        params, adapters = MC._trainable(model, variant, 4, 0)
        layers = [n for n, m in lora_layers(model.unet) if "capacity" in m.lora_A]
        sizes[variant] = sum(p.numel() for p in params)
        if variant == "lora_projections":
            assert all(n.split(".")[-1] in ("to_q", "to_k", "to_v", "0") for n in layers)
        else:
            assert any(n.endswith("proj_in") for n in layers) and any(n.endswith("ff.net.2") for n in layers)
        assert adapters == ["capacity"] and not any(".attentions." in n for n in layers)
        delete_lora(model, "capacity")
    assert sizes["lora_linear"] > sizes["lora_projections"]


def test_probe_runs_and_rows_merge(tmp_path):
    from videomage_core.pretrained import shapesworld_model_dir

    torch.manual_seed(0)
    row = MC.probe(shapesworld_model_dir(), "lora_projections", steps=2, rank=2, samples=1, size=32,
                   log=lambda s: None)
    assert set(row["motion_fidelity"]) == {"caption", "generic"} and len(row["motion_fidelity"]["caption"]) == 1
    assert 0.0 <= row["mean"]["caption"] <= 1.0 and row["trained_parameters"] > 0
    path = tmp_path / "capacity.json"
    MC.record(path, row)
    rows = MC.record(path, {**row, "final_loss": 0.5})  # same key: replaced
    assert len(rows) == 1 and rows[0]["final_loss"] == 0.5
    rows = MC.record(path, {**row, "steps": 3})
    assert len(rows) == 2 and "lora_projections" in path.with_suffix(".md").read_text()


def test_cli_refuses_unknown_variants():
    with pytest.raises(SystemExit):
        MC.main(["--variants", "everything"])
