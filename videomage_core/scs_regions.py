"""Beyond the paper: SCS's DDIM step weighted by region (``SCSSettings.region_weights``).

The paper combines the branches' noise predictions with constant weights, ``beta_s * eps_sub + beta_m *
eps_mot`` at every latent pixel. Here the subject branch's share follows where its subject tokens are
attended: ``inside`` where the subject branch's own cross-attention maps of its tokens peak, ``outside``
where they are zero, linearly between. The maps are those SCS's guidance records (the same levels and
layers), taken from one extra conditional pass of the subject branch per step, stopped after the last
recorded layer. Measured on the built-in model in ``docs/shapesworld.md`` (session 20).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .attention import AttentionRecorder
from .diffusion import predict_noise
from .lora import adapters_active


def region_weights(maps: torch.Tensor, outside: float, inside: float, size: tuple[int, int]) -> torch.Tensor:
    """The subject branch's share per latent pixel, ``(B, 1, F, H, W)``, from its subjects' SCA maps
    ``(B, F, N, h, w)``: each pixel's strongest subject, scaled so that each frame's peak is 1, upsampled
    bilinearly to ``size`` and mapped linearly from ``outside`` (0) to ``inside`` (1)."""
    m = maps.float().amax(2)  # (B, F, h, w): the subject a pixel attends to most
    m = m / m.flatten(2).amax(-1).clamp_min(1e-8)[..., None, None]
    m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    return (outside + (inside - outside) * m).unsqueeze(1)


@torch.no_grad()
def subject_region_weights(model, recorder: AttentionRecorder, branch, x: torch.Tensor, t, outside: float,
                           inside: float) -> torch.Tensor:
    """:func:`region_weights` of the subject ``branch`` (an SCS branch: adapters, prompt pair, token
    columns) at latents ``x`` ``(B, C, F, H, W)`` and timestep ``t``."""
    with recorder, adapters_active(model, branch.adapters):
        with recorder.recording(x.shape, stop_after_last=True, kinds=("spatial",)):
            predict_noise(model, x.to(model.dtype), t, branch.text[1:])
        maps = branch.sca(recorder)
    recorder.maps = {}
    return region_weights(maps, outside, inside, tuple(x.shape[-2:]))
