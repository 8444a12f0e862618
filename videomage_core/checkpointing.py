"""Gradient checkpointing for ``UNet3DConditionModel``, whose own flag refuses.

Each block's resnets, temp_convs, attentions and temp_attentions, and ``transformer_in``, get a
forward that runs under ``torch.utils.checkpoint`` (non-reentrant) while grad is enabled. Module
names do not change, so LoRA keys stay the same.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

_PARTS = ("resnets", "temp_convs", "attentions", "temp_attentions")


def _checkpointed_modules(unet):
    yield unet.transformer_in
    for block in list(unet.down_blocks) + [unet.mid_block] + list(unet.up_blocks):
        for part in _PARTS:
            yield from getattr(block, part, None) or []


def set_gradient_checkpointing(unet, enabled: bool = True) -> None:
    for module in _checkpointed_modules(unet):
        if enabled and "_vm_forward" not in module.__dict__:
            original = module.forward
            module._vm_forward = original

            def forward(*args, _orig=original, **kwargs):
                if torch.is_grad_enabled():
                    return checkpoint(_orig, *args, use_reentrant=False, **kwargs)
                return _orig(*args, **kwargs)

            module.forward = forward
        elif not enabled and "_vm_forward" in module.__dict__:
            module.__dict__.pop("_vm_forward")
            module.__dict__.pop("forward", None)
