import math

import pytest
import torch

from videomage_core import losses as L


def test_appearance_free_target_formula():
    gen = torch.Generator().manual_seed(0)
    eps, eps_ap = torch.randn(2, 4, 3, 5, 5, generator=gen), torch.randn(2, 4, 3, 5, 5, generator=gen)
    for omega in (0.25, 0.5, 1.0):
        target = L.appearance_free_target(eps, eps_ap, omega)
        assert torch.allclose(target, eps + omega * (eps - eps_ap), atol=1e-6)
    assert torch.equal(L.appearance_free_target(eps, None, 0.0), eps)
    pred = torch.randn(2, 4, 3, 5, 5, generator=gen)
    plain = ((pred - eps) ** 2).mean()
    assert torch.allclose(L.motion_loss(pred, L.appearance_free_target(eps, eps_ap, 0.0)), plain)


def test_subject_objective_and_masked_loss():
    pred, eps = torch.ones(1, 4, 1, 4, 4), torch.zeros(1, 4, 1, 4, 4)
    pred[..., :2] = 3.0
    mask = torch.zeros(1, 1, 1, 4, 4)
    mask[..., :2] = 1.0
    assert L.subject_loss(pred, eps, mask).item() == pytest.approx(9.0)
    assert L.subject_loss(pred, eps).item() == pytest.approx(5.0)
    assert L.subject_objective(torch.tensor(1.0), torch.tensor(2.0), 0.25).item() == pytest.approx(1.5)


def test_fusion_and_attention_losses():
    a, b = torch.zeros(1, 4, 2, 3, 3), torch.ones(1, 4, 2, 3, 3)
    assert L.fusion_loss([a, b], [a, a]).item() == pytest.approx(0.5)
    mask = torch.zeros(1, 2, 8, 8)
    mask[..., 2:6, 2:6] = 1
    perfect = torch.nn.functional.interpolate(mask.flatten(0, 1)[:, None], size=(4, 4), mode="area").view(1, 2, 4, 4)
    assert L.attention_mask_loss([perfect * 0.1, perfect * 0.3], [mask, mask]).item() == pytest.approx(0.0, abs=1e-7)
    flat = torch.full((1, 2, 4, 4), 0.2)
    assert L.attention_mask_loss([flat, flat], [mask, mask]).item() > 0.1
    assert L.attention_objective(torch.tensor(1.0), torch.tensor(2.0), 0.6).item() == pytest.approx(2.2)
    assert L.attention_objective(torch.tensor(1.0), torch.tensor(2.0), 0.0).item() == pytest.approx(1.0)


def test_alignment_losses_stop_gradient_at_the_target():
    s = torch.rand(1, 2, 3, 4, 4, requires_grad=True)
    m = torch.rand(1, 2, 3, 4, 4, requires_grad=True)
    L.spatial_alignment_loss(s, m).backward()
    assert s.grad is None and m.grad is not None
    s2 = torch.rand(1, 16, 3, 3, requires_grad=True)
    m2 = torch.rand(1, 16, 3, 3, requires_grad=True)
    loss = L.temporal_alignment_loss(s2, m2)
    loss.backward()
    assert m2.grad is None and s2.grad is not None
    assert loss.item() == pytest.approx(((s2 - m2) ** 2).sum().item(), rel=1e-6)


def test_guidance_schedule_noise_prior_and_branches():
    alphas = L.guidance_step_sizes(1e4, 50)
    assert alphas[0] == pytest.approx(1e4) and alphas[-1] == pytest.approx(1e4 * math.sqrt(0.5))
    assert all(a > b for a, b in zip(alphas, alphas[1:]))
    eps_m, eps = torch.randn(10000), torch.randn(10000)
    x = L.noise_prior(eps_m, eps, 0.3)
    assert torch.allclose(x, math.sqrt(0.3) * eps_m + math.sqrt(0.7) * eps)
    assert 0.95 < x.std().item() < 1.05
    assert torch.equal(L.combine_branches(torch.ones(2), torch.zeros(2), 0.5, 0.5), torch.full((2,), 0.5))
    assert torch.equal(L.classifier_free_guidance(torch.zeros(2), torch.ones(2), 9.0), torch.full((2,), 9.0))
