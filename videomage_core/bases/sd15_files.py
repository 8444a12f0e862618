"""SD1.5 single-file checkpoints (the original LDM key layout ComfyUI users have) <-> diffusers.

Reading: the kind of file is checked first (an SDXL or SD2 checkpoint, a LoRA, a UNet-only file each get
one clear error), the diffusers configs are the shipped SD1.5 ones (``configs/sd15.json``) with the
widths and depths read from the tensors' shapes, and the keys are converted by diffusers' own LDM
converters. Writing (:func:`to_ldm`) is the inverse key map, used to save tiny models in the original
layout so that the reading path is tested on files this project builds itself.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..errors import VideoMageInputError

CONFIGS = Path(__file__).parent / "configs"
UNET = "model.diffusion_model."
VAE = "first_stage_model."
TEXT = "cond_stage_model.transformer."


def sd15_config() -> dict:
    """The shipped SD1.5 reference configs (what the shapes cannot tell: heads, groups, schedule)."""
    return json.loads((CONFIGS / "sd15.json").read_text())


def read_state_dict(path, input_name: str) -> dict:
    """Tensors of a ``.safetensors`` file, or of a ``.ckpt`` / ``.pt`` / ``.pth`` / ``.bin`` through
    ``torch.load(weights_only=True)`` (never a full unpickle); a ``state_dict`` wrapper is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise VideoMageInputError(input_name, f"no file at '{path}'")
    try:
        if path.suffix.lower() in (".safetensors", ".sft"):
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors / pickle raise many kinds
        raise VideoMageInputError(input_name, f"'{path.name}' is not a readable weights file (truncated, or "
                                  f"a format other than safetensors / a weights-only torch file): {exc}") from exc
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise VideoMageInputError(input_name, f"'{path.name}' holds no tensor dictionary")
    return sd


def check_sd15_checkpoint(sd: dict, name: str, input_name: str) -> None:
    """One clear error unless ``sd`` is a whole SD1.x checkpoint (UNet, VAE, CLIP ViT-L text encoder)."""
    def refuse(why):
        raise VideoMageInputError(input_name, f"'{name}' {why}; pick an SD1.5 checkpoint (the original "
                                  "release or a fine-tune of it, with its VAE and text encoder)")

    keys = list(sd)
    if any(k.startswith("conditioner.embedders") for k in keys) or f"{UNET}label_emb.0.0.weight" in sd:
        refuse("is an SDXL checkpoint")
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        refuse("is an SD2.x checkpoint (OpenCLIP text encoder)")
    if any("lora_" in k or k.endswith(".alpha") for k in keys):
        refuse("is a LoRA, not a checkpoint")
    if f"{UNET}input_blocks.0.0.weight" not in sd:
        if any("motion_modules" in k for k in keys):
            refuse("is an AnimateDiff motion module, not a checkpoint")
        refuse("is not a Stable Diffusion checkpoint (no model.diffusion_model.* UNet keys)")
    if not any(k.startswith(VAE) for k in keys):
        refuse("has no VAE (first_stage_model.*)")
    if not any(k.startswith(TEXT) for k in keys):
        refuse("has no CLIP text encoder (cond_stage_model.transformer.*)")
    k_proj = next((v for k, v in sd.items() if k.startswith(UNET) and k.endswith("attn2.to_k.weight")), None)
    text_dim = sd[f"{TEXT}text_model.embeddings.token_embedding.weight"].shape[1]
    if k_proj is None or k_proj.shape[1] != text_dim:
        refuse(f"has cross-attention of width {None if k_proj is None else k_proj.shape[1]} for a text "
               f"encoder of width {text_dim}")


def _count(sd: dict, pattern: str) -> int:
    found = {m.group(1) for k in sd for m in [re.match(pattern, k)] if m}
    return len(found)


def unet_config(sd: dict) -> dict:
    """The diffusers ``UNet2DConditionModel`` config of an LDM SD1.x UNet: SD1.5's, with the channel
    widths, the number of levels and of resnets per level, and the text width read from the shapes."""
    ref = sd15_config()["unet"]
    levels = len(ref["down_block_types"])
    n_in = _count(sd, rf"{re.escape(UNET)}input_blocks\.(\d+)\.")  # conv_in, L resnets per level, downsamplers
    n_out = _count(sd, rf"{re.escape(UNET)}output_blocks\.(\d+)\.")
    per_level = (n_in - levels) // levels
    if per_level < 1 or n_in != 1 + levels * per_level + levels - 1 or n_out != levels * (per_level + 1):
        raise KeyError(f"{n_in} input and {n_out} output blocks do not make {levels} SD1.x levels")
    channels = [sd[f"{UNET}input_blocks.{(per_level + 1) * i + 1}.0.out_layers.3.weight"].shape[0]
                for i in range(levels)]
    k_proj = next(v for k, v in sd.items() if k.startswith(UNET) and k.endswith("attn2.to_k.weight"))
    return {**ref, "block_out_channels": channels, "layers_per_block": per_level,
            "cross_attention_dim": int(k_proj.shape[1])}


def vae_config(sd: dict) -> dict:
    ref = sd15_config()["vae"]
    n_levels = _count(sd, rf"{re.escape(VAE)}encoder\.down\.(\d+)\.")
    per_level = _count(sd, rf"{re.escape(VAE)}encoder\.down\.0\.block\.(\d+)\.")
    channels = [sd[f"{VAE}encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in range(n_levels)]
    return {**ref, "block_out_channels": channels, "layers_per_block": per_level,
            "down_block_types": ["DownEncoderBlock2D"] * n_levels, "up_block_types": ["UpDecoderBlock2D"] * n_levels}


def text_config(sd: dict) -> dict:
    ref = sd15_config()["text_encoder"]
    emb = sd[f"{TEXT}text_model.embeddings.token_embedding.weight"]
    hidden = emb.shape[1]
    layers = _count(sd, rf"{re.escape(TEXT)}text_model\.encoder\.layers\.(\d+)\.")
    inter = sd[f"{TEXT}text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]
    pos = sd[f"{TEXT}text_model.embeddings.position_embedding.weight"].shape[0]
    return {**ref, "vocab_size": emb.shape[0], "hidden_size": hidden, "intermediate_size": inter,
            "num_hidden_layers": layers, "num_attention_heads": max(1, hidden // ref["head_dim"]),
            "projection_dim": hidden, "max_position_embeddings": pos}


def from_ldm(sd: dict, name: str, input_name: str, torch_dtype: torch.dtype) -> dict:
    """``{"unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel}`` from an
    SD1.x single-file checkpoint (diffusers' LDM converters; configs shipped, widths from shapes)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    check_sd15_checkpoint(sd, name, input_name)
    u_cfg = unet_config(sd)
    v_cfg = vae_config(sd)
    t_cfg = {k: v for k, v in text_config(sd).items() if k != "head_dim"}
    try:
        unet = UNet2DConditionModel(**u_cfg)
        _load(unet, convert_ldm_unet_checkpoint(sd, u_cfg), "UNet")
        vae = AutoencoderKL(**v_cfg)
        _load(vae, convert_ldm_vae_checkpoint(sd, v_cfg), "VAE")
        text = CLIPTextModel(CLIPTextConfig(**t_cfg))
        _load(text, _text_keys_of(text, {k[len(TEXT):]: v for k, v in sd.items() if k.startswith(TEXT)}),
              "text encoder")
    except (KeyError, RuntimeError, ValueError, AssertionError) as exc:
        raise VideoMageInputError(input_name, f"'{name}' looks like SD1.x but does not convert: {exc}") from exc
    vae_dtype = torch.float32 if torch_dtype == torch.float16 else torch_dtype
    return {"unet": unet.to(torch_dtype), "vae": vae.to(vae_dtype), "text_encoder": text.to(torch_dtype)}


def _text_keys_of(text_encoder, state: dict) -> dict:
    """Checkpoint keys (``text_model.embeddings...``) in the installed transformers' naming: version 5
    dropped the ``text_model.`` level of ``CLIPTextModel``'s state dict."""
    nested = any(k.startswith("text_model.") for k in text_encoder.state_dict())
    out = {}
    for k, v in state.items():
        k = k if nested or not k.startswith("text_model.") else k[len("text_model."):]
        out[k] = v
    return {k: v for k, v in out.items() if not k.endswith("position_ids")}


def _load(module, state: dict, what: str) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"the {what} misses {missing[:3]} ({len(missing)}) and has extra {unexpected[:3]} "
                           f"({len(unexpected)})")


# ---- diffusers -> LDM (the original layout), for writing tiny single files ------------------------------
def _unet_layer_map(levels: int, per_level: int) -> list[tuple[str, str]]:
    """(LDM prefix, diffusers prefix) pairs, the inverse of diffusers' ``convert_ldm_unet_checkpoint``."""
    pairs = []
    for i in range(levels):
        for j in range(per_level):
            pairs.append((f"input_blocks.{(per_level + 1) * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            pairs.append((f"input_blocks.{(per_level + 1) * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(per_level + 1):
            pairs.append((f"output_blocks.{(per_level + 1) * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            pairs.append((f"output_blocks.{(per_level + 1) * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < levels - 1:
            pairs.append((f"input_blocks.{(per_level + 1) * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
            up = (per_level + 1) * i + per_level
            has_attn = i > 0
            pairs.append((f"output_blocks.{up}.{2 if has_attn else 1}.", f"up_blocks.{i}.upsamplers.0."))
    pairs.append(("middle_block.1.", "mid_block.attentions.0."))
    pairs += [(f"middle_block.{2 * j}.", f"mid_block.resnets.{j}.") for j in range(2)]
    return pairs


_UNET_TOP = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
             "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
           ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))


def unet_to_ldm(state: dict, levels: int, per_level: int) -> dict:
    out = {}
    pairs = _unet_layer_map(levels, per_level)
    for key, value in state.items():
        new = key
        for hf, sd in _UNET_TOP.items():
            if new.startswith(hf):
                new = sd + new[len(hf):]
        if "resnets" in new:
            for hf, sd in _RESNET:
                new = new.replace(f".{hf}.", f".{sd}.")
        for sd, hf in pairs:
            if new.startswith(hf):
                new = sd + new[len(hf):]
                break
        out[UNET + new] = value
    return out


def vae_to_ldm(state: dict, levels: int, per_level: int) -> dict:
    pairs = [("nin_shortcut", "conv_shortcut"), ("norm_out", "conv_norm_out"), ("mid.attn_1.", "mid_block.attentions.0.")]
    for i in range(levels):
        pairs += [(f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}.") for j in range(per_level)]
        if i < levels - 1:
            pairs.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
            pairs.append((f"up.{levels - 1 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
        pairs += [(f"decoder.up.{levels - 1 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}.")
                  for j in range(per_level + 1)]
    pairs += [(f"mid.block_{i + 1}.", f"mid_block.resnets.{i}.") for i in range(2)]
    attn = (("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0."))
    out = {}
    for key, value in state.items():
        new = key
        for sd, hf in pairs:
            new = new.replace(hf, sd)
        if "attentions" in key:
            for sd, hf in attn:
                new = new.replace(hf, sd)
            if new.endswith(".weight") and value.ndim == 2:
                value = value[:, :, None, None]  # LDM keeps the attention projections as 1x1 convs
        out[VAE + new] = value
    return out


def to_ldm(unet, vae, text_encoder) -> dict:
    """One SD1.x single-file state dict (``model.diffusion_model.*``, ``first_stage_model.*``,
    ``cond_stage_model.transformer.*``) from diffusers modules."""
    uc, vc = unet.config, vae.config
    sd = unet_to_ldm(unet.state_dict(), len(uc.block_out_channels), uc.layers_per_block)
    sd.update(vae_to_ldm(vae.state_dict(), len(vc.block_out_channels), vc.layers_per_block))
    sd.update({TEXT + (k if k.startswith("text_model.") else f"text_model.{k}"): v
               for k, v in text_encoder.state_dict().items()})
    return {k: v.contiguous() for k, v in sd.items()}
