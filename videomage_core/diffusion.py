"""The diffusion primitives every loop shares: prompt encoding, VAE, noising, the UNet call."""
from __future__ import annotations

import torch
from einops import rearrange



def encode_prompts(model, prompts: list[str]) -> torch.Tensor:
    """CLIP text embeddings ``(N, 77, D)`` (the last hidden state, as ZeroScope uses)."""
    tok = model.tokenizer(prompts, padding="max_length", max_length=model.tokenizer.model_max_length,
                          truncation=True, return_tensors="pt")
    ids = tok.input_ids.to(model.device)
    return model.text_encoder(ids)[0].to(model.dtype)


@torch.no_grad()
def encode_video(model, frames: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Frames ``[F, H, W, 3]`` in 0..1 -> scaled latents ``(1, C, F, h, w)``."""
    vae = model.vae
    x = frames.to(model.device, vae.dtype).permute(0, 3, 1, 2) * 2 - 1
    parts = [vae.encode(x[i:i + chunk]).latent_dist.mean for i in range(0, x.shape[0], chunk)]
    lat = torch.cat(parts) * model.latent_scaling
    return rearrange(lat, "f c h w -> 1 c f h w").to(model.dtype)


@torch.no_grad()
def decode_latents(model, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Latents ``(B, C, F, h, w)`` -> frames ``[B*F, H, W, 3]`` in 0..1 (decoded in chunks)."""
    vae = model.vae
    x = rearrange(latents, "b c f h w -> (b f) c h w").to(vae.dtype) / model.latent_scaling
    parts = [vae.decode(x[i:i + chunk]).sample for i in range(0, x.shape[0], chunk)]
    return ((torch.cat(parts).float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu()


def predict_noise(model, latents: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``eps_theta(x_t, c, t)`` of the UNet with whatever adapters are active."""
    if timesteps.ndim == 0:
        timesteps = timesteps.expand(latents.shape[0])
    return model.family.denoise(model.unet, latents.to(model.dtype), timesteps.to(model.device), text)


def add_noise(model, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Forward diffusion ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``."""
    return model.scheduler.add_noise(latents, noise, timesteps.to(latents.device))


def sample_timesteps(model, n: int, generator: torch.Generator) -> torch.Tensor:
    steps = model.scheduler.config.num_train_timesteps
    return torch.randint(0, steps, (n,), generator=generator).to(model.device)


def randn(shape, generator: torch.Generator, model) -> torch.Tensor:
    """Gaussian noise drawn on the CPU from ``generator`` (same seed, same noise on any device)."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(model.device, model.dtype)
