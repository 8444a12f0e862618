"""Tiny random-weight models with ZeroScope's real layout, saved as a diffusers folder.

``python -m videomage_core tiny-model DIR`` writes one. Tests and the demo load it through the
same path as a real ZeroScope folder (:func:`videomage_core.model.load_model`).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from .errors import require
from .model import SETTINGS_FILE

#: A tiny model's own sampling defaults (its ``videomage.json``): 8 frames of 64 x 64.
TINY_MODEL_DEFAULTS = {"width": 64, "height": 64, "frames": 8}

# Words a tiny tokenizer knows as whole words; anything else falls back to characters.
TINY_WORDS = tuple((
    "a an the of and or with in on at to is are rides riding ride runs running walks walking jumps "
    "jumping over under around toward towards each other static video photo picture image scene "
    "empty background clip shot person man woman horse toy dog cat car bird ball shape object "
    "moving moves left right up down still fast slow red green blue yellow orange purple pink cyan "
    "white black circle square triangle star ring cross diamond two one big small plays playing "
    "chases chasing orbits orbiting swap swaps places approach approaches dance dancing"
).split())



def build_tiny_tokenizer(folder: str | os.PathLike) -> None:
    """A CLIP byte-level BPE with the full byte alphabet whose merges make TINY_WORDS whole words."""
    from .tiny_encoders import build_tiny_clip_tokenizer

    corpus = " ".join(TINY_WORDS)
    build_tiny_clip_tokenizer(folder, corpus=corpus, num_merges=4 * len(corpus.split()))


def tiny_components(seed: int = 0, vocab_size: int = 400, text_dim: int = 32):
    """Random tiny UNet3D / VAE / CLIP text encoder with the real four-level layout."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet3DConditionModel(
        sample_size=8, block_out_channels=(32, 32, 64, 64), layers_per_block=1,
        cross_attention_dim=text_dim, attention_head_dim=8, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16, 16), layers_per_block=1, latent_channels=4,
        norm_num_groups=8, sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=text_dim, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=text_dim,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return unet, vae, text_encoder, scheduler


def save_diffusers_folder(folder: str | os.PathLike, unet, vae, text_encoder, scheduler,
                          tokenizer_dir: str | os.PathLike) -> None:
    """Write a TextToVideoSDPipeline-style folder (model_index.json + one sub-folder each)."""
    import shutil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    scheduler.save_pretrained(folder / "scheduler")
    if (folder / "tokenizer").exists():
        shutil.rmtree(folder / "tokenizer")
    shutil.copytree(tokenizer_dir, folder / "tokenizer")
    index = {
        "_class_name": "TextToVideoSDPipeline", "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet3DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def build_tiny_model(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Build and save a tiny random ZeroScope-layout model into a new or empty folder; returns it."""
    folder = Path(folder)
    require(not folder.exists() or (folder.is_dir() and not any(folder.iterdir())), "folder",
            f"'{folder}' exists and is not empty; the tiny model goes into a new or empty folder (it "
            "would overwrite a model there)")
    with tempfile.TemporaryDirectory() as tdir:
        build_tiny_tokenizer(tdir)
        from transformers import CLIPTokenizer

        vocab = len(CLIPTokenizer.from_pretrained(tdir))
        unet, vae, text_encoder, scheduler = tiny_components(seed=seed, vocab_size=vocab)
        save_diffusers_folder(folder, unet, vae, text_encoder, scheduler, tdir)
    # Its own defaults (videomage.json), so that a CLI run on it without --size takes seconds, not the
    # minutes of ZeroScope's 576 x 320 (an untrained model: the size shows nothing either way).
    (folder / SETTINGS_FILE).write_text(json.dumps(TINY_MODEL_DEFAULTS, indent=1))
    return folder
