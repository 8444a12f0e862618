"""Load AnimateDiff: an SD1.5 checkpoint from ``models/checkpoints`` and a motion module from
``models/animatediff_models`` (the files a ComfyUI user has) -> VIDEOMAGE_MODEL."""

from __future__ import annotations

from . import comfy_bridge as bridge
from .model_loader import placement_inputs
from .types import CATEGORY, MODEL


class VideoMageLoadAnimateDiff:
    DESCRIPTION = (
        "Loads AnimateDiff from your own files: an SD1.5 checkpoint (the original release or a fine-tune) "
        "and an AnimateDiff motion module (mm_sd_v15_v2, v3_sd15_mm, ...), with ComfyUI's own SD1.5 "
        "tokenizer; nothing is downloaded. Every VideoMage node works with it; its subjects and motions "
        "can be exported for core Load LoRA, embeddings and AnimateDiff-Evolved."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The AnimateDiff model (SD1.5 UNet + motion modules, SD VAE, CLIP ViT-L).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ckpt_name": (
                    sorted(bridge.model_files("checkpoints")),
                    {"tooltip": "An SD1.5 checkpoint from models/checkpoints (not SDXL or SD2)."},
                ),
                "motion_module": (
                    sorted(bridge.model_files("animatediff_models")),
                    {"tooltip": "An SD1.5 AnimateDiff motion module from models/animatediff_models."},
                ),
                **placement_inputs(),
            }
        }

    def load(self, ckpt_name, motion_module, dtype, device, keep_loaded=False):
        import torch

        from videomage_core.errors import VideoMageInputError
        from videomage_core.model import check_device, load_animatediff_files

        checkpoints, modules = bridge.model_files("checkpoints"), bridge.model_files("animatediff_models")
        if ckpt_name not in checkpoints:
            raise VideoMageInputError("ckpt_name", f"'{ckpt_name}' is not in models/checkpoints")
        if motion_module not in modules:
            raise VideoMageInputError("motion_module", f"'{motion_module}' is not in models/animatediff_models")
        tokenizer = bridge.sd1_tokenizer_dir()
        dev = bridge.default_device() if device == "auto" else str(check_device(device))
        from videomage_core.model import choose_dtype

        from .model_loader import place

        dtype, reason = choose_dtype(dev, dtype)
        with torch.inference_mode(False):  # weights must not be inference tensors (training needs them)
            model = load_animatediff_files(checkpoints[ckpt_name], modules[motion_module], tokenizer, dtype,
                                           dev if keep_loaded else "cpu")
        model = place(model, dev, keep_loaded)
        model.dtype_reason = reason
        print(f"[VideoMage] Load AnimateDiff: {model.path} in {model.dtype} on {model.device} ({model.dtype_reason})")
        return (model,)


NODE_CLASS_MAPPINGS = {"VideoMageLoadAnimateDiff": VideoMageLoadAnimateDiff}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoMageLoadAnimateDiff": "VideoMage Load AnimateDiff (checkpoint + motion module)"}
