"""The diffusion primitives every loop shares: prompt encoding, VAE, noising, the denoiser call.

Two parametrizations, by the base family's ``PREDICTION`` (:mod:`videomage_core.bases`):

- "epsilon" (ZeroScope, AnimateDiff): DDPM, ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``, the
  denoiser predicts ``eps``;
- "flow" (Wan): rectified flow, ``x_t = (1 - sigma) x_0 + sigma eps`` with ``t = 1000 sigma``, the
  denoiser predicts the velocity ``v = eps - x_0``.

Every loss of the method compares the denoiser's output with :func:`training_target` (``eps`` or
``v``), so each equation keeps its form on either (``method.md``; README, "Wan").
"""
from __future__ import annotations

import torch
from einops import rearrange

from .errors import require

FLOW_TRAIN_TIMESTEPS = 1000  # t = 1000 sigma, as Wan's schedulers pass it to the denoiser


def is_flow(model) -> bool:
    return getattr(model.family, "PREDICTION", "epsilon") == "flow"


def encode_prompts(model, prompts: list[str]) -> torch.Tensor:
    """Text embeddings: CLIP's last hidden state ``(N, 77, D)`` (ZeroScope, AnimateDiff), or the
    family's own (``encode_text``: Wan's umT5, ``(N, 512, D)``)."""
    if hasattr(model.family, "encode_text"):
        return model.family.encode_text(model, prompts)
    tok = model.tokenizer(prompts, padding="max_length", max_length=model.tokenizer.model_max_length,
                          truncation=True, return_tensors="pt")
    ids = tok.input_ids.to(model.text_encoder.get_input_embeddings().weight.device)  # the CPU while parked
    return model.text_encoder(ids)[0].to(model.device, model.dtype)


def frame_step(model) -> int:
    """The VAE's temporal compression: a video has ``k * step + 1`` frames (1: any count)."""
    return int(getattr(model.family, "FRAME_STEP", 1))


def latent_frames(model, frames: int) -> int:
    step = frame_step(model)
    return frames if step == 1 else (frames - 1) // step + 1


def check_frames(model, frames: int, input_name: str = "frames") -> None:
    """Frame counts the VAE encodes: any for a per-frame VAE, ``4k + 1`` (or an image) for Wan's."""
    step = frame_step(model)
    require(step == 1 or (frames - 1) % step == 0, input_name,
            f"{model.family.TITLE} encodes videos of {step}k + 1 frames (e.g. {step * 4 + 1}, {step * 8 + 1}, "
            f"{step * 20 + 1}), got {frames}")


def snap_frames(model, frames: int) -> int:
    """The nearest frame count at or above ``frames`` the VAE encodes (8 -> 9 on Wan): for the
    method's internal videos (prior and fusion videos), whose defaults are per-frame-VAE counts."""
    step = frame_step(model)
    return frames if step == 1 else ((max(frames, 1) - 1 + step - 1) // step) * step + 1


def latent_frame_of(model, frames: int) -> list[int]:
    """The latent frame each pixel frame is encoded into (``[0, 1, 1, 1, 1, 2, ...]`` on Wan: the
    first frame alone, then groups of 4)."""
    step = frame_step(model)
    return [(f + step - 1) // step for f in range(frames)]


def masks_to_latent_frames(model, masks: torch.Tensor) -> torch.Tensor:
    """Per-pixel-frame masks ``[F, H, W]`` -> per latent frame ``[F', H, W]`` (the mean of each group)."""
    index = torch.tensor(latent_frame_of(model, masks.shape[0]))
    out = torch.zeros(int(index.max()) + 1, *masks.shape[1:], dtype=torch.float32)
    out.index_add_(0, index, masks.float().cpu())
    return (out / torch.bincount(index).float().view(-1, *[1] * (masks.ndim - 1))).to(masks.device)


def latent_masks_to_frames(model, masks: torch.Tensor, frames: int) -> torch.Tensor:
    """Per-latent-frame maps ``[F', ...]`` -> per pixel frame ``[frames, ...]``."""
    return masks[torch.tensor(latent_frame_of(model, frames), device=masks.device)]


def valid_frames_at_most(model, frames: int) -> int:
    """The largest frame count at most ``frames`` the VAE encodes (a clip shorter than asked for)."""
    step = frame_step(model)
    return frames if step == 1 else ((max(frames, 1) - 1) // step) * step + 1


@torch.no_grad()
def encode_video(model, frames: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Frames ``[F, H, W, 3]`` in 0..1 -> scaled latents ``(1, C, F', h, w)`` (F' = F unless the family's
    VAE compresses time)."""
    if hasattr(model.family, "encode_video"):
        check_frames(model, frames.shape[0])
        return model.family.encode_video(model, frames)
    vae = model.vae
    x = frames.to(model.device, vae.dtype).permute(0, 3, 1, 2) * 2 - 1
    parts = [vae.encode(x[i:i + chunk]).latent_dist.mean for i in range(0, x.shape[0], chunk)]
    lat = torch.cat(parts) * model.latent_scaling
    return rearrange(lat, "f c h w -> 1 c f h w").to(model.dtype)


@torch.no_grad()
def decode_latents(model, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Latents ``(B, C, F', h, w)`` -> frames ``[B*F, H, W, 3]`` in 0..1 (decoded in chunks)."""
    if hasattr(model.family, "decode_latents"):
        return model.family.decode_latents(model, latents)
    vae = model.vae
    x = rearrange(latents, "b c f h w -> (b f) c h w").to(vae.dtype) / model.latent_scaling
    parts = [vae.decode(x[i:i + chunk]).sample for i in range(0, x.shape[0], chunk)]
    return ((torch.cat(parts).float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu()


def predict_noise(model, latents: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The denoiser's output with whatever adapters are active: ``eps_theta(x_t, c, t)``, or the
    velocity ``v_theta(x_t, c, t)`` on a flow base."""
    if timesteps.ndim == 0:
        timesteps = timesteps.expand(latents.shape[0])
    return model.family.denoise(model.unet, latents.to(model.dtype), timesteps.to(model.device), text)


def flow_sigma(timesteps: torch.Tensor) -> torch.Tensor:
    return timesteps.float() / FLOW_TRAIN_TIMESTEPS


def add_noise(model, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Forward diffusion: ``sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``, or ``(1 - sigma) x_0 + sigma eps``."""
    if is_flow(model):
        s = flow_sigma(timesteps).to(latents.device).view(-1, *[1] * (latents.ndim - 1))
        return ((1 - s) * latents.float() + s * noise.float()).to(latents.dtype)
    return model.scheduler.add_noise(latents, noise, timesteps.to(latents.device))


def training_target(model, latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What the denoiser is trained to output at ``add_noise(latents, noise, t)``: ``eps``, or the
    velocity ``eps - x_0`` on a flow base."""
    if is_flow(model):
        return (noise.float() - latents.float()).to(noise.dtype)
    return noise


def flow_shift(model) -> float:
    return float(getattr(model.scheduler.config, "flow_shift", None) or getattr(model.scheduler.config, "shift", 1.0))


def sample_timesteps(model, n: int, generator: torch.Generator) -> torch.Tensor:
    """Training timesteps: uniform over the DDPM schedule, or for flow ``sigma = s u / (1 + (s - 1) u)``
    with ``u`` uniform and ``s`` the sampler's shift (3 for Wan at 480p: the noise levels it samples at)."""
    if is_flow(model):
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        s = flow_shift(model)
        sigma = s * u / (1 + (s - 1) * u)
        return (sigma * FLOW_TRAIN_TIMESTEPS).float().to(model.device)
    steps = model.scheduler.config.num_train_timesteps
    return torch.randint(0, steps, (n,), generator=generator).to(model.device)


def randn(shape, generator: torch.Generator, model) -> torch.Tensor:
    """Gaussian noise drawn on the CPU from ``generator`` (same seed, same noise on any device)."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(model.device, model.dtype)
