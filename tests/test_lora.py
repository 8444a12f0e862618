import re

import pytest
import torch

from videomage_core.bases.zeroscope import LORA_TARGETS
from videomage_core.lora import (adapters_active, average_of_deltas, delete_lora, inject_lora, lora_delta,
                                 lora_layers, lora_state_dict, set_active_adapters)
from videomage_core.diffusion import encode_prompts, predict_noise

from helpers import randomize_lora_b


@pytest.mark.parametrize("scope, must, never", [
    ("spatial", r"\.attentions\.\d+\.transformer_blocks\.0\.attn[12]\.", r"temp_attentions|transformer_in"),
    ("temporal", r"(temp_attentions\.\d+|transformer_in)\.transformer_blocks\.0\.attn[12]\.",
     r"(?<!temp_)attentions\.\d+\.transformer_blocks"),
])
def test_lora_reaches_only_its_scope(model, scope, must, never):
    inject_lora(model, "a", scope)
    names = [n for n, layer in lora_layers(model.unet) if "a" in layer.lora_A]
    assert names, "no layer got the adapter"
    for n in names:
        assert re.search(must, n), n
        assert not re.search(never, n), n
        assert n.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v", "0")
    expected = [n for n, _ in model.unet.named_modules()
                if re.fullmatch(LORA_TARGETS[scope], n)]
    assert sorted(names) == sorted(expected)
    # every level is covered: 4 projections on each attention layer of that kind
    kind = r"\.attentions\." if scope == "spatial" else r"temp_attentions|transformer_in"
    n_attn = len([n for n, _ in model.unet.named_modules() if re.search(kind, n) and re.search(r"attn[12]$", n)])
    assert len(names) == 4 * n_attn


def _forward(model):
    torch.manual_seed(0)
    x = torch.randn(1, 4, 3, 8, 8)
    text = encode_prompts(model, ["a toy"])
    with torch.no_grad():
        return predict_noise(model, x, torch.tensor(500), text)


def test_adapter_changes_output_only_when_active(model):
    base = _forward(model)
    inject_lora(model, "s", "spatial")
    assert torch.equal(_forward(model), base), "a fresh adapter (B = 0) must be a no-op"
    randomize_lora_b(model, "s")
    active = _forward(model)
    assert (active - base).abs().max() > 1e-3
    with adapters_active(model, []):
        assert torch.equal(_forward(model), base), "adapters off must reproduce the base exactly"
    inject_lora(model, "t", "temporal")
    randomize_lora_b(model, "t", seed=1)
    set_active_adapters(model, ["s"])
    assert torch.equal(_forward(model), active)
    set_active_adapters(model, ["t"])
    only_t = _forward(model)
    assert (only_t - base).abs().max() > 1e-3 and (only_t - active).abs().max() > 1e-3
    delete_lora(model, "s")
    delete_lora(model, "t")
    assert torch.equal(_forward(model), base)
    assert not lora_layers(model.unet)[0][1].lora_A


def test_injection_freezes_everything(model):
    inject_lora(model, "s", "spatial")
    assert not any(p.requires_grad for p in model.unet.parameters())


@pytest.mark.parametrize("n, ranks", [(2, (4, 4)), (3, (4, 2, 8))])
def test_merge_is_the_mean_of_the_deltas(n, ranks):
    gen = torch.Generator().manual_seed(0)
    states, scalings = [], []
    for r in ranks:
        states.append({"m.lora_A.weight": torch.randn(r, 16, generator=gen),
                       "m.lora_B.weight": torch.randn(24, r, generator=gen)})
        scalings.append(float(torch.rand(1, generator=gen)) + 0.5)
    fused, rank = average_of_deltas(states, scalings)
    assert rank == sum(ranks)
    mean = sum(lora_delta(s, "m", c) for s, c in zip(states, scalings)) / n
    assert torch.allclose(lora_delta(fused, "m", 1.0), mean, atol=1e-6)
    # averaging A and B separately is not the mean of the deltas (why the exact form exists)
    if len(set(ranks)) == 1:
        naive = {"m.lora_A.weight": sum(s["m.lora_A.weight"] for s in states) / n,
                 "m.lora_B.weight": sum(s["m.lora_B.weight"] * c for s, c in zip(states, scalings)) / n}
        assert (lora_delta(naive, "m", 1.0) - mean).norm() > 0.1 * mean.norm()
    # SVD reduction: the best rank-r approximation of the mean delta
    reduced, r = average_of_deltas(states, scalings, rank=4)
    assert r == 4
    svals = torch.linalg.svdvals(mean)
    err = (lora_delta(reduced, "m", 1.0) - mean).norm()
    assert torch.isclose(err, svals[4:].norm(), rtol=1e-4)


def test_lora_state_dict_keys_are_peft_names(model):
    inject_lora(model, "s", "spatial")
    keys = list(lora_state_dict(model, "s"))
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight" in keys
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)


def test_all_linear_coverage_adds_every_linear_of_the_temporal_transformers(model):
    """MotionDirector's coverage: the attention projections plus proj_in / proj_out and the feed-forward."""
    linear = {n for n, m in model.unet.named_modules() if isinstance(m, torch.nn.Linear)
              and re.match(r"(transformer_in|.*\.temp_attentions\.\d+)\.", n)}
    inject_lora(model, "att", "temporal")
    inject_lora(model, "all", "temporal", coverage="all_linear")
    att = {n for n, layer in lora_layers(model.unet) if "att" in layer.lora_A}
    wide = {n for n, layer in lora_layers(model.unet) if "all" in layer.lora_A}
    assert att < wide
    assert wide == linear, "every Linear of the temporal transformers, and nothing else"
    assert {n.rsplit(".", 1)[-1] for n in wide - att} >= {"proj_in", "proj_out", "proj", "2"}
    assert model.adapters["all"]["coverage"] == "all_linear"


@pytest.mark.parametrize("base, scope, coverage", [
    ("zeroscope", "temporal", "feed_forward"),  # no such coverage
    ("zeroscope", "spatial", "all_linear"),  # defined for motions only
    ("animatediff", "temporal", "all_linear"),  # its motion LoRA files hold attention projections only
    ("wan", "temporal", "all_linear"),
])
def test_a_coverage_the_base_does_not_define_is_refused_naming_the_input(base, scope, coverage):
    from videomage_core.bases import family
    from videomage_core.errors import VideoMageInputError
    from videomage_core.lora import coverages, family_targets

    with pytest.raises(VideoMageInputError, match=r"coverage: expected one of \['attention'"):
        family_targets(family(base), scope, coverage)
    assert coverages(family(base), scope)[0] == "attention"
    assert family_targets(family(base), scope) == family(base).LORA_TARGETS[scope]
