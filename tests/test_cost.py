"""The cost estimator (FLOPs, storage tally, fake twin), the pre-flight memory check and "auto"
gradient checkpointing. Everything runs on the tiny model; the GPU budget is monkeypatched."""
from __future__ import annotations

import pytest
import torch

from videomage_core import cost, preflight
from videomage_core.cost import StageSpec, StorageTally, count_flops, run_stage, twin_of
from videomage_core.errors import VideoMageInputError


def test_attention_layer_flops_equal_the_hand_count():
    """One cross-attention layer (diffusers' ``Attention``, SDPA processor): the q/k/v/out
    projections plus Q K^T and A V, 2 FLOPs per multiply-add, counted by hand."""
    from diffusers.models.attention_processor import Attention

    b, n, m, c, dc, heads, d = 2, 48, 77, 64, 32, 4, 16
    attn = Attention(query_dim=c, cross_attention_dim=dc, heads=heads, dim_head=d).eval()
    x, ctx = torch.randn(b, n, c), torch.randn(b, m, dc)
    hand = (2 * b * n * c * heads * d  # to_q
            + 2 * 2 * b * m * dc * heads * d  # to_k, to_v
            + 2 * b * heads * n * m * d  # Q K^T
            + 2 * b * heads * n * m * d  # softmax(.) V
            + 2 * b * n * heads * d * c)  # to_out (its bias add is not a multiply-add)
    with torch.no_grad():
        flops, out = count_flops(attn, x, encoder_hidden_states=ctx)
    assert out.shape == (b, n, c)
    assert flops == hand  # integer counts: exact


def test_storage_tally_counts_live_storages_by_hand():
    """Sizes round up to 512-byte blocks; a view shares its storage; a freed tensor leaves the total."""
    tally = StorageTally(rel_slack=0.0)
    with tally:
        a = torch.empty(1000)  # 4000 B -> 4096
        b = a + 1  # 4096
        assert tally.total == 8192
        del a
        c = torch.empty(3000)  # 12000 B -> 12288; a is gone: 4096 + 12288 alive
        view = c[:10] * 0 + c[:10]  # two temporaries (40 B -> 512 each), one freed at once
        assert tally.prune() == 4096 + 12288 + 512
        del view
    assert tally.peak == 4096 + 12288 + 512 + 512  # the moment both small temporaries were alive
    assert tally.prune() == 4096 + 12288
    del b, c


@pytest.mark.parametrize("stage", ["motion", "scs_guided"])
def test_fake_twin_tallies_what_the_real_model_allocates(model, stage):
    """The same step on the real tiny model (real tensors) and on its fake twin: the same FLOPs and
    the same live storages, so the estimate is what the engine's code allocates (a training step
    with LoRA, AdamW and checkpointing; an SCS guided step with its recorder and latent gradient)."""
    spec = StageSpec(stage, frames=4, height=64, width=64, checkpointing=True, images=2)
    real = run_stage(model, spec)
    fake = run_stage(twin_of(model), spec)
    assert fake.flops == real.flops > 0  # integer counts of the same ops
    assert fake.resident_bytes == real.resident_bytes
    # both peaks lag the true one by at most cost.REL_SLACK (StorageTally's lazy pruning)
    assert abs(fake.peak_bytes - real.peak_bytes) <= cost.REL_SLACK * real.peak_bytes
    assert real.peak_bytes > real.resident_bytes


def _motion_settings(**kw):
    from videomage_core.motion import MotionSettings

    return MotionSettings(**{"motion_prompt": "a toy riding a dog", "reference_words": ("toy",), "frames": 8,
                             "height": 64, "width": 64, **kw})


def _budgets(model, settings):
    """required_bytes of the motion stage's worst step without / with checkpointing."""
    need = {}
    for ckpt in (False, True):
        specs = preflight.stage_specs(model, "motion", settings, images=1, checkpointing=ckpt)
        need[ckpt] = max(preflight.required_bytes(preflight.estimate(model, s)) for s in specs)
    assert need[True] < need[False]  # checkpointing lowers the estimated peak
    return need


def test_preflight_refuses_with_the_settings_that_would_fit(model, monkeypatch):
    settings = _motion_settings(gradient_checkpointing=False)
    need = _budgets(model, settings)
    free = (need[True] + need[False]) // 2  # fits with checkpointing only
    monkeypatch.setattr(preflight, "free_device_memory", lambda device: free)
    with pytest.raises(VideoMageInputError) as err:
        preflight.check_memory(model, "motion", settings, images=1)
    msg = str(err.value)
    assert err.value.input_name == "gradient_checkpointing"
    assert "will not fit" in msg and "Settings that would fit: gradient_checkpointing on" in msg
    assert f"{free / 2 ** 30:.1f} GiB is free" in msg
    # with enough memory, or checkpointing on, or "auto" (judged with checkpointing), it passes
    preflight.check_memory(model, "motion", _motion_settings(gradient_checkpointing=True), images=1)
    preflight.check_memory(model, "motion", _motion_settings(gradient_checkpointing="auto"), images=1)
    monkeypatch.setattr(preflight, "free_device_memory", lambda device: need[False])
    preflight.check_memory(model, "motion", settings, images=1)


def test_preflight_names_fewer_frames_when_checkpointing_is_not_enough(model, monkeypatch):
    settings = _motion_settings(gradient_checkpointing=True)
    need = _budgets(model, settings)
    monkeypatch.setattr(preflight, "free_device_memory", lambda device: need[True] - 1)
    with pytest.raises(VideoMageInputError) as err:
        preflight.check_memory(model, "motion", settings, images=1)
    assert "would fit: gradient_checkpointing on" not in str(err.value)  # already on: not offered again
    assert "frames 6 with gradient_checkpointing on" in str(err.value)  # 8 * 0.75, the largest tried


def test_no_budget_no_check_and_auto_is_off_on_the_cpu(model):
    assert preflight.free_device_memory(model.device) is None
    preflight.check_memory(model, "motion", _motion_settings(frames=1024), images=1)  # nothing estimated
    assert preflight.resolve_checkpointing(model, "motion", _motion_settings(gradient_checkpointing="auto"),
                                           images=1) is False


def test_auto_checkpointing_turns_on_exactly_when_the_estimate_exceeds_the_budget(model, monkeypatch):
    auto = _motion_settings(gradient_checkpointing="auto")
    need = _budgets(model, auto)
    for free, expected in ((need[False], False), (need[False] - 1, True)):
        monkeypatch.setattr(preflight, "free_device_memory", lambda device, f=free: f)
        assert preflight.resolve_checkpointing(model, "motion", auto, images=1) is expected
        for explicit in (True, False):  # explicit choices are kept whatever the budget
            settings = _motion_settings(gradient_checkpointing=explicit)
            assert preflight.resolve_checkpointing(model, "motion", settings, images=1) is explicit


def test_train_motion_applies_auto_checkpointing(model, monkeypatch):
    """The engine resolves "auto" with the same estimate (the budget between the two needs)."""
    from videomage_core import motion

    auto = _motion_settings(gradient_checkpointing="auto", steps=1, inversion_steps=0)
    need = _budgets(model, auto)
    monkeypatch.setattr(preflight, "free_device_memory", lambda device: (need[True] + need[False]) // 2)
    calls = []
    real = motion.set_gradient_checkpointing
    monkeypatch.setattr(motion, "set_gradient_checkpointing",
                        lambda unet, on: (calls.append(on), real(unet, on)))
    motion.train_motion(model, torch.rand(8, 64, 64, 3), auto)
    assert calls == [True, False]  # on for the LoRA steps, off again afterwards


def test_parse_checkpointing_choices():
    assert [preflight.parse_checkpointing(v) for v in ("auto", "on", "off", True, False)] == \
        ["auto", True, False, True, False]
    with pytest.raises(VideoMageInputError, match="gradient_checkpointing"):
        preflight.parse_checkpointing("sometimes")
