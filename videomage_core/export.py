"""Export a trained subject or motion in the formats ComfyUI's own nodes load, for the bases that have
them (each family's ``export_files``; ZeroScope has none: ComfyUI cannot load ZeroScope natively).

Files go into ComfyUI's model folders by kind (``loras``, ``embeddings``, ``animatediff_motion_lora``),
each written atomically and never over an existing file (a numbered name instead).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .atomic import atomic_write_new
from .errors import require

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")


def check_export_name(name: str, input_name: str = "name") -> str:
    require(isinstance(name, str) and NAME.fullmatch(name or "") is not None, input_name,
            f"expected a file name of letters, digits, '_' or '-' (at most 64), got {name!r}")
    return name


def exportable(artifact) -> bool:
    from .bases import family

    return hasattr(family(artifact.base), "export_files")


def export_artifact(artifact, name: str, folder_of: Callable[[str], Path]) -> list[Path]:
    """Write ``artifact``'s exports; ``folder_of(kind)`` is the folder of a ComfyUI models kind
    (``loras``, ``embeddings``, ``animatediff_motion_lora``). Returns the paths written."""
    from safetensors.torch import save_file

    from .bases import family

    check_export_name(name)
    fam = family(artifact.base)
    require(exportable(artifact), "artifact", f"{artifact!r} was trained on {fam.TITLE}, which ComfyUI's own "
            "nodes cannot load, so it has no export; train it on an AnimateDiff base to use it in other graphs")
    written = []
    for kind, filename, tensors, meta in fam.export_files(artifact, name):
        folder = Path(folder_of(kind))
        meta = {k: str(v) for k, v in meta.items()}
        written.append(atomic_write_new(folder / filename,
                                        lambda tmp, t=tensors, m=meta: save_file(t, tmp, metadata=m)))
    return written


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


def usage(paths: list[Path]) -> list[str]:
    """How to use each exported file in ComfyUI, one line each."""
    lines = []
    for p in paths:
        kind = p.parent.name
        if kind == "embeddings":
            lines.append(f"{p}: write embedding:{p.stem} in CLIP Text Encode")
        elif kind == "loras" and _metadata(p).get("base") == "wan":
            words = _metadata(p).get("superclasses", "")
            lines.append(f"{p}: LoraLoaderModelOnly (strength 1.0 = as trained) on the Wan model from Load "
                         f"Diffusion Model; ComfyUI's umT5 reads no embeddings, so write the superclass word "
                         f"({words}) where the token stood")
        elif kind == "loras":
            lines.append(f"{p}: Load LoRA (strength 1.0 = as trained) on the SD1.5 checkpoint it was trained on")
        else:
            lines.append(f"{p}: AnimateDiff-Evolved's Load AnimateDiff LoRA (strength 1.0 = as trained)")
    return lines
