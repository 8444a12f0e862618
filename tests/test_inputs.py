"""Bad inputs each raise a clear error that names the input (never a traceback from inside torch)."""
import pytest
import torch

from videomage_core.errors import VideoMageInputError
from videomage_core.model import load_model
from videomage_core.motion import MotionSettings, train_motion
from videomage_core.sampling import SampleSettings, ddim_sample, scs_sample
from videomage_core.subject import SubjectSettings, train_subject
from videomage_core.tokens import superclass_prompt

IMGS = torch.rand(3, 64, 64, 3)


def _subject(model, images=IMGS, masks=None, **kw):
    settings = dict(token="<toy>", superclass="toy", steps=1, height=64, width=64, prior_videos=1,
                    prior_frames=2, prior_steps=1)
    settings.update(kw)
    return train_subject(model, images, SubjectSettings(**settings), masks=masks)


def _motion(model, video, **kw):
    settings = dict(motion_prompt="a toy moving", reference_words=("toy",), steps=1, inversion_steps=1,
                    height=64, width=64)
    settings.update(kw)
    return train_motion(model, video, MotionSettings(**settings))


CASES = [
    ("no images", lambda m: _subject(m, images=torch.zeros(0, 64, 64, 3)), "images", "at least 1 image"),
    ("not an image tensor", lambda m: _subject(m, images=[1, 2]), "images", "expected an image tensor"),
    ("pixel range", lambda m: _subject(m, images=IMGS * 255), "images", "within 0..1"),
    ("image/mask size mismatch", lambda m: _subject(m, masks=torch.ones(3, 32, 32)), "masks", "does not match"),
    ("mask count", lambda m: _subject(m, masks=torch.ones(2, 64, 64)), "masks", "2 masks for 3"),
    ("empty mask", lambda m: _subject(m, masks=torch.zeros(3, 64, 64)), "masks", "empty"),
    ("size not a multiple of 8", lambda m: _subject(m, width=60), "size", "multiples of 8"),
    ("token already a word", lambda m: _subject(m, token="dog"), "token", "already a word"),
    ("token not a token", lambda m: _subject(m, token="<a b>"), "token", "expected a token like"),
    ("missing superclass word", lambda m: _subject(m, superclass=" "), "superclass", "superclass word is required"),
    ("video of 1 frame", lambda m: _motion(m, torch.rand(1, 64, 64, 3)), "video", "at least 2 frames"),
    ("motion without subjects", lambda m: _motion(m, torch.rand(3, 64, 64, 3), reference_words=()),
     "reference_words", "name the reference"),
    ("sample size", lambda m: ddim_sample(m, "a toy", SampleSettings(frames=2, height=64, width=63, steps=1)),
     "size", "multiples of 8"),
    ("sample frames", lambda m: ddim_sample(m, "a toy", SampleSettings(frames=1, height=64, width=64, steps=1)),
     "frames", "at least 2 frames"),
    ("token absent from prompt", lambda m: scs_sample(m, "a toy rides a dog", {"<toy>": "toy"}, "s", "m",
                                                      SampleSettings(frames=2, height=64, width=64, steps=1)),
     "prompt", "does not contain the tokens"),
    ("unknown model folder", lambda m: load_model("/nonexistent/zeroscope"), "model_path", "no model folder"),
    ("video without data", lambda m: _motion(m, torch.rand(3, 64, 64, 3, device="meta")), "video",
     "'meta' device"),
    ("mask without data", lambda m: _subject(m, masks=torch.ones(3, 64, 64, device="meta")), "masks",
     "'meta' device"),
    ("motion frames", lambda m: _motion(m, torch.rand(3, 64, 64, 3), frames=1), "frames",
     "at least 2 frames"),
    ("dtype", lambda m: load_model(m.path, dtype="fp8"), "dtype", "one of ['bf16', 'fp16', 'fp32']"),
]


@pytest.mark.parametrize("name, call, input_name, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_names_the_input(model, name, call, input_name, words):
    with pytest.raises(VideoMageInputError) as info:
        call(model)
    assert info.value.input_name == input_name
    assert str(info.value).startswith(f"{input_name}: ")
    assert words in str(info.value)
    assert model.adapters == {}, "a refused run leaves no adapter behind"


def test_superclass_twin_prompt():
    assert superclass_prompt("A <toy> rides a <dog>", {"<toy>": "toy", "<dog>": "dog"}) == "A toy rides a dog"
    with pytest.raises(VideoMageInputError, match="superclass"):
        superclass_prompt("A <toy>", {"<toy>": ""})
    with pytest.raises(VideoMageInputError, match=r"prompt: tokens \['<cat>'\] have no superclass"):
        superclass_prompt("A <toy> and <cat>", {"<toy>": "toy"})


def test_folder_without_model_index_is_refused(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(VideoMageInputError, match="model_index.json"):
        load_model(tmp_path)


def _box(mask: torch.Tensor) -> tuple[int, int]:
    """Height and width of the bounding box of ``mask > 0.5``."""
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


def test_a_tall_mask_crop_keeps_the_subject_aspect():
    """A standing subject (48 x 12 px) cropped for a 2:1 frame stays 4:1 tall (it was stretched 2x wider)."""
    from videomage_core.data import crop_to_mask

    image = torch.rand(64, 128, 3)
    mask = torch.zeros(64, 128)
    mask[8:56, 60:72] = 1
    crop, weight = crop_to_mask(image, mask, 64, 128)
    assert crop.shape == (64, 128, 3) and weight.shape == (64, 128)
    h, w = _box(weight)
    # the box (56 x 14 with the margin) grows to 56 x 112 inside the frame: scale 64/56, so the
    # subject is 54.9 x 13.7 px; resizing moves each thresholded edge by at most 1 px
    scale = 64 / 56
    assert abs(h - 48 * scale) <= 2 and abs(w - 12 * scale) <= 2, (h, w)
    assert (48 * scale - 2) / (12 * scale + 2) <= h / w <= (48 * scale + 2) / (12 * scale - 2)
    assert weight.sum() == pytest.approx(48 * 12 * scale ** 2, rel=0.1), "the weight is the mask, not a box"


def test_a_crop_wider_than_the_frame_is_padded_not_stretched():
    """A near full-height subject for a 4:1 target: the crop reaches past the frame's sides, and the
    padding is grey with zero loss weight."""
    from videomage_core.data import crop_to_mask

    image = torch.rand(64, 128, 3)
    mask = torch.zeros(64, 128)
    mask[4:60, 40:80] = 1
    crop, weight = crop_to_mask(image, mask, 32, 128)
    # the box is the full frame height (64, margin clipped) and grows to 256 wide: 64 px of padding on
    # each side of the frame, i.e. 32 px at the 0.5 scale
    assert torch.equal(crop[:, :31], torch.full((32, 31, 3), 0.5))
    assert torch.equal(crop[:, -31:], torch.full((32, 31, 3), 0.5))
    assert weight[:, :32].max() == 0 and weight[:, -32:].max() == 0
    assert torch.allclose(crop[:, 33:95], torch.nn.functional.interpolate(
        image.permute(2, 0, 1)[None], size=(32, 64), mode="area")[0].permute(1, 2, 0)[:, 1:63])
    h, w = _box(weight)  # the subject 56 x 40 at scale 0.5 = 28 x 20, each edge within 1 px
    assert abs(h - 28) <= 2 and abs(w - 20) <= 2, (h, w)


def test_frame_selection_never_interpolates():
    from videomage_core.data import motion_frame_indices, prior_frame_indices, uniform_frame_indices

    assert motion_frame_indices(250, 24) == uniform_frame_indices(250, 24)
    assert motion_frame_indices(250, 24)[0] == 0 and motion_frame_indices(250, 24)[-1] == 249
    assert motion_frame_indices(10, 4) == [0, 3, 6, 9]
    assert motion_frame_indices(5, 24) == [0, 1, 2, 3, 4], "a shorter clip is used whole, never repeated"
    assert prior_frame_indices(24, 24) == (list(range(24)), "")
    fewer, note = prior_frame_indices(24, 16)
    assert fewer == list(range(16)) and "first 16" in note
    more, note = prior_frame_indices(4, 8)
    assert more == [0, 0, 1, 1, 2, 2, 3, 3] and "repeats" in note and "0.50x" in note
