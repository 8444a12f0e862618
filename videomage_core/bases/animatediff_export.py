"""Exports of AnimateDiff artifacts in the formats ComfyUI's own nodes load.

- A subject's spatial LoRA as an SD1.5 LoRA in the kohya key layout (``lora_unet_<diffusers module name
  with underscores>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``), for core *Load LoRA*:
  ComfyUI adds ``strength * alpha / rank * up @ down``, so strength 1.0 is exactly our ``scaling * B @ A``.
- Each of its tokens as a textual-inversion embedding (``emb_params``: ``[1, width]``) for
  ``models/embeddings``, used as ``embedding:<name>`` in *CLIP Text Encode*.
- A motion's temporal LoRA in the original AnimateDiff motion-LoRA layout that AnimateDiff-Evolved loads
  from ``models/animatediff_motion_lora`` (``<module>.temporal_transformer.transformer_blocks.0.
  attention_blocks.<0|1>.processor.<to_q|to_k|to_v|to_out>_lora.<down|up>.weight``): it adds
  ``strength * up @ down`` (no alpha key), so our scaling is folded into ``up``.
"""
from __future__ import annotations

import re

import torch

from ..errors import require

LORA_KEY = re.compile(r"(?P<module>.+)\.lora_(?P<ab>[AB])\.weight")


def _pairs(state: dict):
    """``(module, A, B)`` of each LoRA'd module, in name order."""
    for module in sorted({LORA_KEY.fullmatch(k).group("module") for k in state}):
        yield module, state[f"{module}.lora_A.weight"], state[f"{module}.lora_B.weight"]


def kohya_name(module: str) -> str:
    """``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0`` ->
    ``lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0``."""
    return "lora_unet_" + module.replace(".", "_")


def subject_lora_kohya(artifact) -> dict[str, torch.Tensor]:
    """The subject's LoRA as a kohya SD1.5 LoRA (strength 1.0 = our LoRA)."""
    require(artifact.kind == "subject" and artifact.scope == "spatial", "subject", "expected a subject (spatial LoRA)")
    out = {}
    for module, a, b in _pairs(artifact.lora):
        name = kohya_name(module)
        out[f"{name}.lora_down.weight"] = a.float().contiguous()
        out[f"{name}.lora_up.weight"] = b.float().contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(artifact.alpha) * a.shape[0] / artifact.rank)
    return out


def token_embeddings(artifact) -> dict[str, dict[str, torch.Tensor]]:
    """``{embedding name: {"emb_params": [1, width]}}``, one per token (``<my_toy>`` -> ``my_toy``)."""
    return {tok.strip("<>"): {"emb_params": emb.float().reshape(1, -1).contiguous()}
            for tok, emb in artifact.tokens.items()}


def motion_module_key(module: str) -> str:
    """Our temporal layer name -> the original motion module's: ``down_blocks.0.motion_modules.0.
    transformer_blocks.0.attn1.to_out.0`` -> ``down_blocks.0.motion_modules.0.temporal_transformer.
    transformer_blocks.0.attention_blocks.0.to_out.0``."""
    m = re.fullmatch(r"(?P<pre>.*\.motion_modules\.\d+)\.(?P<blk>transformer_blocks\.\d+)\.attn(?P<n>[12])\."
                     r"(?P<proj>to_q|to_k|to_v|to_out\.0)", module)
    require(m is not None, "motion", f"'{module}' is not a motion-module attention projection")
    return f"{m['pre']}.temporal_transformer.{m['blk']}.attention_blocks.{int(m['n']) - 1}.{m['proj']}"


def ade_lora_prefix(module: str) -> str:
    """The motion-LoRA key stem of one of our temporal layers: ``...attention_blocks.0.processor.to_q_lora``
    (``to_out.0`` is written ``to_out``, which AnimateDiff-Evolved maps back to ``to_out.0``)."""
    base, proj = motion_module_key(module).rsplit(".", 1)
    if proj == "0":  # to_out.0
        base, proj = base.rsplit(".", 1)
    return f"{base}.processor.{proj}_lora"


def motion_lora_ade(artifact) -> dict[str, torch.Tensor]:
    """The motion's LoRA as an AnimateDiff motion LoRA (strength 1.0 = our LoRA)."""
    require(artifact.kind == "motion" and artifact.scope == "temporal", "motion", "expected a motion (temporal LoRA)")
    out = {}
    for module, a, b in _pairs(artifact.lora):
        prefix = ade_lora_prefix(module)
        out[f"{prefix}.down.weight"] = a.float().contiguous()
        out[f"{prefix}.up.weight"] = (b.float() * artifact.scaling).contiguous()
    return out


def ade_model_key(lora_key: str) -> str:
    """AnimateDiff-Evolved's rule (model_injection.py, load_motion_lora_as_patches) from a motion-LoRA
    ``down`` key to the motion module's weight it patches; here to check our files against it."""
    key = lora_key.replace("processor.", "").replace("_lora", "").replace("down.", "").replace("up.", "")
    return key if "to_out.0." in key else key.replace("to_out.", "to_out.0.")


def export_files(artifact, name: str) -> list[tuple[str, str, dict, dict]]:
    """``[(ComfyUI models sub-folder, file name, tensors, metadata)]`` for one artifact."""
    meta = {"videomage_kind": artifact.kind, "videomage_base": artifact.base, "videomage_tokens": ",".join(artifact.tokens),
            "base_fingerprint": artifact.base_fingerprint}
    if artifact.kind == "subject":
        files = [("loras", f"{name}_lora.safetensors", subject_lora_kohya(artifact),
                  {**meta, "ss_network_dim": str(artifact.rank), "ss_network_alpha": str(artifact.alpha),
                   "ss_base_model_version": "sd_v1"})]
        for emb_name, tensors in token_embeddings(artifact).items():
            files.append(("embeddings", f"{emb_name}.safetensors", tensors, meta))
        return files
    return [("animatediff_motion_lora", f"{name}_motion_lora.safetensors", motion_lora_ade(artifact), meta)]
