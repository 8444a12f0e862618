"""Fusion's CutMix background: the engine's ``background`` input and ShapesWorld's empty scene.

A base that cannot draw an empty scene (the built-in model: "" draws an object) puts an object in the
generated background, and L_attn then teaches every token to look away from it; a given background
replaces the generated one. Beyond the paper, ``pair_denoising`` also trains the fused LoRA's denoising on
the CutMix videos.
"""
import pytest
import torch

from videomage_core.errors import VideoMageInputError
from videomage_core.fusion import FusionSettings, cutmix_background, fuse_subjects
from videomage_core.shapesworld import customization as C
from videomage_core.shapesworld.generator import BG_MAX_VALUE
from videomage_core.subject import SubjectSettings, train_subject


def _subject(model, tmp_path, token, word, seed):
    gen = torch.Generator().manual_seed(seed)
    images = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=gen), size=(64, 64),
                                             mode="bilinear").permute(0, 2, 3, 1)
    settings = SubjectSettings(token=token, superclass=word, steps=2, prior_videos=1, prior_frames=2,
                               prior_steps=2, height=64, width=64)
    return train_subject(model, images, settings, cache_dir=tmp_path), images


@pytest.mark.parametrize("frames, expected", [(1, [0, 0, 0, 0]), (7, [0, 2, 4, 6]), (4, [0, 1, 2, 3])])
def test_a_background_still_repeats_and_a_video_is_sampled_evenly(frames, expected):
    video = torch.arange(frames, dtype=torch.float32)[:, None, None, None].expand(frames, 16, 24, 3) / 10
    out = cutmix_background(video, 4, 8, 8)
    assert out.shape == (4, 8, 8, 3)
    # a constant frame stays constant through the crop and resize: each output frame is one input frame
    assert [round(float(f.mean()) * 10) for f in out] == expected


@pytest.mark.parametrize("bad", [torch.rand(8, 8, 3), torch.rand(2, 8, 8, 5)])
def test_a_background_that_is_not_frames_is_one_clear_error(bad):
    with pytest.raises(VideoMageInputError, match=r"^background: "):
        cutmix_background(bad, 4, 8, 8)


def test_fusion_pastes_the_subjects_on_the_given_background_and_generates_none(model, tmp_path):
    (a, img_a), (b, img_b) = (_subject(model, tmp_path, "<toy>", "toy", 1),
                              _subject(model, tmp_path, "<dog>", "dog", 2))
    masks = torch.zeros(2, 64, 64)
    masks[:, 24:40, 24:40] = 1.0
    colour = torch.tensor([0.1, 0.2, 0.3])
    settings = FusionSettings(steps=1, frames=3, height=64, width=64, generation_steps=2, videos_per_subject=1,
                              cutmix_videos=2)
    fused = fuse_subjects(model, [a, b], settings, subject_images=[(img_a, masks), (img_b, masks)],
                          cache_dir=tmp_path, background=colour.expand(1, 64, 64, 3))
    assert fused.train_args["user_background"] is True
    assert not list(tmp_path.glob("background_*")), "no background is generated when one is given"
    for video in fused.cutmix_preview:
        pasted = video != colour  # the subjects' pixels; every other pixel is the given background, exactly
        outside = ~pasted.any(-1)
        assert outside.float().mean() > 0.5
        assert torch.equal(video[outside], colour.expand(int(outside.sum()), 3))


def test_pair_denoising_trains_on_the_cutmix_videos_and_changes_the_fused_lora(model, tmp_path):
    """Without L_attn (lambda2 0), off (0, the paper) builds no CutMix video at all; on, it builds them and the
    same inputs and seed give another fused LoRA, and the artifact records the weight."""
    lambda2 = 0.0
    (a, img_a), (b, img_b) = (_subject(model, tmp_path, "<toy>", "toy", 1),
                              _subject(model, tmp_path, "<dog>", "dog", 2))
    masks = torch.zeros(2, 64, 64)
    masks[:, 24:40, 24:40] = 1.0
    background = torch.tensor([0.1, 0.2, 0.3]).expand(1, 64, 64, 3)

    def fuse(weight):
        settings = FusionSettings(steps=2, frames=3, height=64, width=64, generation_steps=2, videos_per_subject=1,
                                  cutmix_videos=2, lambda2=lambda2, pair_denoising=weight)
        return fuse_subjects(model, [a, b], settings, subject_images=[(img_a, masks), (img_b, masks)],
                             cache_dir=tmp_path, background=background)

    off, on = fuse(0.0), fuse(1.0)
    assert len(off.cutmix_preview) == 0 and len(on.cutmix_preview) == 2
    assert on.train_args["pair_denoising"] == 1.0 and off.train_args["pair_denoising"] == 0.0
    assert off.lora.keys() == on.lora.keys()
    assert any(not torch.equal(off.lora[k], on.lora[k]) for k in off.lora)
    # the first step's L_fusion is the same (same init, same draws before it); the total adds the pair's loss
    assert on.losses[0] > off.losses[0]


def test_shapesworld_fuses_on_an_empty_scene_of_its_world():
    recipe = C.Recipe(size=32)
    still = C.fusion_background(recipe, 700)
    assert still.shape == (1, 32, 32, 3)
    # every object is brighter than any background (generator: BG_MAX_VALUE caps the background's value)
    assert float(still.max()) <= BG_MAX_VALUE + 1e-6
    assert torch.equal(still, C.fusion_background(recipe, 700)), "the same seed draws the same scene"
    assert C.fusion_background(C.Recipe(fusion_background="generated"), 700) is None
    with pytest.raises(VideoMageInputError, match=r"^fusion_background: expected one of"):
        C.fusion_background(C.Recipe(fusion_background="black"), 700)
