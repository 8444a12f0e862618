"""Every equation of the method, one function each (``shared/method.md`` names in brackets).

Diffusion losses are mean squared errors (the mean over elements, as every diffusers trainer
reduces ``||.||^2``); SCS's alignment losses are summed squared errors, as Algorithm 1 writes
``||.||_2^2`` and its step size ``alpha_t = 1e4`` is scaled for sums.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def masked_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error; with ``weight`` (broadcastable, e.g. a latent-size mask) a weighted mean."""
    err = (pred.float() - target.float()) ** 2
    if weight is None:
        return err.mean()
    weight = weight.float().expand_as(err)
    return (err * weight).sum() / weight.sum().clamp_min(1e-8)


def subject_loss(eps_pred: torch.Tensor, eps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[section 1, L_sub] ``|| eps_theta_s(x_s,t, c_s, t) - eps ||^2`` on the subject images.

    With a subject mask, the error is averaged over the subject's pixels only (our choice for the
    optional MASK input; the paper uses whole images).
    """
    return masked_mse(eps_pred, eps, mask)


def regularization_loss(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """[section 1, L_reg] the same diffusion loss on auxiliary (or prior) video-caption pairs."""
    return masked_mse(eps_pred, eps)


def subject_objective(l_sub: torch.Tensor, l_reg: torch.Tensor, lambda1: float) -> torch.Tensor:
    """[section 1] ``L = L_sub + lambda1 * L_reg`` (lambda1 = 0.25)."""
    return l_sub + lambda1 * l_reg


def appearance_free_target(eps: torch.Tensor, eps_appearance: torch.Tensor, omega: float) -> torch.Tensor:
    """[section 2, eps_apfree] ``(1 + omega) * eps - omega * eps_theta(x_m,t, c_ap, t)``.

    ``eps_appearance`` is the frozen base model's prediction for the appearance prompt
    ("A static video of <ref1> and <ref2>."). ``omega = 0`` returns ``eps``: the plain loss.
    """
    if omega == 0:
        return eps
    return (1 + omega) * eps.float() - omega * eps_appearance.float()


def motion_loss(eps_pred: torch.Tensor, eps_apfree: torch.Tensor) -> torch.Tensor:
    """[section 2, L_mot] ``|| eps_theta_m(x_m,t, c_m, t) - eps_apfree ||^2``."""
    return masked_mse(eps_pred, eps_apfree)


def appearance_debiased_loss(pred: torch.Tensor, target: torch.Tensor, anchor: int, beta: float = 1.0) -> torch.Tensor:
    """[baseline: MotionDirector, L_ad] ``|| phi(pred) - phi(target) ||^2`` over a video's frames,
    ``phi(e)_i = sqrt(beta^2 + 1) e_i - beta e_anchor`` with a random ``anchor`` frame (frame axis 2 of
    ``[B, C, F, H, W]``): what every frame shares with the anchor, its appearance, is taken out of
    the temporal LoRA's loss. MotionDirector's default ``beta = 1``.
    """
    a = math.sqrt(beta * beta + 1.0)
    pa, ta = pred.float()[:, :, anchor:anchor + 1], target.float()[:, :, anchor:anchor + 1]
    return masked_mse(a * pred.float() - beta * pa, a * target.float() - beta * ta)


def fusion_loss(fused_preds: list[torch.Tensor], subject_preds: list[torch.Tensor]) -> torch.Tensor:
    """[section 3, L_fusion] ``1/N sum_n || eps_fused(x_n,t, c_n, t) - eps_theta_s,n(x_n,t, c_n, t) ||^2``."""
    losses = [masked_mse(p, t.detach()) for p, t in zip(fused_preds, subject_preds)]
    return torch.stack(losses).mean()


def normalize_map(maps: torch.Tensor) -> torch.Tensor:
    """Scale each attention map ``(..., h, w)`` to a maximum of 1 (maps compared with binary masks)."""
    peak = maps.flatten(-2).amax(-1).clamp_min(1e-8)
    return maps / peak[..., None, None]


def attention_mask_loss(sca_maps: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
    """[section 3, L_attn] ``1/2 sum_i || M_SCA,i - M_hat_i ||^2`` for the two pasted subjects.

    ``sca_maps[i]`` is subject i's token map ``(B, F, h, w)``, scaled to a peak of 1 per frame
    (our choice: raw probabilities are far below 1, the masks are 0/1); ``masks[i]`` its mask,
    resized to ``(h, w)`` by area. The squared norm is averaged over pixels and frames, so
    ``lambda2 = 0.6`` weighs it against the (also averaged) diffusion loss.
    """
    total = 0.0
    for m, mask in zip(sca_maps, masks):
        target = F.interpolate(mask.float().flatten(0, 1)[:, None], size=m.shape[-2:], mode="area")
        total = total + masked_mse(normalize_map(m), target.view_as(m))
    return total / 2


def attention_objective(l_fusion: torch.Tensor, l_attn: torch.Tensor, lambda2: float) -> torch.Tensor:
    """[section 3] ``L = L_fusion + lambda2 * L_attn`` (lambda2 = 0.6; 0 is the w/o L_attn ablation)."""
    return l_fusion + lambda2 * l_attn


def spatial_alignment_loss(sca_subject: torch.Tensor, sca_motion: torch.Tensor) -> torch.Tensor:
    """[section 4, L_s->m] ``|| M_SCA,s - M_SCA,m ||^2``: the subject branch's maps are the target."""
    return ((sca_subject.detach().float() - sca_motion.float()) ** 2).sum()


def temporal_alignment_loss(tsa_subject: torch.Tensor, tsa_motion: torch.Tensor) -> torch.Tensor:
    """[section 4, L_m->s] ``|| M_TSA,s - M_TSA,m ||^2``: the motion branch's maps are the target."""
    return ((tsa_subject.float() - tsa_motion.detach().float()) ** 2).sum()


def guidance_step_sizes(alpha0: float, num_steps: int) -> list[float]:
    """[section 4, alpha_t] ``alpha0 * sqrt(linspace(1.0, 0.5, num_steps)[i])`` (Attend-and-Excite)."""
    if num_steps == 1:
        return [float(alpha0)]
    return [float(alpha0) * math.sqrt(1.0 - 0.5 * i / (num_steps - 1)) for i in range(num_steps)]


def classifier_free_guidance(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """``eps_uncond + scale * (eps_cond - eps_uncond)`` (scale 9.0 in the paper)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def combine_branches(eps_sub: torch.Tensor, eps_mot: torch.Tensor, beta_s: float, beta_m: float) -> torch.Tensor:
    """[section 4, step 4] ``eps = beta_s * eps_sub + beta_m * eps_mot`` (0.5 / 0.5)."""
    return beta_s * eps_sub + beta_m * eps_mot


def combine_branches_by_region(eps_sub: torch.Tensor, eps_mot: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Beyond the paper: section 4's step-4 combination with the subject branch's share per latent pixel,
    ``eps = w * eps_sub + (1 - w) * eps_mot`` (``w`` broadcast over channels; a constant ``w = beta_s`` with
    ``beta_s + beta_m = 1`` is :func:`combine_branches`)."""
    return weight * eps_sub + (1 - weight) * eps_mot


def noise_prior(eps_motion: torch.Tensor, eps: torch.Tensor, beta: float) -> torch.Tensor:
    """[section 4, initial noise] ``x_T = sqrt(beta) * eps_m + sqrt(1 - beta) * eps`` (beta = 0.3)."""
    return math.sqrt(beta) * eps_motion + math.sqrt(1 - beta) * eps
