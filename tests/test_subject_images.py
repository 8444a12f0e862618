"""Subject Images: Load Image outputs -> Train Subject's image batch and subject masks (issue 15, item 10).

ComfyUI's Load Image gives ``MASK = 1 - alpha`` for a picture with transparency and a 64x64 zero mask for
an opaque one (nodes.py LoadImage.load_image); the cases below feed exactly those.
"""
from __future__ import annotations

import pytest
import torch

from nodes.subject_images import CONVENTIONS, VideoMageSubjectImages

ALPHA, SUBJECT = list(CONVENTIONS)


def _cutout(h=48, w=64):
    """A photo whose subject is the opaque centre: Load Image's MASK is 1 on the transparent border."""
    alpha = torch.zeros(h, w)
    alpha[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1.0
    return torch.rand(1, h, w, 3), (1.0 - alpha)[None], alpha


CASES = [
    # (what, inputs builder, expected subject mask of photo 1 as a function of the cut-out's alpha)
    ("a cut-out PNG: its transparency inverted", lambda img, lm, a: dict(mask_1=lm), lambda a: a),
    ("an opaque photo (Load Image's empty 64x64 mask): the whole photo",
     lambda img, lm, a: dict(mask_1=torch.zeros(1, 64, 64)), lambda a: torch.ones_like(a)),
    ("no mask connected: the whole photo", lambda img, lm, a: {}, lambda a: torch.ones_like(a)),
    ("a segmentation mask (subject = 1) kept as it is",
     lambda img, lm, a: dict(mask_1=a[None], masks_are=SUBJECT), lambda a: a),
]


@pytest.mark.parametrize("what,inputs,expected", CASES, ids=[c[0] for c in CASES])
def test_masks_become_subject_masks(what, inputs, expected):
    img, load_image_mask, alpha = _cutout()
    kw = {"masks_are": ALPHA, **inputs(img, load_image_mask, alpha)}
    images, masks = VideoMageSubjectImages().batch(img, **kw)
    assert images.shape == (1, 48, 64, 3) and torch.equal(images, img)
    assert torch.equal(masks[0], expected(alpha)), what


def test_photos_of_other_sizes_are_fitted_to_the_first():
    first, lm, alpha = _cutout(48, 64)
    wide = torch.rand(1, 100, 300, 3)  # another aspect ratio: center-cropped, then resized
    images, masks = VideoMageSubjectImages().batch(first, ALPHA, image_2=wide, mask_1=lm, image_3=first)
    assert images.shape == (3, 48, 64, 3) and masks.shape == (3, 48, 64)
    assert torch.equal(masks[0], alpha) and torch.equal(masks[1], torch.ones(48, 64))
    assert torch.equal(images[2], first[0])


def test_a_mask_without_its_photo_is_a_clear_error():
    from videomage_core.errors import VideoMageInputError

    img, lm, _ = _cutout()
    with pytest.raises(VideoMageInputError, match="^mask_3: a mask for photo 3 but no image_3"):
        VideoMageSubjectImages().batch(img, ALPHA, mask_3=lm)
    with pytest.raises(VideoMageInputError, match="^image_2: expected shape"):
        VideoMageSubjectImages().batch(img, ALPHA, image_2=torch.rand(5, 5))
