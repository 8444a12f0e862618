"""Wan LoRAs in the layout ComfyUI's native Wan nodes load: ``diffusion_model.blocks.N.<module>.lora_A/B.weight``
with the original Wan module names (``self_attn.q``, ``cross_attn.o``, ``ffn.0``)."""
from __future__ import annotations

import re

import torch

#: diffusers' Wan module names -> the original (ComfyUI's) ones, inside ``blocks.N.``
DIFFUSERS_TO_WAN = (
    ("attn1.to_q", "self_attn.q"), ("attn1.to_k", "self_attn.k"), ("attn1.to_v", "self_attn.v"),
    ("attn1.to_out.0", "self_attn.o"), ("attn2.to_q", "cross_attn.q"), ("attn2.to_k", "cross_attn.k"),
    ("attn2.to_v", "cross_attn.v"), ("attn2.to_out.0", "cross_attn.o"), ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
)


def wan_module_name(diffusers_name: str) -> str:
    """``blocks.3.attn1.to_q`` -> ``blocks.3.self_attn.q`` (a module a Wan LoRA can target)."""
    m = re.fullmatch(r"(blocks\.\d+)\.(.+)", diffusers_name)
    if m:
        for ours, theirs in DIFFUSERS_TO_WAN:
            if m.group(2) == ours:
                return f"{m.group(1)}.{theirs}"
    raise KeyError(f"no Wan module name for '{diffusers_name}'")


def comfy_lora_tensors(lora: dict[str, torch.Tensor], alpha: float, rank: int) -> dict[str, torch.Tensor]:
    """Our peft state (``<module>.lora_A.weight`` / ``lora_B``) as ComfyUI's Wan LoRA keys, each module
    with its ``.alpha`` (ComfyUI scales by alpha / rank, as peft did while training)."""
    out = {}
    for key, tensor in lora.items():
        m = re.fullmatch(r"(.+)\.(lora_[AB])\.weight", key)
        if m is None:
            continue
        stem = "diffusion_model." + wan_module_name(m.group(1))
        out[f"{stem}.{m.group(2)}.weight"] = tensor.detach().float().contiguous()
        out[f"{stem}.alpha"] = torch.tensor(float(alpha))
    return dict(sorted(out.items()))


def export_files(artifact, name: str) -> list:
    """``[(kind, file name, tensors, metadata)]``: the LoRA (either scope) for ``models/loras``."""
    tensors = comfy_lora_tensors(artifact.lora, artifact.alpha, artifact.rank)
    meta = {"videomage_kind": artifact.kind, "base": "wan", "rank": str(artifact.rank),
            "alpha": str(artifact.alpha), "tokens": ",".join(artifact.tokens),
            "superclasses": ",".join(artifact.superclasses.get(t, "") for t in artifact.tokens),
            "note": "ComfyUI's umT5 reads no embeddings: write the superclass word where the token stood"}
    return [("loras", f"{name}.safetensors", tensors, meta)]
