"""A small on-disk cache of generated tensors (prior videos, fusion videos), keyed by their recipe."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch

from .artifacts import atomic_save_safetensors


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """A content hash of named tensors (identifies a trained LoRA in cache recipes)."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        h.update(key.encode())
        h.update(tensors[key].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def recipe_key(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_tensors(cache_dir: str | Path | None, name: str, recipe: dict,
                   produce: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Load ``<cache_dir>/<name>_<key>.safetensors`` if present, else produce, save and return it."""
    if cache_dir is None:
        return produce()
    from safetensors.torch import load_file

    path = Path(cache_dir) / f"{name}_{recipe_key(recipe)}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))
        except Exception:  # a damaged cache entry is regenerated
            path.unlink(missing_ok=True)
    tensors = produce()
    atomic_save_safetensors(tensors, path, {"recipe": json.dumps(recipe, default=str)})
    return tensors
