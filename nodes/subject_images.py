"""Subject Images: a few Load Image outputs -> the one image batch + mask batch Train Subject takes.

ComfyUI's core nodes cannot batch masks in every version we support (0.3.64 has no mask batch node),
and Load Image's MASK is the *transparent* area (``1 - alpha``; an opaque photo gives an empty 64x64
mask). This node batches up to five photos, fits them to the first one's size (center crop, then
resize) and turns each mask into the subject mask Train Subject wants (1 = subject).
"""

from __future__ import annotations

from .types import CATEGORY, IMAGE, MASK

MAX_IMAGES = 5
CONVENTIONS = {
    "Load Image alpha (transparent = background)": "alpha",
    "subject = 1 (e.g. from a segmentation node)": "subject",
}


def subject_masks(mask, image, convention: str):
    """One photo's subject mask ``[H, W]`` at its image's size: Load Image's ``1 - alpha`` inverted
    (an empty mask, i.e. a photo without transparency, is the whole image), or a subject mask as is."""
    import torch
    import torch.nn.functional as F

    from videomage_core.errors import VideoMageInputError

    h, w = image.shape[1:3]
    if mask is None:
        return torch.ones(h, w)
    m = mask.detach().float().cpu()
    m = m[0] if m.ndim == 3 else m
    if m.ndim != 2:
        raise VideoMageInputError("masks", f"expected a mask [H, W] or [1, H, W], got {list(mask.shape)}")
    if convention == "alpha":
        if not bool((m > 1e-3).any()):  # no transparent pixel: Load Image's empty mask of an opaque photo
            return torch.ones(h, w)
        m = 1.0 - m
    if tuple(m.shape) != (h, w):
        m = F.interpolate(m[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    return m.clamp(0, 1)


class VideoMageSubjectImages:
    DESCRIPTION = (
        "Batches 1-5 photos of one subject (the paper uses 3-5) for Train Subject LoRA: connect each "
        "Load Image's IMAGE, and its MASK to use the picture's transparency as the subject mask (a "
        "cut-out PNG). Photos are fitted to the first one's size (center crop, then resize)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (IMAGE, MASK)
    RETURN_NAMES = ("images", "masks")
    OUTPUT_TOOLTIPS = (
        "The photos as one batch [N, H, W, 3].",
        "The subject masks [N, H, W] (1 = subject; the whole photo where no mask or no transparency).",
    )
    FUNCTION = "batch"

    @classmethod
    def INPUT_TYPES(cls):
        photo = "A photo of the subject (Load Image's IMAGE)."
        mask = "Optional: that Load Image's MASK (its transparency), or a subject mask."
        optional = {}
        for i in range(2, MAX_IMAGES + 1):
            optional[f"image_{i}"] = (IMAGE, {"tooltip": photo})
        for i in range(1, MAX_IMAGES + 1):
            optional[f"mask_{i}"] = (MASK, {"tooltip": mask})
        return {
            "required": {
                "image_1": (IMAGE, {"tooltip": photo}),
                "masks_are": (
                    list(CONVENTIONS),
                    {
                        "default": next(iter(CONVENTIONS)),
                        "tooltip": "What the mask inputs mean. Load Image's MASK is the transparent "
                        "area, so it is inverted; masks from a segmentation node mark the subject.",
                    },
                ),
            },
            "optional": optional,
        }

    def batch(self, image_1, masks_are, **optional):
        import torch

        from videomage_core.data import check_images, fit_to_size
        from videomage_core.errors import VideoMageInputError

        convention = CONVENTIONS.get(masks_are)
        if convention is None:
            raise VideoMageInputError("masks_are", f"expected one of {list(CONVENTIONS)}, got {masks_are!r}")
        for i in range(1, MAX_IMAGES + 1):
            if optional.get(f"mask_{i}") is not None and (i > 1 and optional.get(f"image_{i}") is None):
                raise VideoMageInputError(f"mask_{i}", f"a mask for photo {i} but no image_{i}")
        photos = [(1, image_1)] + [(i, optional[f"image_{i}"]) for i in range(2, MAX_IMAGES + 1)
                                   if optional.get(f"image_{i}") is not None]
        images, masks = [], []
        height = width = None
        for i, img in photos:
            img = check_images(img, f"image_{i}")
            mask = optional.get(f"mask_{i}")
            for k in range(img.shape[0]):  # a Load Image of an animated file gives several frames
                one = img[k:k + 1]
                mk = mask[k] if mask is not None and mask.ndim == 3 and mask.shape[0] == img.shape[0] else mask
                m = subject_masks(mk, one, convention)[None]
                if height is None:
                    height, width = one.shape[1:3]
                elif one.shape[1:3] != (height, width):
                    one, m = fit_to_size(one, height, width, m)
                images.append(one)
                masks.append(m)
        return (torch.cat(images), torch.cat(masks).clamp(0, 1))


NODE_CLASS_MAPPINGS = {"VideoMageSubjectImages": VideoMageSubjectImages}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoMageSubjectImages": "VideoMage Subject Images"}
