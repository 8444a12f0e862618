"""Tiny random-weight models with a base family's real layout, saved as its diffusers folder.

``python -m videomage_core tiny-model DIR [--base animatediff]`` writes one. Tests and the demo load
it through the same path as a real model folder (:func:`videomage_core.model.load_model`). The
family modules (:mod:`videomage_core.bases`) build the denoiser; the VAE, the CLIP text encoder and
the tokenizer are shared here.
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


def _clip_tokenizer(folder) -> int:
    from transformers import CLIPTokenizer

    build_tiny_tokenizer(folder)
    return len(CLIPTokenizer.from_pretrained(folder))


def tiny_vae(channels=(8, 16, 16, 16), groups: int = 8):
    """A random tiny SD-layout VAE (four levels, 8x down-sampling, 4 latent channels)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=tuple(channels), layers_per_block=1, latent_channels=4,
        norm_num_groups=groups, sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )


def tiny_text_encoder(vocab_size: int = 400, text_dim: int = 32, heads: int = 4, eos_token_id: int = 1):
    """A random tiny CLIP text encoder (2 layers) for the tiny tokenizer's vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=text_dim, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=heads, max_position_embeddings=77, projection_dim=text_dim,
        bos_token_id=0, eos_token_id=eos_token_id, pad_token_id=1,
    ))


def tiny_components(seed: int = 0, vocab_size: int = 400, base: str = "zeroscope"):
    """Random tiny components of ``base``'s real layout: ``(unet, vae, text_encoder, scheduler)``."""
    from .bases import family

    c = family(base).tiny_components(seed=seed, vocab_size=vocab_size)
    return c["unet"], c["vae"], c["text_encoder"], c["scheduler"]


def save_components(folder: str | os.PathLike, components: dict, tokenizer_dir: str | os.PathLike,
                    pipeline_class: str, tokenizer_class: str = "CLIPTokenizer") -> None:
    """Write a diffusers pipeline folder: one sub-folder per component, the tokenizer copied from
    ``tokenizer_dir``, and ``model_index.json`` naming ``pipeline_class`` and each component's class."""
    import shutil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": pipeline_class, "_diffusers_version": "0.42.1"}
    for name, module in components.items():
        module.save_pretrained(folder / name, **({"safe_serialization": True} if name != "scheduler" else {}))
        library = "transformers" if type(module).__module__.startswith("transformers") else "diffusers"
        index[name] = [library, type(module).__name__]
    if (folder / "tokenizer").exists():
        shutil.rmtree(folder / "tokenizer")
    shutil.copytree(tokenizer_dir, folder / "tokenizer")
    index["tokenizer"] = ["transformers", tokenizer_class]
    (folder / "model_index.json").write_text(json.dumps(dict(sorted(index.items())), indent=2))


def save_diffusers_folder(folder: str | os.PathLike, unet, vae, text_encoder, scheduler,
                          tokenizer_dir: str | os.PathLike) -> None:
    """Write a ZeroScope (``TextToVideoSDPipeline``) folder from its components."""
    from .bases import family

    family("zeroscope").save_folder(Path(folder), {"unet": unet, "vae": vae, "text_encoder": text_encoder,
                                                   "scheduler": scheduler}, tokenizer_dir)


def build_tiny_model(folder: str | os.PathLike, seed: int = 0, base: str = "zeroscope") -> Path:
    """Build and save a tiny random model of ``base``'s layout (a key of
    :data:`videomage_core.bases.FAMILIES`) into a new or empty folder; returns it."""
    from .bases import family

    fam = family(base)
    folder = Path(folder)
    require(not folder.exists() or (folder.is_dir() and not any(folder.iterdir())), "folder",
            f"'{folder}' exists and is not empty; the tiny model goes into a new or empty folder (it "
            "would overwrite a model there)")
    with tempfile.TemporaryDirectory() as tdir:
        vocab = fam.tiny_tokenizer(tdir) if hasattr(fam, "tiny_tokenizer") else _clip_tokenizer(tdir)
        fam.save_folder(folder, fam.tiny_components(seed=seed, vocab_size=vocab), tdir)
    # Its own defaults (videomage.json), so that a CLI run on it without --size takes seconds, not the
    # minutes of ZeroScope's 576 x 320 (an untrained model: the size shows nothing either way).
    defaults = getattr(fam, "TINY_DEFAULTS", TINY_MODEL_DEFAULTS)
    (folder / SETTINGS_FILE).write_text(json.dumps(defaults, indent=1))
    return folder
