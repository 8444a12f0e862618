"""Everything the pack uses from ComfyUI, imported lazily so the pack also works without ComfyUI.

Inside ComfyUI: ``folder_paths`` for the model / output / temp folders, ``comfy.utils.ProgressBar``
for the node's progress bar (whose hook raises on a pending Cancel), and
``comfy.model_management`` for interruption and for freeing the models ComfyUI holds.
Without ComfyUI (tests, scripts): folders come from ``VIDEOMAGE_MODELS_DIR`` /
``VIDEOMAGE_OUTPUT_DIR`` / ``VIDEOMAGE_TEMP_DIR`` (default ``./models``, ``./output``,
``./temp``), progress and interruption are no-ops.
"""

from __future__ import annotations

import os
from pathlib import Path


def _import(name: str):
    try:
        return __import__(name, fromlist=["_"])
    except Exception:  # ImportError, or a ComfyUI module failing outside a running server
        return None


def folder_paths():
    return _import("folder_paths")


def model_management():
    return _import("comfy.model_management")


def comfy_utils():
    return _import("comfy.utils")


def in_comfy() -> bool:
    return folder_paths() is not None and model_management() is not None


# ------------------------------------------------------------------ folders


def models_dir() -> Path:
    fp = folder_paths()
    if fp is not None:
        return Path(fp.models_dir)
    return Path(os.environ.get("VIDEOMAGE_MODELS_DIR", "models")).resolve()


def diffusers_dirs() -> list[Path]:
    """Every folder ComfyUI searches for diffusers models (``models/diffusers`` and extra paths)."""
    fp = folder_paths()
    if fp is not None:
        try:
            return [Path(p) for p in fp.get_folder_paths("diffusers")]
        except Exception:
            pass
    return [models_dir() / "diffusers"]


def output_dir() -> Path:
    fp = folder_paths()
    if fp is not None:
        return Path(fp.get_output_directory())
    return Path(os.environ.get("VIDEOMAGE_OUTPUT_DIR", "output")).resolve()


def temp_dir() -> Path:
    fp = folder_paths()
    if fp is not None:
        return Path(fp.get_temp_directory())
    return Path(os.environ.get("VIDEOMAGE_TEMP_DIR", "temp")).resolve()


def model_files(kind: str) -> dict[str, Path]:
    """``{name: path}`` of the files in a ComfyUI model folder kind (``checkpoints``,
    ``animatediff_models``, ...), as its pickers list them; ``models/<kind>`` when ComfyUI (or the node
    pack that registers the kind) does not know it."""
    fp = folder_paths()
    if fp is not None:
        try:
            return {n: Path(fp.get_full_path(kind, n)) for n in fp.get_filename_list(kind)}
        except Exception:  # a kind no one registered (AnimateDiff-Evolved registers its two)
            pass
    folder = models_dir() / kind
    if not folder.is_dir():
        return {}
    suffixes = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.suffix.lower() in suffixes}


def model_folder(kind: str) -> Path:
    """Where an export of ``kind`` (``loras``, ``embeddings``, ``animatediff_motion_lora``) is written:
    the first folder ComfyUI lists for it, else ``models/<kind>``."""
    fp = folder_paths()
    if fp is not None:
        try:
            return Path(fp.get_folder_paths(kind)[0])
        except Exception:
            pass
    return models_dir() / kind


def sd1_tokenizer_dir() -> Path | None:
    """ComfyUI's own SD1.5 CLIP tokenizer files (``comfy/sd1_tokenizer``); outside ComfyUI the folder
    in ``VIDEOMAGE_SD1_TOKENIZER``, else None."""
    comfy = _import("comfy")
    for root in list(getattr(comfy, "__path__", None) or []):  # a namespace package: no __file__
        folder = Path(root) / "sd1_tokenizer"
        if folder.is_dir():
            return folder
    env = os.environ.get("VIDEOMAGE_SD1_TOKENIZER")
    return Path(env) if env else None


def lora_dirs() -> list[Path]:
    """The ``loras`` folders (``models/loras``, ``<output>/loras``, extra paths); first: the output one."""
    out = [output_dir() / "loras"]
    fp = folder_paths()
    if fp is not None:
        try:
            out += [Path(p) for p in fp.get_folder_paths("loras")]
        except Exception:
            pass
    else:
        out.append(models_dir() / "loras")
    seen, unique = set(), []
    for p in out:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


# ------------------------------------------------------------------ device / memory


def default_device() -> str:
    mm = model_management()
    if mm is not None:
        try:
            return str(mm.get_torch_device())
        except Exception:
            pass
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def free_memory() -> None:
    """Unload the models ComfyUI keeps on the device before we train or sample."""
    mm = model_management()
    if mm is None:
        return
    try:
        mm.unload_all_models()
        mm.soft_empty_cache()
    except Exception:
        pass


# ------------------------------------------------------------------ progress / cancel


def empty_cache() -> None:
    """Return freed GPU memory to the driver (ComfyUI's soft_empty_cache, else torch's)."""
    mm = model_management()
    try:
        if mm is not None:
            mm.soft_empty_cache()
            return
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def interrupted() -> bool:
    """True while a Cancel is pending (does not clear it)."""
    mm = model_management()
    if mm is None:
        return False
    try:
        return bool(mm.processing_interrupted())
    except Exception:
        return False


def raise_if_interrupted() -> None:
    """Raise ComfyUI's InterruptProcessingException if a Cancel is pending (clears it)."""
    mm = model_management()
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


class Progress:
    """A ComfyUI progress bar over several engine stages; no-op without ComfyUI."""

    def __init__(self, stages: dict[str, int]):
        self.offsets, total = {}, 0
        for name, count in stages.items():
            self.offsets[name] = total
            total += int(count)
        self.total = max(1, total)
        utils = comfy_utils()
        self.bar = None
        if utils is not None:
            try:
                self.bar = utils.ProgressBar(self.total)
            except Exception:
                self.bar = None

    def update(self, stage: str, step: int, total: int, preview_pil=None) -> None:
        if self.bar is None:
            return
        if interrupted():
            # Leave the pending Cancel to the engine's cancel check, which checkpoints and stops.
            return
        if stage in self.offsets:
            value, grand = self.offsets[stage] + step, self.total
        else:
            value, grand = step, total
        preview = ("JPEG", preview_pil, 512) if preview_pil is not None else None
        self.bar.update_absolute(value, grand, preview)
