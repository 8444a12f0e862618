"""Subject / motion artifacts: LoRA + token embeddings + metadata, as one safetensors file.

Keys: ``unet.<module>.lora_A.weight`` / ``lora_B`` (diffusers' pipeline-level LoRA names),
``text_encoder.token.<i>`` (embedding of the i-th token in the metadata), and for motions
``reference.latents`` (the reference clip's latents, for the noise prior). Metadata:
``videomage`` (JSON: kind, rank, alpha, scope, tokens, superclasses, base family and fingerprint,
training arguments, losses, package version) and ``lora_config`` (peft's LoraConfig fields).
Files are written atomically (a temporary file in the same folder, then renamed).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from .atomic import atomic_write
from .errors import IncompatibleArtifactError
from .lora import load_lora_state
from .tokens import add_token

KINDS = ("subject", "motion")


@dataclass(eq=False)
class LoraArtifact:
    """A trained subject (one token, or several after fusion) or motion."""

    kind: str
    scope: str
    rank: int
    alpha: float
    lora: dict[str, torch.Tensor]
    tokens: dict[str, torch.Tensor]
    superclasses: dict[str, str]
    base_fingerprint: str
    train_args: dict = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # motion: prompt, appearance prompt; fusion: sources
    reference_latents: torch.Tensor | None = None
    version: str = __version__
    base: str = "zeroscope"  # the base family (videomage_core.bases) it was trained on
    coverage: str = "attention"  # the layers its LoRA covers (videomage_core.bases.COVERAGES)

    def __repr__(self) -> str:
        toks = ", ".join(self.tokens) or "-"
        return (f"VideoMage{self.kind.title()}({toks}; {self.scope} LoRA rank {self.rank}, "
                f"{len(self.losses)} steps, base {self.base_fingerprint})")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def metadata(self) -> dict:
        return {"kind": self.kind, "scope": self.scope, "rank": self.rank, "alpha": self.alpha,
                "tokens": list(self.tokens), "superclasses": self.superclasses,
                "base_fingerprint": self.base_fingerprint, "train_args": self.train_args,
                "losses": [round(float(x), 6) for x in self.losses], "info": self.info,
                "version": self.version, "base": self.base, "coverage": self.coverage}


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                            metadata: dict[str, str]) -> Path:
    """Write a safetensors file atomically: readers see the old file or the whole new one."""
    from safetensors.torch import save_file

    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata=metadata))


def save_artifact(artifact: LoraArtifact, path: str | os.PathLike) -> Path:
    tensors = {f"unet.{k}": v for k, v in artifact.lora.items()}
    for i, emb in enumerate(artifact.tokens.values()):
        tensors[f"text_encoder.token.{i}"] = emb.float()
    if artifact.reference_latents is not None:
        tensors["reference.latents"] = artifact.reference_latents.float()
    from .bases import family
    from .lora import family_targets

    targets = family_targets(family(artifact.base), artifact.scope, artifact.coverage)
    lora_config = {"r": artifact.rank, "lora_alpha": artifact.alpha, "target_modules": targets, "lora_dropout": 0.0}
    meta = {"format": "pt", "videomage": json.dumps(artifact.metadata()),
            "lora_config": json.dumps(lora_config)}
    return atomic_save_safetensors(tensors, path, meta)


def load_artifact(path: str | os.PathLike, expected_kind: str | None = None,
                  input_name: str = "artifact") -> LoraArtifact:
    """Read a VideoMage file; refuse what is not one with a message saying why."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise IncompatibleArtifactError(f"{input_name}: no file at '{path}'")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises SafetensorError / OSError on bad files
        raise IncompatibleArtifactError(f"{input_name}: '{path.name}' is not a readable safetensors "
                                        f"file (truncated or another format): {exc}") from exc
    if "videomage" not in meta:
        raise IncompatibleArtifactError(f"{input_name}: '{path.name}' is a safetensors file but not a "
                                        "VideoMage subject/motion file (no 'videomage' metadata)")
    try:
        info = json.loads(meta["videomage"])
        kind = info["kind"]
        if expected_kind and kind != expected_kind:
            raise IncompatibleArtifactError(f"{input_name}: '{path.name}' holds a {kind}, "
                                            f"expected a {expected_kind}")
        lora = {k[len("unet."):]: v for k, v in tensors.items() if k.startswith("unet.")}
        tokens = {tok: tensors[f"text_encoder.token.{i}"] for i, tok in enumerate(info["tokens"])}
        return LoraArtifact(kind=kind, scope=info["scope"], rank=int(info["rank"]),
                            alpha=float(info["alpha"]), lora=lora, tokens=tokens,
                            superclasses=dict(info["superclasses"]),
                            base_fingerprint=info["base_fingerprint"], train_args=info["train_args"],
                            losses=list(info["losses"]), info=info.get("info", {}),
                            reference_latents=tensors.get("reference.latents"), version=info["version"],
                            base=info.get("base", "zeroscope"),  # files before the base interface: ZeroScope
                            coverage=info.get("coverage", "attention"))  # files before coverages: attention
    except IncompatibleArtifactError:  # the kind check above (a ValueError too)
        raise
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise IncompatibleArtifactError(f"{input_name}: '{path.name}' has damaged VideoMage metadata or "
                                        f"misses a tensor ({type(exc).__name__}: {exc})") from exc


def check_compatible(model, artifact: LoraArtifact, input_name: str = "artifact") -> None:
    if artifact.base_fingerprint != model.fingerprint:
        raise IncompatibleArtifactError(
            f"{input_name}: {artifact!r} was trained on another base model (fingerprint "
            f"{artifact.base_fingerprint}; the loaded model is {model.fingerprint}, {model.path}). "
            "Train it again on this model.")


def apply_artifact(model, artifact: LoraArtifact, adapter_name: str, input_name: str = "artifact") -> None:
    """Install the artifact's tokens and its LoRA as adapter ``adapter_name`` (not yet active alone)."""
    check_compatible(model, artifact, input_name)
    for token, emb in artifact.tokens.items():
        add_token(model, token, embedding=emb)
    load_lora_state(model, adapter_name, artifact.lora, artifact.scope, artifact.rank, artifact.alpha,
                    artifact.coverage)
