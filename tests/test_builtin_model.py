"""The committed ShapesWorld model: it loads through the normal path, knows what it was trained for,
and samples a short video; the engine takes its attention levels and prompts from ``videomage.json``."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from videomage_core.attention import AttentionRecorder
from videomage_core.bases.zeroscope import DEFAULT_LEVELS
from videomage_core.errors import VideoMageInputError
from videomage_core.model import load_model
from videomage_core.pretrained import BUILTIN_NAME, builtin_model_folders, shapesworld_model_dir
from videomage_core.sampling import SampleSettings, ddim_sample


@pytest.fixture(scope="module")
def builtin():
    return load_model(shapesworld_model_dir())


def test_the_builtin_model_is_committed_small_and_documented():
    folder = shapesworld_model_dir()
    assert builtin_model_folders() == {BUILTIN_NAME: folder}
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
    assert size <= 20.5, size  # the limit is 20 MB for the model; card and plot are small
    card = (folder / "MODEL_CARD.md").read_text()
    for section in ("## Data", "## Model", "## Training", "## Loss curve", "## Controllability"):
        assert section in card
    assert (folder / "loss_curve.png").is_file()
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt"))  # safetensors only


def test_it_loads_with_its_settings_and_8x8_attention_maps(builtin):
    s = builtin.settings
    assert s["model"] == "shapesworld" and (s["frames"], s["height"], s["width"]) == (8, 32, 32)
    assert s["scs_alpha"] == 10.0  # SCS reads it when SCSSettings.alpha0 is None
    assert builtin.attention_levels == tuple(s["attention_levels"]) != DEFAULT_LEVELS
    assert builtin.default("cfg", 9.0) == s["cfg"] and builtin.default("nope", 7) == 7
    recorder = AttentionRecorder(builtin.unet, levels=builtin.attention_levels)
    size, s8 = s["height"], builtin.vae_scale_factor  # maps recorded at the level that gives 8x8 at its size
    lat = torch.randn(1, builtin.unet.config.in_channels, 8, size // s8, size // s8)
    text = builtin.text_encoder(builtin.tokenizer(["a red circle moving left"], padding="max_length",
                                                  max_length=77, return_tensors="pt").input_ids)[0]
    with torch.no_grad(), recorder, recorder.recording(lat.shape):
        builtin.unet(lat, torch.tensor([500]), encoder_hidden_states=text)
    maps = recorder.spatial_maps()
    assert maps.shape[-2:] == (8, 8)  # the issue: maps at least 8x8


def test_it_samples_a_short_video(builtin):
    st = SampleSettings(frames=8, height=32, width=32, steps=4, cfg=3.0, seed=0)
    a = ddim_sample(builtin, "a red circle moving right", st)
    b = ddim_sample(builtin, "a red circle moving right", st)
    s8 = builtin.vae_scale_factor
    assert a.shape == (1, builtin.unet.config.in_channels, 8, 32 // s8, 32 // s8) and torch.isfinite(a).all()
    assert torch.equal(a, b)  # same seed, same video


def test_model_settings_drive_levels_and_prompts(tiny_model_dir, tmp_path):
    from videomage_core.subject import PRIOR_CAPTIONS, prior_videos

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "videomage.json").unlink()  # a model folder without one: every default is the engine's
    plain = load_model(folder)
    assert plain.settings == {} and plain.attention_levels == DEFAULT_LEVELS
    (folder / "videomage.json").write_text(json.dumps({
        "attention_levels": ["down_blocks.1", "up_blocks.2"], "prior_captions": ["a {s} standing still"]}))
    model = load_model(folder)
    assert model.attention_levels == ("down_blocks.1", "up_blocks.2")
    rec = AttentionRecorder(model.unet, levels=model.attention_levels)
    assert rec.layers and all(n.startswith(("down_blocks.1", "up_blocks.2")) for n in rec.layers)
    got = prior_videos(model, "toy", 2, 2, 32, 32, 1, 1.0, 0)
    assert [c for _, c in got] == ["a toy standing still"] * 2
    assert PRIOR_CAPTIONS[0].format(s="toy") != "a toy standing still"
    (folder / "videomage.json").write_text("{not json")
    with pytest.raises(VideoMageInputError, match="model_path: .*videomage.json"):
        load_model(folder)


def test_customization_probe_samples_from_the_motion_noise_prior(builtin):
    """``generate_with(prior_from=motion)`` starts from the motion's inverted reference (beta from the
    recipe): beta 0 is plain sampling, beta > 0 another start, hence another video."""
    from dataclasses import replace
    from types import SimpleNamespace

    from videomage_core.diffusion import encode_video
    from videomage_core.shapesworld import customization as C

    recipe = C.Recipe.for_model(builtin, sample_steps=3)
    ref = C.reference_clip(0, "orbit", (), recipe.frames, recipe.size)
    motion = SimpleNamespace(reference_latents=encode_video(builtin, torch.from_numpy(ref.frames).float()))
    prompt = "a shape orbits another shape"
    plain = C.generate_with(builtin, None, prompt, recipe, seed=3)
    off = C.generate_with(builtin, None, prompt, replace(recipe, noise_prior_beta=0.0), seed=3, prior_from=motion)
    on = C.generate_with(builtin, None, prompt, recipe, seed=3, prior_from=motion)
    assert torch.equal(plain, off)
    assert on.shape == plain.shape and (on - plain).abs().mean() > 1e-3
