"""The MotionDirector baseline: its appearance-debiased loss, and its dual-path trainer on the tiny model."""
from __future__ import annotations

import math

import pytest
import torch

from videomage_core.errors import VideoMageInputError
from videomage_core.losses import appearance_debiased_loss, masked_mse
from videomage_core.motiondirector import MotionDirectorSettings, train_motiondirector


def _video(frames=8, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.full((frames, size, size, 3), 0.1)
    for f in range(frames):  # a bright square moving right over a faint texture
        x = 4 + 5 * f
        video[f, 20:36, x:x + 16] = torch.tensor([0.9, 0.3, 0.2])
    return (video + 0.02 * torch.rand(video.shape, generator=g)).clamp(0, 1)


def test_appearance_debiased_loss_discounts_what_every_frame_shares():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(1, 4, 6, 5, 5, generator=g), torch.randn(1, 4, 6, 5, 5, generator=g)
    shared = torch.randn(1, 4, 1, 5, 5, generator=g).expand(-1, -1, 6, -1, -1)
    # an error s shared by every frame (appearance): phi(t + s)_i - phi(t)_i = sqrt(2) s - s, so with
    # beta = 1 it weighs (sqrt 2 - 1)^2 = 0.17 of what it weighs in the plain loss (fp32 sums of 600
    # squares: 1e-5 relative)
    debiased = appearance_debiased_loss(target + shared, target, anchor=2)
    plain = masked_mse(target + shared, target)
    assert float(debiased) == pytest.approx(float(plain) * (math.sqrt(2) - 1) ** 2, rel=1e-5)
    # an error that differs between frames (motion) is not discounted that way
    moving = torch.randn(1, 4, 6, 5, 5, generator=g)
    assert float(appearance_debiased_loss(target + moving, target, anchor=2)) > float(masked_mse(target + moving, target))
    # beta = 0 is the plain loss; a perfect prediction scores 0 whatever the anchor
    assert torch.equal(appearance_debiased_loss(pred, target, 0, beta=0.0), masked_mse(pred, target))
    assert float(appearance_debiased_loss(target, target, anchor=5)) == 0.0


def test_motiondirector_trains_a_temporal_motion_without_tokens(model, one_thread):
    settings = MotionDirectorSettings(motion_prompt="a toy moving right", steps=3, height=64, width=64, frames=4)
    art = train_motiondirector(model, _video(), settings)
    assert art.kind == "motion" and art.scope == "temporal" and art.tokens == {} and art.superclasses == {}
    assert len(art.losses) == 3 and all(math.isfinite(v) for v in art.losses)
    assert art.lora and all("temp" in k or "transformer_in" in k for k in art.lora)  # the spatial LoRA is dropped
    assert any(float(v.abs().max()) > 0 for k, v in art.lora.items() if "lora_B" in k or "lora_up" in k)
    assert art.reference_latents is not None and art.reference_latents.shape[2] == 4
    assert model.adapters == {}
    # the same seed gives the same LoRA (on one thread: see conftest.one_thread)
    again = train_motiondirector(model, _video(), settings)
    assert all(torch.equal(again.lora[k], v) for k, v in art.lora.items())


@pytest.mark.parametrize("change, name", [({"motion_prompt": " "}, "motion_prompt"), ({"steps": 0}, "steps"),
                                          ({"beta_ad": -1.0}, "beta_ad")])
def test_motiondirector_bad_settings_name_the_input(model, change, name):
    settings = MotionDirectorSettings(**{"motion_prompt": "a toy", "height": 64, "width": 64, "frames": 4, **change})
    with pytest.raises(VideoMageInputError, match=name):
        train_motiondirector(model, _video(), settings)
