"""AnimateDiff from the files ComfyUI users have: an SD1.5 single-file checkpoint (``models/checkpoints``)
and an AnimateDiff motion module (``models/animatediff_models``: mm_sd_v15_v2, v3_sd15_mm, ...), plus a
CLIP tokenizer from a local folder (ComfyUI's own ``comfy/sd1_tokenizer``, or one the user names).
Nothing is downloaded; ``.ckpt`` / ``.pt`` only through ``torch.load(weights_only=True)``.

The motion module's original keys (``...motion_modules.N.temporal_transformer.transformer_blocks.0.
attention_blocks.0.to_q.weight``) are converted by diffusers' own converter into a ``MotionAdapter``
whose config is read from the shapes (channels, modules per block, the middle block, positions).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import VideoMageInputError
from .sd15_files import from_ldm, read_state_dict, sd15_config, to_ldm

PE = "pos_encoder.pe"


def check_motion_module(sd: dict, name: str, input_name: str) -> None:
    """One clear error unless ``sd`` is an SD1.5 AnimateDiff motion module."""
    def refuse(why):
        raise VideoMageInputError(input_name, f"'{name}' {why}; pick an SD1.5 AnimateDiff motion module "
                                  "(mm_sd_v15_v2, v3_sd15_mm, ...) from models/animatediff_models")

    keys = list(sd)
    if any("_lora." in k or "lora_" in k for k in keys):
        refuse("is a LoRA (a motion LoRA belongs in models/animatediff_motion_lora), not a motion module")
    if any(k.startswith("model.diffusion_model.") for k in keys):
        refuse("is a Stable Diffusion checkpoint, not a motion module")
    if not any(".motion_modules." in k and k.endswith(PE) for k in keys):
        refuse("is not a motion module (no motion_modules.*.pos_encoder.pe)")
    top = max(int(m.group(1)) for k in keys for m in [re.match(r"down_blocks\.(\d+)\.motion_modules", k)] if m)
    if top != 3:
        refuse(f"has motion modules in {top + 1} down blocks (an SDXL motion module has 3, SD1.5 4)")


def adapter_config(sd: dict) -> dict:
    """``MotionAdapter`` config from an original motion module's keys and shapes (heads and norm groups
    are AnimateDiff's 8 and 32, which the shapes cannot tell)."""
    def norm_width(prefix):
        return sd[f"{prefix}.motion_modules.0.temporal_transformer.norm.weight"].shape[0]

    per_block = len({m.group(1) for k in sd for m in [re.match(r"down_blocks\.0\.motion_modules\.(\d+)\.", k)] if m})
    pe = next(v for k, v in sd.items() if k.endswith(PE))
    return {"block_out_channels": tuple(norm_width(f"down_blocks.{i}") for i in range(4)),
            "motion_layers_per_block": per_block, "motion_num_attention_heads": 8, "motion_norm_num_groups": 32,
            "motion_max_seq_length": int(pe.shape[1]),
            "use_motion_mid_block": any(k.startswith("mid_block.motion_modules.") for k in sd)}


def motion_adapter_from_file(path, input_name: str = "motion_module"):
    """A diffusers ``MotionAdapter`` from an original motion module file (safetensors or weights-only torch)."""
    from diffusers import MotionAdapter
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers

    path = Path(path)
    sd = read_state_dict(path, input_name)
    check_motion_module(sd, path.name, input_name)
    adapter = MotionAdapter(**adapter_config(sd))
    missing, unexpected = adapter.load_state_dict(convert_animatediff_checkpoint_to_diffusers(sd), strict=False)
    missing = [k for k in missing if not k.endswith("pos_embed.pe")]  # diffusers computes its own
    if missing or unexpected:
        raise VideoMageInputError(input_name, f"'{path.name}' does not fit an AnimateDiff motion adapter: "
                                  f"missing {missing[:3]} ({len(missing)}), unexpected {unexpected[:3]} "
                                  f"({len(unexpected)})")
    return adapter


def motion_module_to_original(adapter) -> dict:
    """A ``MotionAdapter``'s weights in the original motion-module key layout (tiny test files)."""
    out = {}
    for key, value in adapter.state_dict().items():
        m = re.match(r"(.*\.motion_modules\.\d+)\.(.*)", key)
        prefix, rest = m.group(1), m.group(2)
        if rest.endswith("pos_embed.pe"):
            block = rest[: -len("pos_embed.pe")]
            for a in (0, 1):
                out[f"{prefix}.temporal_transformer.{block}attention_blocks.{a}.{PE}"] = value.clone()
            continue
        rest = (rest.replace(".attn1.", ".attention_blocks.0.").replace(".attn2.", ".attention_blocks.1.")
                .replace(".norm1.", ".norms.0.").replace(".norm2.", ".norms.1.").replace(".norm3.", ".ff_norm."))
        out[f"{prefix}.temporal_transformer.{rest}"] = value
    return {k: v.contiguous() for k, v in out.items()}


def check_tokenizer_folder(folder, input_name: str = "tokenizer") -> Path:
    folder = Path(folder) if folder else None
    if folder is None or not (folder / "vocab.json").is_file() or not (folder / "merges.txt").is_file():
        raise VideoMageInputError(input_name, f"'{folder}' is not a CLIP tokenizer folder (vocab.json and "
                                  "merges.txt): inside ComfyUI its comfy/sd1_tokenizer is used; headless, name "
                                  "one (an SD1.5 diffusers folder's tokenizer/ works)")
    return folder


def load_single_files(checkpoint, motion_module, tokenizer_dir, torch_dtype: torch.dtype) -> dict:
    """The AnimateDiff components from an SD1.5 checkpoint file, a motion module file and a tokenizer folder."""
    from . import quiet_diffusers

    with quiet_diffusers():
        return _load_single_files(checkpoint, motion_module, tokenizer_dir, torch_dtype)


def _load_single_files(checkpoint, motion_module, tokenizer_dir, torch_dtype: torch.dtype) -> dict:
    from diffusers import DDIMScheduler
    from transformers import CLIPTokenizer

    from .animatediff import motion_unet

    tok = CLIPTokenizer.from_pretrained(check_tokenizer_folder(tokenizer_dir), local_files_only=True)
    ckpt = Path(checkpoint)
    parts = from_ldm(read_state_dict(ckpt, "checkpoint_file"), ckpt.name, "checkpoint_file", torch.float32)
    adapter = motion_adapter_from_file(motion_module)
    unet_channels = tuple(parts["unet"].config.block_out_channels)
    if tuple(adapter.config.block_out_channels) != unet_channels:
        raise VideoMageInputError("motion_module", f"'{Path(motion_module).name}' has channels "
                                  f"{tuple(adapter.config.block_out_channels)}, the checkpoint's UNet {unet_channels}")
    if parts["text_encoder"].get_input_embeddings().weight.shape[0] < len(tok):
        raise VideoMageInputError("tokenizer", f"the tokenizer has {len(tok)} tokens, the checkpoint's text "
                                  f"encoder {parts['text_encoder'].get_input_embeddings().weight.shape[0]}")
    # the text encoder's 77 positions: ComfyUI's own tokenizer files say 8192 (ComfyUI chunks long prompts)
    tok.model_max_length = parts["text_encoder"].config.max_position_embeddings
    unet = motion_unet(parts["unet"], adapter).to(torch_dtype)
    vae_dtype = torch.float32 if torch_dtype == torch.float16 else torch_dtype
    return {"unet": unet, "vae": parts["vae"].to(vae_dtype), "text_encoder": parts["text_encoder"].to(torch_dtype),
            "tokenizer": tok, "scheduler": DDIMScheduler(**sd15_config()["scheduler"])}


def save_single_files(folder, components: dict, tokenizer_dir) -> dict:
    """Write tiny single files in the original layouts (what a ComfyUI user has): ``checkpoint.safetensors``
    (SD1.5 LDM keys), ``motion_module.safetensors`` and the same as ``motion_module.ckpt`` (a plain
    tensor dict saved by ``torch.save``), and ``tokenizer/``. Returns their paths."""
    import shutil

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"checkpoint": folder / "checkpoint.safetensors", "motion_module": folder / "motion_module.safetensors",
             "motion_module_ckpt": folder / "motion_module.ckpt", "tokenizer": folder / "tokenizer"}
    save_file(to_ldm(components["unet"], components["vae"], components["text_encoder"]), str(paths["checkpoint"]))
    mm = motion_module_to_original(components["motion_adapter"])
    save_file(mm, str(paths["motion_module"]))
    torch.save(mm, str(paths["motion_module_ckpt"]))
    shutil.copytree(tokenizer_dir, paths["tokenizer"], dirs_exist_ok=True)
    return paths


def build_tiny_single_files(folder, seed: int = 0) -> dict:
    """A tiny random AnimateDiff as the single files a ComfyUI user has (:func:`save_single_files`):
    the same weights as ``build_tiny_model(..., base="animatediff", seed=seed)``'s folder."""
    import tempfile

    from transformers import CLIPTokenizer

    from ..tiny import build_tiny_tokenizer
    from .animatediff import tiny_components

    with tempfile.TemporaryDirectory() as tok:
        build_tiny_tokenizer(tok)
        components = tiny_components(seed=seed, vocab_size=len(CLIPTokenizer.from_pretrained(tok)))
        return save_single_files(folder, components, tok)
