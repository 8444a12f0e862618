"""Load Wan: ComfyUI's own three Wan files (the diffusion model from ``models/diffusion_models``, umT5-XXL
from ``models/text_encoders``, the Wan VAE from ``models/vae``) -> VIDEOMAGE_MODEL."""

from __future__ import annotations

from . import comfy_bridge as bridge
from .model_loader import placement_inputs
from .types import CATEGORY, MODEL

FILES = (("unet_name", "diffusion_models"), ("clip_name", "text_encoders"), ("vae_name", "vae"))


class VideoMageLoadWan:
    DESCRIPTION = (
        "Loads Wan 2.1 text-to-video from the files ComfyUI's own Wan nodes use: the diffusion model "
        "(wan2.1_t2v_1.3B / 14B, fp16, bf16 or fp8), umt5_xxl (its tokenizer is inside the file) and "
        "wan_2.1_vae; nothing is downloaded. Every VideoMage node works with it; its LoRAs export for "
        "ComfyUI's Load LoRA on the native Wan model."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The Wan model (DiT, umT5-XXL, Wan VAE, UniPC flow sampler).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        tips = {"unet_name": "A Wan 2.1 text-to-video diffusion model from models/diffusion_models.",
                "clip_name": "umT5-XXL from models/text_encoders (umt5_xxl_fp16 or fp8_e4m3fn_scaled).",
                "vae_name": "The Wan 2.1 VAE from models/vae (wan_2.1_vae.safetensors)."}
        return {"required": {
            **{name: (sorted(bridge.model_files(kind)), {"tooltip": tips[name]}) for name, kind in FILES},
            **placement_inputs(),
        }}

    def load(self, unet_name, clip_name, vae_name, dtype, device, keep_loaded=False):
        import torch

        from videomage_core.errors import VideoMageInputError
        from videomage_core.model import check_device, choose_dtype, load_wan_files

        from .model_loader import place

        paths = []
        for (name, kind), value in zip(FILES, (unet_name, clip_name, vae_name)):
            files = bridge.model_files(kind)
            if value not in files:
                raise VideoMageInputError(name, f"'{value}' is not in models/{kind}")
            paths.append(files[value])
        dev = bridge.default_device() if device == "auto" else str(check_device(device))
        dtype, reason = choose_dtype(dev, dtype)
        with torch.inference_mode(False):  # weights must not be inference tensors (training needs them)
            model = load_wan_files(*paths, dtype=dtype, device=dev if keep_loaded else "cpu")
        model = place(model, dev, keep_loaded)
        model.dtype_reason = reason
        print(f"[VideoMage] Load Wan: {model.path} in {model.dtype} on {model.device} ({model.dtype_reason})")
        return (model,)


NODE_CLASS_MAPPINGS = {"VideoMageLoadWan": VideoMageLoadWan}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoMageLoadWan": "VideoMage Load Wan (diffusion model + umT5 + VAE)"}
