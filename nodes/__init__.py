"""VideoMage nodes for ComfyUI (classic V1 schema: plain classes, importable without ComfyUI).

Each module holds one concern and its own ``NODE_CLASS_MAPPINGS``; this package merges them.
The engine is ``videomage_core`` (imported by absolute name: the pack's root ``__init__`` puts
the pack folder on ``sys.path``).
"""

from . import (
    animatediff_loader,
    artifact_io,
    example_data,
    export,
    fuse,
    model_loader,
    sampler,
    subject_images,
    train_motion,
    train_subject,
    wan_loader,
)

_MODULES = (
    model_loader,
    animatediff_loader,
    wan_loader,
    subject_images,
    train_subject,
    train_motion,
    fuse,
    sampler,
    artifact_io,
    export,
    example_data,
)

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _m in _MODULES:
    NODE_CLASS_MAPPINGS.update(_m.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_m.NODE_DISPLAY_NAME_MAPPINGS)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
