"""Load Model: a ZeroScope-layout diffusers folder from ``models/diffusers`` -> VIDEOMAGE_MODEL."""

from __future__ import annotations

import os
from pathlib import Path

from . import comfy_bridge as bridge
from .common import check_spec, first_error
from .types import CATEGORY, MODEL

# Built-in models listed as if they were in models/diffusers: name -> folder. Empty by default; a
# later release adds a pretrained ShapesWorld model through `videomage_core.pretrained`
# (a module with `builtin_model_folders() -> {name: folder}`), or code may register one here.
BUILTIN_MODEL_FOLDERS: dict[str, Path] = {}


def register_builtin_model(name: str, folder) -> None:
    BUILTIN_MODEL_FOLDERS[name] = Path(folder)


def builtin_models() -> dict[str, Path]:
    found = dict(BUILTIN_MODEL_FOLDERS)
    try:
        from videomage_core import pretrained  # type: ignore[attr-defined]
    except ImportError:
        return found
    try:
        found.update({k: Path(v) for k, v in pretrained.builtin_model_folders().items()})
    except Exception as exc:  # a broken built-in must not hide the user's models
        print(f"[VideoMage] built-in models unavailable: {exc}")
    return found


def available_models() -> dict[str, Path]:
    """Every diffusers folder (one with model_index.json) under the diffusers model paths, up to
    two levels deep, by its '/'-separated relative name; built-ins after the user's folders."""
    models: dict[str, Path] = {}
    for base in bridge.diffusers_dirs():
        if not base.is_dir():
            continue
        for root, dirs, files in os.walk(base, followlinks=True):
            depth = len(Path(root).relative_to(base).parts)
            if "model_index.json" in files and depth > 0:
                models.setdefault(Path(root).relative_to(base).as_posix(), Path(root))
                dirs[:] = []
            elif depth >= 2:
                dirs[:] = []
            else:
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name, folder in builtin_models().items():
        models.setdefault(name, folder)
    return models


def model_error(model_name: str) -> str | None:
    if model_name in available_models():
        return None
    where = ", ".join(str(p) for p in bridge.diffusers_dirs())
    return (
        f"model_name: no diffusers model '{model_name}' in {where}. Put the ZeroScope v2 576w "
        f"diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) "
        f"at models/diffusers/{model_name}"
    )


class VideoMageLoadModel:
    DESCRIPTION = (
        "Loads a ZeroScope / ModelScope-layout text-to-video model (a diffusers folder in "
        "models/diffusers) for the VideoMage nodes. Nothing is downloaded."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The base text-to-video model; every VideoMage node takes it.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": (
                    sorted(available_models()),
                    {"tooltip": "A diffusers folder under models/diffusers (e.g. zeroscope_v2_576w)."},
                ),
                "dtype": (
                    ["auto", "fp32", "fp16", "bf16"],
                    {
                        "default": "auto",
                        "tooltip": "Weights precision. auto: fp16 on a GPU, fp32 on the CPU. "
                        "The VAE stays fp32 with fp16.",
                    },
                ),
                "device": (
                    ["auto", "cpu", "cuda"],
                    {"default": "auto", "tooltip": "Where the model runs. auto: ComfyUI's device."},
                ),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model_name, device):
        err = None
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                err = "device: 'cuda' was chosen but no CUDA device is available; choose auto or cpu"
        return first_error(check_spec(cls, "device", device), model_error(model_name), err)

    def load(self, model_name, dtype, device):
        import torch

        from videomage_core.errors import VideoMageInputError
        from videomage_core.model import load_model

        folder = available_models().get(model_name)
        if folder is None:
            raise VideoMageInputError("model_name", model_error(model_name).split(": ", 1)[1])
        dev = bridge.default_device() if device == "auto" else device
        if dtype == "auto":
            dtype = "fp16" if str(dev).startswith("cuda") else "fp32"
        with torch.inference_mode(False):  # weights must not be inference tensors (training needs them)
            return (load_model(folder, dtype=dtype, device=dev),)


NODE_CLASS_MAPPINGS = {"VideoMageLoadModel": VideoMageLoadModel}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoMageLoadModel": "VideoMage Load Model"}
