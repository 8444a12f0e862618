"""Load Model: a diffusers model folder (ZeroScope or AnimateDiff) from ``models/diffusers``, or the built-in model -> VIDEOMAGE_MODEL."""

from __future__ import annotations

import os
from pathlib import Path

from . import comfy_bridge as bridge
from .common import first_error
from .types import CATEGORY, MODEL

# Built-in models listed as if they were in models/diffusers: name -> folder. The pretrained
# ShapesWorld model comes from `videomage_core.pretrained` (`builtin_model_folders()`, listed as
# `shapesworld_builtin`); code (tests) may register more here.
BUILTIN_MODEL_FOLDERS: dict[str, Path] = {}
BUILTIN_NAME = "shapesworld_builtin"  # videomage_core.pretrained.BUILTIN_NAME, without importing it here


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


def default_model(models=None) -> str | None:
    """The combo's default: the built-in ShapesWorld model when present (it runs on a CPU with
    nothing downloaded), else ComfyUI's usual first entry."""
    models = available_models() if models is None else models
    return BUILTIN_NAME if BUILTIN_NAME in models else None


def model_error(model_name: str) -> str | None:
    models = available_models()
    if model_name in models:
        return None
    where = ", ".join(str(p) for p in bridge.diffusers_dirs())
    if BUILTIN_NAME in models:
        builtin = (
            f" Or choose the built-in '{BUILTIN_NAME}' (a small ShapesWorld model, 32x32 px, runs on a "
            "CPU; the workflow videomage_quick_start_shapesworld uses it)."
        )
    else:
        builtin = (
            f" The built-in '{BUILTIN_NAME}' is missing too (videomage_core/models/shapesworld/ was not "
            "installed with the pack; reinstall it from the repository)."
        )
    return (
        f"model_name: no diffusers model '{model_name}' in {where}. Put the ZeroScope v2 576w "
        f"diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) "
        f"at models/diffusers/{model_name}.{builtin}"
    )


def place(model, device: str, keep_loaded: bool):
    """A loaded model that computes on ``device``: kept there, or (``keep_loaded`` off) loaded on the
    CPU and marked offloaded, so it takes GPU memory only while a VideoMage node runs."""
    import torch

    model.keep_loaded = bool(keep_loaded)
    if not keep_loaded and torch.device(device).type != "cpu":
        model.device, model.offloaded = torch.device(device), True
    return model


def placement_inputs() -> dict:
    """The loaders' dtype, device and keep_loaded inputs (Load Model, Load AnimateDiff)."""
    return {
        "dtype": (
            ["auto", "fp32", "fp16", "bf16"],
            {
                "default": "auto",
                "tooltip": "Weights precision. auto: bf16 on a GPU that computes it natively, "
                "else fp16 (training then scales its loss), fp32 on the CPU. The VAE stays "
                "fp32 with fp16. The choice and why is printed to the console.",
            },
        ),
        "device": (
            ["auto", "cpu", "cuda"],
            {"default": "auto", "tooltip": "Where the model runs. auto: ComfyUI's device."},
        ),
        "keep_loaded": (
            "BOOLEAN",
            {"default": False, "tooltip": "Keep the weights on the GPU between VideoMage nodes (faster "
             "when several run in a row). Off: they wait on the CPU and go to the GPU only while a "
             "VideoMage node runs, so ComfyUI's own nodes (a KSampler after ours) find the memory free."},
        ),
    }


class VideoMageLoadModel:
    DESCRIPTION = (
        "Loads a ZeroScope / ModelScope-layout text-to-video model (a diffusers folder in "
        "models/diffusers) for the VideoMage nodes. Nothing is downloaded. The default is the "
        f"built-in '{BUILTIN_NAME}' (a small ShapesWorld model shipped with the pack: 8 frames of "
        "32x32 px, CFG 3), so a new node works on a CPU before ZeroScope is downloaded; choose "
        "zeroscope_v2_576w for real videos."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The base text-to-video model; every VideoMage node takes it.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        models = available_models()
        options = {
            "tooltip": "A diffusers folder under models/diffusers (e.g. zeroscope_v2_576w), or the "
            f"built-in '{BUILTIN_NAME}' (the default: a small ShapesWorld model, 8 frames of 32x32 px, "
            "CFG 3, that runs on a CPU with nothing downloaded; see videomage_core/models/shapesworld/"
            "MODEL_CARD.md)."
        }
        default = default_model(models)
        if default:
            options["default"] = default
        return {
            "required": {
                "model_name": (sorted(models), options),
                **placement_inputs(),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):
        return first_error(model_error(model_name))

    def load(self, model_name, dtype, device, keep_loaded=False):
        import torch

        from videomage_core.errors import VideoMageInputError
        from videomage_core.model import choose_dtype, load_model

        from videomage_core.model import check_device

        folder = available_models().get(model_name)
        if folder is None:
            raise VideoMageInputError("model_name", model_error(model_name).split(": ", 1)[1])
        dev = bridge.default_device() if device == "auto" else str(check_device(device))
        dtype, reason = choose_dtype(dev, dtype)
        with torch.inference_mode(False):  # weights must not be inference tensors (training needs them)
            model = place(load_model(folder, dtype=dtype, device=dev if keep_loaded else "cpu"), dev, keep_loaded)
        model.dtype_reason = reason
        print(f"[VideoMage] Load Model: {model_name} in {dtype} on {model.device} ({reason})")
        return (model,)


NODE_CLASS_MAPPINGS = {"VideoMageLoadModel": VideoMageLoadModel}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoMageLoadModel": "VideoMage Load Model"}
