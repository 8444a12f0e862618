"""Gradient checkpointing of a base model's denoiser, the same way for every base family.

The family names the modules to wrap (:func:`checkpointed_modules` of :mod:`videomage_core.bases`:
for ZeroScope each block's resnets, temp_convs, attentions and temp_attentions, since
``UNet3DConditionModel``'s own flag refuses). Each gets a forward that runs under
``torch.utils.checkpoint`` (non-reentrant) while grad is enabled. Module names do not change, so LoRA
keys stay the same.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def set_gradient_checkpointing(unet, enabled: bool = True) -> None:
    from .bases import family_of

    for module in family_of(unet).checkpointed_modules(unet):
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
