"""The components a pretraining run builds from its :class:`~.pretrain_config.PretrainConfig`: the CLIP
tokenizer whose merges make every ShapesWorld caption word one token, and fresh, seeded
UNet3DConditionModel / AutoencoderKL / CLIPTextModel / DDIMScheduler of ZeroScope's layout at the
config's sizes. Split out of :mod:`.pretrain`, which re-exports these names."""

from __future__ import annotations

import os

import torch

from .generator import VOCABULARY
from .pretrain_config import PretrainConfig


# --------------------------------------------------------------------------- tokenizer and modules


def build_tokenizer(folder: str | os.PathLike):
    """CLIP tokenizer in ``folder`` with every caption word a single token (checked)."""
    from ..tiny_encoders import build_tiny_clip_tokenizer

    words = list(VOCABULARY)
    tok = build_tiny_clip_tokenizer(folder, corpus=" ".join(words), num_merges=sum(len(w) for w in words))
    split = [w for w in words if len(tok(w, add_special_tokens=False).input_ids) != 1]
    if split:
        raise RuntimeError(f"tokenizer splits caption words {split}")
    return tok


def build_modules(cfg: PretrainConfig, tokenizer, seed: int | None = None):
    """Fresh (unet, vae, text_encoder, scheduler) for ``cfg``."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..bases import zeroscope

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed if seed is None else seed)
        unet = UNet3DConditionModel(
            sample_size=cfg.latent_size[0],
            in_channels=cfg.latent_channels,
            out_channels=cfg.latent_channels,
            block_out_channels=tuple(cfg.unet_channels),
            layers_per_block=cfg.unet_layers,
            cross_attention_dim=cfg.text_dim,
            attention_head_dim=cfg.unet_heads,
            norm_num_groups=cfg.unet_groups,
        )
        n = len(cfg.vae_channels)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=tuple(cfg.vae_channels),
            layers_per_block=cfg.vae_layers,
            latent_channels=cfg.latent_channels,
            norm_num_groups=cfg.vae_groups,
            sample_size=cfg.height,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=cfg.text_dim,
                intermediate_size=cfg.text_ff,
                num_hidden_layers=cfg.text_layers,
                num_attention_heads=cfg.text_heads,
                max_position_embeddings=tokenizer.model_max_length,
                projection_dim=cfg.text_dim,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    return unet, vae, text_encoder, zeroscope.scheduler()  # ZeroScope's DDIM schedule, epsilon prediction


def _n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())
