"""SCS's DDIM step weighted by region (``SCSSettings.region_weights``, beyond the paper): the weights from the
subject tokens' maps, the combination, the sampler with it, and its node and CLI inputs. Tiny ZeroScope-layout
model, 3 frames at 64x64, 3 steps.

Tolerances: bit-exact (``torch.equal``) where both sides run the same op sequence. A constant weight w gives
``w * a + (1 - w) * b``, which for w = 0.5 is the very expression ``0.5 * a + 0.5 * b`` of the paper's
combination (1 - 0.5 is exactly 0.5), and the extra recording pass only reads the UNet (no random draw, no state
left), so the region sampler at (0.5, 0.5) must reproduce the paper's bits."""
from __future__ import annotations

import pytest
import torch

from videomage_core.errors import VideoMageInputError
from videomage_core.losses import combine_branches, combine_branches_by_region
from videomage_core.pipeline import generate_video
from videomage_core.sampling import SCSSettings
from videomage_core.scs_regions import region_weights

from test_sampling_options import PROMPT, _settings, arts, one_thread  # noqa: F401 (fixtures)


@pytest.mark.parametrize("outside, inside", [(0.2, 0.9), (0.0, 1.0), (0.5, 0.5), (0.9, 0.1)])
def test_weights_follow_each_frames_strongest_subject(outside, inside):
    maps = torch.zeros(1, 2, 2, 4, 4)  # (B, F, N subjects, h, w)
    maps[0, 0, 0, 1, 1] = 0.6  # frame 0: subject 0 peaks at (1, 1), subject 1 weaker at (2, 2)
    maps[0, 0, 1, 2, 2] = 0.3
    maps[0, 1, 1, 3, 0] = 0.02  # frame 1: a faint peak is still that frame's peak (scaled per frame)
    w = region_weights(maps, outside, inside, (4, 4))  # same size: no interpolation to blur the check
    assert w.shape == (1, 1, 2, 4, 4)
    assert w[0, 0, 0, 1, 1].item() == pytest.approx(inside)
    assert w[0, 0, 0, 2, 2].item() == pytest.approx(outside + (inside - outside) * 0.5)  # 0.3 / 0.6
    assert w[0, 0, 1, 3, 0].item() == pytest.approx(inside)
    assert w[0, 0, 0, 0, 3].item() == pytest.approx(outside) and w[0, 0, 1, 0, 3].item() == pytest.approx(outside)
    up = region_weights(maps, outside, inside, (8, 8))
    assert up.shape == (1, 1, 2, 8, 8) and lo_hi(up) == pytest.approx(sorted((outside, inside)), abs=1e-6)


def lo_hi(w):
    return [min(w.min().item(), w.max().item()), max(w.min().item(), w.max().item())]


def test_a_constant_weight_is_the_papers_combination():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 4, 3, 8, 8, generator=gen), torch.randn(1, 4, 3, 8, 8, generator=gen)
    assert torch.equal(combine_branches_by_region(a, b, torch.full((1, 1, 3, 8, 8), 0.5)),
                       combine_branches(a, b, 0.5, 0.5))


def _scs(arts, region=None):
    model, sub, mot, _ = arts
    out = generate_video(model, sub, mot, PROMPT, _settings(), mode="scs",
                         scs=SCSSettings(tau=2, alpha0=10.0, region_weights=region), noise_prior_beta=0.3)
    assert model.adapters == {}
    return out


def test_region_sampler_at_even_weights_is_the_papers_and_moves_otherwise(arts):
    paper = _scs(arts)
    assert torch.equal(_scs(arts, (0.5, 0.5)), paper)  # the extra pass reads, never changes
    moved = _scs(arts, (0.2, 0.9))
    assert not torch.equal(moved, paper) and torch.isfinite(moved).all()


@pytest.mark.parametrize("bad", [(1.2, 0.5), (0.5,), (0.2, 0.5, 0.9), ("a", 0.5), (-0.1, 0.9), 0.5, "ab"])
def test_bad_region_weights_are_refused_before_sampling(arts, bad):
    with pytest.raises(VideoMageInputError, match=r"^region_weights: expected \(outside, inside\)"):
        _scs(arts, bad)


def test_sampler_node_and_cli_pass_the_weights(arts, monkeypatch, tmp_path):
    from nodes.sampler import VideoMageCollaborativeSampler as Node
    from videomage_core.cli import build_parser

    for var in ("VIDEOMAGE_OUTPUT_DIR", "VIDEOMAGE_TEMP_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var))
    model, sub, mot, _ = arts
    common = dict(model=model, subject=sub, prompt=PROMPT, mode="SCS", frames=3, width=64, height=64, steps=3,
                  cfg=5.0, seed=0, tau=2, alpha=10.0, beta_s=0.5, beta_m=0.5, noise_prior_beta=0.3, motion=mot)
    on = Node().sample(**common, region_weighting="on", region_outside=0.2, region_inside=0.9)["result"][0]
    assert torch.equal(on, _scs(arts, (0.2, 0.9)).float().clamp(0, 1))
    off = Node().sample(**common, region_weighting="off", region_outside=0.2, region_inside=0.9)["result"][0]
    assert torch.equal(off, _scs(arts).float().clamp(0, 1))  # the weights are read only when on
    args = build_parser().parse_args(["sample", "--model", "m", "--subject", "s", "--prompt", "p", "--out", "o.webp",
                                      "--region-weights", "0.2", "0.9"])
    assert args.region_weights == [0.2, 0.9]


def test_region_sampler_on_animatediff(animatediff_model_dir):
    """The same equalities on AnimateDiff's layout (SD1.5 UNet2D + motion module): its own recorded layers."""
    from test_sampling_options import _motion, _subject
    from videomage_core.model import load_model

    model = load_model(animatediff_model_dir)
    ad = (model, _subject(model), _motion(model, 2), None)
    paper = _scs(ad)
    assert torch.equal(_scs(ad, (0.5, 0.5)), paper)
    assert not torch.equal(_scs(ad, (0.2, 0.9)), paper)
