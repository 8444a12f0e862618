"""ShapesWorld example inputs: subject images + masks and interaction videos + masks, drawn
procedurally (no files), so the quick start runs anywhere. The other bundled workflows take the user's
files instead (Load Image -> Subject Images; Load Video + Get Video Components)."""

from __future__ import annotations

from .common import INT, SEED, SIZE
from .types import CATEGORY, IMAGE, MASK, STRING

COLOURS = ("red", "orange", "yellow", "lime", "green", "cyan", "blue", "purple", "pink")


def _object(shape, colour, texture, size):
    from videomage_core.shapesworld import PALETTE, ObjectSpec

    return ObjectSpec(shape=shape, hue=PALETTE[colour], texture=texture, size=size)


class VideoMageShapesWorldSubject:
    DESCRIPTION = (
        "Draws still images of one ShapesWorld subject (a coloured, textured shape) at varied "
        "positions and scales on varied dark backgrounds, with exact masks: example input for "
        "Train Subject LoRA."
    )
    CATEGORY = f"{CATEGORY}/examples"
    RETURN_TYPES = (IMAGE, MASK, STRING)
    RETURN_NAMES = ("images", "masks", "description")
    OUTPUT_TOOLTIPS = (
        "The images [N, H, W, 3].",
        "The subject's masks [N, H, W] (1 = subject).",
        "A noun phrase for the subject, e.g. 'a red striped star'.",
    )
    FUNCTION = "draw"

    @classmethod
    def INPUT_TYPES(cls):
        from videomage_core.shapesworld import SHAPES, TEXTURES

        return {
            "required": {
                "shape": (list(SHAPES), {"default": "star", "tooltip": "The subject's shape."}),
                "colour": (list(COLOURS), {"default": "red", "tooltip": "The subject's colour."}),
                "texture": (
                    list(TEXTURES),
                    {"default": "stripes", "tooltip": "The subject's surface pattern."},
                ),
                "count": INT(4, 1, 16, "How many images (the paper uses 3-5 per subject)."),
                "width": SIZE(576, "Image width"),
                "height": SIZE(320, "Image height"),
                "seed": SEED("Seed of the positions, scales and backgrounds.", control=False),
            }
        }

    def draw(self, shape, colour, texture, count, width, height, seed):
        import numpy as np
        import torch

        from videomage_core.shapesworld import render_subject_images

        obj = _object(shape, colour, texture, 0.3)
        out = render_subject_images(obj, count, np.random.default_rng(seed), height=height, width=width)
        words = " ".join(w for w in (colour, "" if texture == "plain" else texture, shape) if w)
        return (
            torch.from_numpy(out.images.astype(np.float32)),
            torch.from_numpy(out.masks.astype(np.float32)),
            f"a {words}",
        )


class VideoMageShapesWorldMotion:
    DESCRIPTION = (
        "Draws a ShapesWorld clip of two shapes performing an interaction (approach, chase, "
        "orbit, ...) with exact per-subject masks of the middle frame: example input for "
        "Train Motion LoRA."
    )
    CATEGORY = f"{CATEGORY}/examples"
    RETURN_TYPES = (IMAGE, MASK, STRING)
    RETURN_NAMES = ("video", "masks", "caption")
    OUTPUT_TOOLTIPS = (
        "The frames [F, H, W, 3].",
        "One mask per shape for the middle frame [2, H, W].",
        "The clip's caption, e.g. 'a blue circle chases a yellow square'.",
    )
    FUNCTION = "draw"

    @classmethod
    def INPUT_TYPES(cls):
        from videomage_core.shapesworld import INTERACTIONS, SHAPES

        return {
            "required": {
                "interaction": (
                    list(INTERACTIONS),
                    {"default": "chase", "tooltip": "What the two shapes do."},
                ),
                "shape_a": (list(SHAPES), {"default": "circle", "tooltip": "The first shape (the actor)."}),
                "colour_a": (list(COLOURS), {"default": "blue", "tooltip": "The first shape's colour."}),
                "shape_b": (list(SHAPES), {"default": "square", "tooltip": "The second shape."}),
                "colour_b": (list(COLOURS), {"default": "yellow", "tooltip": "The second shape's colour."}),
                "frames": INT(24, 2, 256, "Frames of the clip (the paper's reference videos: 24)."),
                "width": SIZE(576, "Video width"),
                "height": SIZE(320, "Video height"),
                "seed": SEED("Seed of the paths and the background.", control=False),
            }
        }

    def draw(self, interaction, shape_a, colour_a, shape_b, colour_b, frames, width, height, seed):
        import numpy as np
        import torch

        from videomage_core.shapesworld import sample_interaction

        objs = (_object(shape_a, colour_a, "plain", 7.5 / 64), _object(shape_b, colour_b, "plain", 7.5 / 64))
        clip = sample_interaction(
            np.random.default_rng(seed), interaction, objs, frames=frames, height=height, width=width
        )
        mid = clip.frames.shape[0] // 2
        masks = clip.masks[:, mid].astype(np.float32)
        for i in range(masks.shape[0]):  # a shape hidden in the middle frame: fall back to its whole path
            if masks[i].max() == 0:
                masks[i] = clip.masks[i].any(0).astype(np.float32)
        return torch.from_numpy(clip.frames.astype(np.float32)), torch.from_numpy(masks), clip.caption


NODE_CLASS_MAPPINGS = {
    "VideoMageShapesWorldSubject": VideoMageShapesWorldSubject,
    "VideoMageShapesWorldMotion": VideoMageShapesWorldMotion,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VideoMageShapesWorldSubject": "VideoMage ShapesWorld Subject (example data)",
    "VideoMageShapesWorldMotion": "VideoMage ShapesWorld Motion (example data)",
}
