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
    ("dtype", lambda m: load_model(m.path, dtype="fp8"), "dtype", "expected one of"),
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
