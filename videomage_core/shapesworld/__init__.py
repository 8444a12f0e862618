"""ShapesWorld: a procedural text-to-video world with captions, exact ground truth and exact measures.

See :mod:`.generator` for the world, its vocabulary and the held-out split, and :mod:`.measures`
for the detectors and scores. numpy only.
"""

from .generator import (
    DIRECTIONS,
    HELD_OUT_INTERACTIONS,
    INTERACTIONS,
    NAMED_COLOURS,
    NAMED_SHAPES,
    PALETTE,
    PRETRAIN_INTERACTIONS,
    SHAPES,
    STILL_PAIR,
    SUPERCLASS,
    TEXTURES,
    VOCABULARY,
    BackgroundSpec,
    Clip,
    ClipSpec,
    ObjectSpec,
    SubjectImages,
    caption,
    render_clip,
    render_subject_images,
    sample_interaction,
    sample_object,
    sample_pretraining_clip,
    sample_single,
)
from .measures import (
    Analysis,
    DetectedObject,
    analyze,
    appearance_leakage,
    attribute_binding,
    classify_direction,
    classify_interaction,
    classify_shape,
    classify_texture,
    colour_name,
    evaluate,
    motion_fidelity,
    prompt_following,
    segment,
    subject_fidelity,
    temporal_consistency,
)

__all__ = [
    "DIRECTIONS", "HELD_OUT_INTERACTIONS", "INTERACTIONS", "NAMED_COLOURS", "NAMED_SHAPES", "PALETTE",
    "PRETRAIN_INTERACTIONS", "SHAPES", "STILL_PAIR", "SUPERCLASS", "TEXTURES", "VOCABULARY",
    "BackgroundSpec", "Clip", "ClipSpec", "ObjectSpec", "SubjectImages",
    "caption", "render_clip", "render_subject_images", "sample_interaction", "sample_object",
    "sample_pretraining_clip", "sample_single",
    "Analysis", "DetectedObject", "analyze", "appearance_leakage", "attribute_binding",
    "classify_direction", "classify_interaction", "classify_shape", "classify_texture", "colour_name",
    "evaluate", "motion_fidelity", "prompt_following", "segment", "subject_fidelity",
    "temporal_consistency",
]
