"""Tiny random-weight CLIP and DINO folders for tests and the offline demo.

No pretrained CLIP or DINO weights can be downloaded here (see `shared/diffusers.md`), yet the
evaluation metrics of `shared/method.md` section 5 need both encoders. These helpers write small
random models in the layout the real ones use (`save_pretrained` folders with `config.json`,
`model.safetensors`, `preprocessor_config.json` and, for CLIP, a CLIP byte-level BPE tokenizer),
so `videomage_core.metrics.load_clip` / `load_dino` read them through the same code path as
`openai/clip-vit-base-patch32` or `facebook/dino-vits16` folders.
Their scores are meaningless as quality numbers; they only exercise the pipeline.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import torch
from tokenizers import pre_tokenizers
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, ViTConfig, ViTModel

from .metrics import IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

__all__ = ["build_tiny_clip", "build_tiny_dino", "build_tiny_clip_tokenizer", "TINY_IMAGE_SIZE"]

TINY_IMAGE_SIZE = 32

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
# Words the BPE merges are learned from: prompts of the kind the VideoMage benchmark uses.
_CORPUS = (
    "a photo of a dog and a cat playing with a ball on the grass; a teddy bear riding a bicycle "
    "in the park; two people dancing together; a man running on the beach at sunset; a corgi and "
    "a panda are shaking hands in front of the eiffel tower; the subjects are hugging each other"
)
_NUM_MERGES = 48


def _learn_merges(text: str, num_merges: int) -> list[tuple[str, str]]:
    """Byte-pair merges over the words of `text` in CLIP's format (a word's last symbol ends in
    `</w>`). Deterministic: ties go to the lexicographically smallest pair (the `tokenizers`
    trainer numbers symbols in hash-map order, which changes from call to call)."""
    words = Counter(text.lower().replace(";", " ").split())
    seqs = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in words}
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for w, seq in seqs.items():
            for pair in zip(seq, seq[1:]):
                pairs[pair] += words[w]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for w, seq in seqs.items():
            out: list[str] = []
            i = 0
            while i < len(seq):
                if seq[i:i + 2] == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[w] = tuple(out)
    return merges


def build_tiny_clip_tokenizer(folder: str | os.PathLike, corpus: str = _CORPUS,
                              num_merges: int = _NUM_MERGES) -> CLIPTokenizer:
    """Write a small CLIP byte-level BPE tokenizer to `folder` and return it loaded.

    It has the full 512-symbol base alphabet of real CLIP (every byte, alone and word-final), so
    no text maps to the unknown token, which CLIP shares with end-of-text (the token CLIP's text
    pooling looks for), plus 48 merges learned from a few prompts. Deterministic, byte for byte.
    Written as `vocab.json` + `merges.txt` (a real CLIP folder's files), then loaded with
    `CLIPTokenizer.from_pretrained`: in transformers 5 `CLIPTokenizer(vocab_file=...,
    merges_file=...)` silently builds a 3-token tokenizer. `save_pretrained` adds
    `tokenizer.json`, so `CLIPTokenizer`, `CLIPTokenizerFast` and `AutoTokenizer` all load it.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    base = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for symbol in base + [b + "</w>" for b in base]:
        vocab[symbol] = len(vocab)
    merges = _learn_merges(corpus, num_merges)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[_BOS] = len(vocab)
    vocab[_EOS] = len(vocab)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": _BOS,
              "eos_token": _EOS, "unk_token": _EOS, "pad_token": _EOS}
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    if len(tokenizer) != len(vocab):  # the transformers 5 trap named above
        raise RuntimeError(f"tiny CLIP tokenizer has {len(tokenizer)} tokens, expected {len(vocab)}")
    tokenizer.save_pretrained(folder)
    return tokenizer


def _write_preprocessor_config(folder: str, config: dict) -> None:
    with open(os.path.join(folder, "preprocessor_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)


def build_tiny_clip(folder: str | os.PathLike, seed: int = 0) -> str:
    """Write a tiny random `CLIPModel` (2-layer text and vision towers, 32x32 images, patch 8,
    projection 16) with tokenizer and image processor config to `folder`; returns the path.

    Same `seed` gives identical weights (global RNG state is left untouched)."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    tokenizer = build_tiny_clip_tokenizer(folder)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=TINY_IMAGE_SIZE,
            patch_size=8,
        ),
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.save_pretrained(folder, safe_serialization=True)
    _write_preprocessor_config(
        folder,
        {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": TINY_IMAGE_SIZE},
            "resample": 3,
            "do_center_crop": True,
            "crop_size": {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(OPENAI_CLIP_MEAN),
            "image_std": list(OPENAI_CLIP_STD),
            "do_convert_rgb": True,
        },
    )
    return folder


def build_tiny_dino(folder: str | os.PathLike, seed: int = 0) -> str:
    """Write a tiny random DINO-style `ViTModel` (facebook/dino-vits16 layout: no pooler, CLS
    token; 2 layers, hidden 32, 32x32 images, patch 8) and its image processor config to
    `folder`; returns the path. Same `seed` gives identical weights."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=TINY_IMAGE_SIZE,
        patch_size=8,
        qkv_bias=True,
        layer_norm_eps=1e-6,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ViTModel(config, add_pooling_layer=False)
    model.save_pretrained(folder, safe_serialization=True)
    _write_preprocessor_config(
        folder,
        {
            "image_processor_type": "ViTImageProcessor",
            "do_resize": True,
            "size": {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
            "resample": 2,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(IMAGENET_MEAN),
            "image_std": list(IMAGENET_STD),
        },
    )
    return folder
