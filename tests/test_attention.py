import pytest
import torch

from videomage_core.attention import AttentionRecorder, recorded_layer_names
from videomage_core.diffusion import encode_prompts, predict_noise

SHAPE = (1, 4, 3, 16, 24)  # quarter level: 4x6


def _inputs(model, batch=1):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *SHAPE[1:], generator=gen)
    text = encode_prompts(model, ["a toy rides a dog"] * batch)
    return x, text


def test_default_layers_are_the_quarter_level(model):
    spatial, temporal = recorded_layer_names(model.unet)
    assert spatial and temporal
    assert all(n.startswith(("down_blocks.2.", "up_blocks.1.")) and n.endswith("attn2") for n in spatial)
    assert all(".temp_attentions." in n for n in temporal)


def test_maps_shapes_and_rows_sum_to_one(model):
    x, text = _inputs(model, batch=2)
    rec = AttentionRecorder(model.unet)
    with torch.no_grad(), rec, rec.recording(x.shape):
        predict_noise(model, x, torch.tensor(400), text)
    sca, tsa = rec.spatial_maps(), rec.temporal_maps()
    assert sca.shape == (2, 3, 77, 4, 6)
    assert tsa.shape == (2, 24, 3, 3)
    assert torch.allclose(sca.sum(2), torch.ones(2, 3, 4, 6), atol=1e-5)
    assert torch.allclose(tsa.sum(-1), torch.ones(2, 24, 3), atol=1e-5)
    # batch items keep their own maps: a different latent gives different maps
    assert not torch.allclose(sca[0], sca[1])


def test_recording_matches_sdpa_and_stop_early_matches_full(model):
    x, text = _inputs(model)
    with torch.no_grad():
        plain = predict_noise(model, x, torch.tensor(400), text)
        rec = AttentionRecorder(model.unet)
        with rec, rec.recording(x.shape):
            recorded = predict_noise(model, x, torch.tensor(400), text)
        full_sca, full_tsa = rec.spatial_maps(), rec.temporal_maps()
        with rec, rec.recording(x.shape, stop_after_last=True):
            predict_noise(model, x, torch.tensor(400), text)
        assert torch.equal(rec.spatial_maps(), full_sca) and torch.equal(rec.temporal_maps(), full_tsa)
    assert torch.allclose(plain, recorded, atol=1e-5)
    # detached recorder: the original processors are back
    with torch.no_grad():
        assert torch.equal(predict_noise(model, x, torch.tensor(400), text), plain)


def test_map_gradient_matches_finite_differences(model):
    model.unet.double()
    model.text_encoder.double()
    model.dtype = torch.float64
    x, text = _inputs(model)
    x, text = x.double(), text.double()
    rec = AttentionRecorder(model.unet)
    weights = torch.randn(1, 3, 77, 4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    wt = torch.randn(1, 24, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def objective(latent):
        with rec, rec.recording(latent.shape, stop_after_last=True):
            predict_noise(model, latent, torch.tensor(400), text)
        return (rec.spatial_maps() * weights).sum() + (rec.temporal_maps() * wt).sum()

    leaf = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(objective(leaf), leaf)
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    h = 1e-5
    with torch.no_grad():
        fd = (objective(x + h * direction) - objective(x - h * direction)) / (2 * h)
    analytic = (grad * direction).sum()
    assert analytic.abs() > 1e-8
    assert torch.isclose(analytic, fd, rtol=1e-4, atol=1e-9), (analytic.item(), fd.item())


@pytest.mark.parametrize("stop_early", [False, True])
def test_map_gradients_survive_gradient_checkpointing(model, stop_early):
    """Checkpointed blocks recompute the recorded layers during backward (recorder still attached)."""
    from videomage_core.checkpointing import set_gradient_checkpointing

    x, text = _inputs(model)
    rec = AttentionRecorder(model.unet)

    def grad():
        leaf = x.clone().requires_grad_(True)
        with rec:
            with rec.recording(leaf.shape, stop_after_last=stop_early):
                predict_noise(model, leaf, torch.tensor(400), text)
            loss = rec.spatial_maps()[..., 2, :, :].pow(2).sum() + rec.temporal_maps().pow(2).sum()
            return torch.autograd.grad(loss, leaf)[0]

    plain = grad()
    set_gradient_checkpointing(model.unet, True)
    try:
        checked = grad()
    finally:
        set_gradient_checkpointing(model.unet, False)
    assert torch.allclose(plain, checked, atol=1e-6), (plain - checked).abs().max()
