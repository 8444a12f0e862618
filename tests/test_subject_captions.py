"""Per-image captions for subject learning (``SubjectSettings.image_captions``, beyond the paper): checked
input, the caption each image trains on, the same result as the template when they are all alike, and the
ShapesWorld images that name a second object."""

from __future__ import annotations

import pytest
import torch

from videomage_core import subject as S
from videomage_core.errors import VideoMageInputError
from videomage_core.subject import SubjectSettings, train_subject, training_captions

TOKEN = "<toy>"


def _settings(**kw):
    base = dict(token=TOKEN, superclass="toy", steps=3, height=64, width=64, lr_lora=1e-2, lr_token=1e-2,
                prior_videos=1, prior_frames=3, prior_steps=2)
    base.update(kw)
    return SubjectSettings(**base)


def _images(n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=gen)
    return torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear").permute(0, 2, 3, 1)


@pytest.mark.parametrize("captions, expected", [
    (None, ["A <toy>"] * 3),
    (("a {token} and a red circle", "a <toy> on a table", " {token} "), ["a <toy> and a red circle",
                                                                        "a <toy> on a table", "<toy>"]),
])
def test_each_image_gets_its_caption(captions, expected):
    assert training_captions(_settings(image_captions=captions), 3) == expected


@pytest.mark.parametrize("captions, message", [
    (("a {token}", "a {token}"), r"^image_captions: expected one caption per image \(3\), got 2$"),
    (("a {token}", "  ", "a {token}"), r"^image_captions: caption 2 is empty"),
    (("a {token}", "a toy", "a {token}"), r"^image_captions: caption 2 \('a toy'\) does not name the subject"),
    (("a {token}", "a {token} by {cup}", "a {token}"), r"^image_captions: caption 2 .*only \{token\} may be"),
    (("a {token}", "a {token} {", "a {token}"), r"^image_captions: caption 2 .*only \{token\} may be"),
])
def test_bad_captions_name_the_input(captions, message):
    with pytest.raises(VideoMageInputError, match=message):
        training_captions(_settings(image_captions=captions), 3)


def test_bad_captions_are_refused_before_training(model, tmp_path, monkeypatch):
    def no_encoding(*a, **k):
        raise AssertionError("nothing is encoded before the captions are checked")

    monkeypatch.setattr(S, "encode_video", no_encoding)
    with pytest.raises(VideoMageInputError, match="^image_captions:"):
        train_subject(model, _images(), _settings(image_captions=("a {token}",)), cache_dir=tmp_path)
    assert model.adapters == {}


@pytest.mark.parametrize("base", ["zeroscope", "animatediff", "wan"])
def test_training_reads_each_images_caption(base, request, tmp_path, monkeypatch):
    """Every L_sub step encodes the images' captions in the images' order (the batch row i is image i), on
    every base's text encoder (CLIP's and umT5's)."""
    from videomage_core.model import load_model

    folder = {"zeroscope": "tiny_model_dir", "animatediff": "animatediff_model_dir", "wan": "wan_model_dir"}[base]
    model = load_model(request.getfixturevalue(folder))
    captions = ("a {token} and a red circle", "a {token} and a blue square", "a {token} and a green ring")
    encoded, real = [], S.encode_prompts

    def spy(model_, prompts):
        encoded.append(list(prompts))
        return real(model_, prompts)

    monkeypatch.setattr(S, "encode_prompts", spy)
    art = train_subject(model, _images(), _settings(image_captions=captions), cache_dir=tmp_path)
    wanted = [c.format(token=TOKEN) for c in captions]
    assert encoded.count(wanted) == 3, encoded  # once per step, 3 steps
    assert art.train_args["image_captions"] == captions  # the artifact says what it was trained on


def test_alike_captions_give_the_templates_result(model, tmp_path, one_thread):
    """Captions that are all the template's text take the template's path: the very same LoRA and token."""
    plain = train_subject(model, _images(), _settings(), cache_dir=tmp_path)
    alike = train_subject(model, _images(), _settings(image_captions=("A {token}",) * 3), cache_dir=tmp_path)
    other = train_subject(model, _images(), _settings(image_captions=("A {token}", "A {token}", "a red {token}")),
                          cache_dir=tmp_path)
    assert plain.lora.keys() == alike.lora.keys()
    assert all(torch.equal(plain.lora[k], alike.lora[k]) for k in plain.lora)
    assert torch.equal(plain.tokens[TOKEN], alike.tokens[TOKEN])
    # another caption on one image is another problem: the result moves (not a no-op input)
    assert any(not torch.equal(plain.lora[k], other.lora[k]) for k in plain.lora)


def test_shapesworld_companion_images_name_the_second_object():
    from videomage_core.shapesworld import customization as C
    from videomage_core.shapesworld.generator import NAMED_COLOURS, NAMED_SHAPES, hue_distance

    subject = C.subject_pairs(0, 1)[0][0]
    images, masks, captions = C.subject_images_with_companion(subject, TOKEN, 3, 32, 6)
    again = C.subject_images_with_companion(subject, TOKEN, 3, 32, 6)
    assert images.shape == (6, 32, 32, 3) and masks.shape == (6, 32, 32) and len(captions) == 6
    assert torch.equal(images, again[0]) and captions == again[2]  # the same seed draws the same images
    for image, mask, caption in zip(images, masks, captions):
        head, other = caption.split(" and a ")
        assert head == f"a {TOKEN}"
        colour, shape = other.split(" ")
        assert colour in NAMED_COLOURS and shape in NAMED_SHAPES
        assert hue_distance(NAMED_COLOURS[colour], subject.hue) >= 60  # never mistaken for the subject
        assert mask.sum() > 0  # the subject is on every image ...
        drawn = (image - image.median(0).values.median(0).values).abs().sum(-1) > 0.3
        # ... and something else is drawn beside it: a subject image alone leaves 2-6 anti-aliased edge pixels
        # outside its mask at this size; a second object of the pair size covers 20 or more
        assert (drawn & (mask == 0)).sum() > 12


@pytest.mark.parametrize("share, with_companion", [(False, 0), (0.5, 3), (0.25, 2), (True, 6)])
def test_shapesworld_companion_share_of_the_training_images(share, with_companion):
    """``Recipe.subject_companion`` as a share: that many images (rounded) show the companion and name it, the
    rest show the subject alone under the subject stage's template caption; False and True are none and all."""
    from videomage_core.shapesworld import customization as C

    subject = C.subject_pairs(0, 1)[0][0]
    recipe = C.Recipe(images=6, subject_companion=share)
    images, masks, captions = C.subject_training_images(subject, TOKEN, recipe, 3)
    assert images.shape == (6, 32, 32, 3) and masks.shape == (6, 32, 32)
    if with_companion == 0:
        assert captions is None  # every image trains on the template's caption
        return
    assert [" and a " in c for c in captions] == [True] * with_companion + [False] * (6 - with_companion)
    assert set(captions[with_companion:]) <= {SubjectSettings.prompt_template.format(token=TOKEN)}
    companions = C.subject_images_with_companion(subject, TOKEN, 3, 32, with_companion)
    assert torch.equal(images[:with_companion], companions[0])  # the companion images are the option's own draw
    if with_companion < 6:
        alone = C.subject_images(subject, 3, 32, 6 - with_companion)[0]
        assert torch.equal(images[with_companion:], alone)


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_shapesworld_companion_share_out_of_range_names_the_field(share):
    from videomage_core.shapesworld import customization as C

    with pytest.raises(VideoMageInputError, match="subject_companion"):
        C.subject_training_images(C.subject_pairs(0, 1)[0][0], TOKEN, C.Recipe(images=4, subject_companion=share), 0)
