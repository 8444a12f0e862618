"""Evaluation metrics (shared/method.md section 5) on tiny random CLIP / DINO folders.

Each metric is checked against a hand computation that takes a different route: pixels from
transformers' own PIL image processors, embeddings from the towers and projections called one
image at a time, cosines as explicit Python loops over unit vectors.
"""
from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor, CLIPTokenizer, CLIPTokenizerFast

from videomage_core.errors import VideoMageInputError
from videomage_core.metrics import (
    ImageTransform, clip_i, clip_t, dino_i, evaluate_video, load_clip, load_dino,
    temporal_consistency,
)
from videomage_core.tiny_encoders import TINY_IMAGE_SIZE, build_tiny_clip, build_tiny_dino

PROMPT = "a dog and a cat playing with a ball"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    return build_tiny_clip(root / "clip", seed=0), build_tiny_dino(root / "dino", seed=0)


@pytest.fixture(scope="module")
def clip(folders):
    return load_clip(folders[0])


@pytest.fixture(scope="module")
def dino(folders):
    return load_dino(folders[1])


def _images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Smooth colour fields with a moving bright square: different images give clearly
    different embeddings even in a random model (pure noise all looks alike)."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, h)[:, None, None]
    xs = torch.linspace(0, 1, w)[None, :, None]
    out = []
    for i in range(n):
        a, b, c = torch.rand(3, 3, generator=g)
        img = (a * ys + b * xs + c * (1 - ys) * xs) / 2
        y0, x0 = (i * 5) % max(h - 8, 1), (i * 9) % max(w - 8, 1)
        img[y0:y0 + 8, x0:x0 + 8] = 1.0
        out.append(img.clamp(0, 1))
    return torch.stack(out)


FRAMES = _images(5, 40, 72, seed=1)  # 40x72 keeps the 320x576 aspect ratio of the paper's videos
REFS = _images(3, 50, 40, seed=2)


def _uint8(images: torch.Tensor) -> list[np.ndarray]:
    return [(img.clamp(0, 1) * 255).to(torch.uint8).numpy() for img in images]


def _hf_pixels(folder, images: torch.Tensor, **overrides) -> list[torch.Tensor]:
    """Reference pixels from transformers' PIL-backend processor, one image at a time."""
    proc = AutoImageProcessor.from_pretrained(folder, backend="pil")
    return [torch.as_tensor(proc([u8], return_tensors="np", **overrides)["pixel_values"])
            for u8 in _uint8(images)]


DINO_OVERRIDES = dict(size={"shortest_edge": 37}, do_center_crop=True, resample=3,
                      crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    u, v = u.double().flatten().tolist(), v.double().flatten().tolist()
    dot = sum(a * b for a, b in zip(u, v))
    return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def _clip_image_embs(clip, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [clip.model.visual_projection(clip.model.vision_model(pixel_values=p).pooler_output)[0]
                for p in _hf_pixels(clip.path, images)]


def _clip_text_emb(clip, prompt: str) -> torch.Tensor:
    ids = clip.tokenizer(prompt, return_tensors="pt")["input_ids"]
    assert ids[0, 0] == clip.tokenizer.bos_token_id and ids[0, -1] == clip.tokenizer.eos_token_id
    assert (ids == clip.tokenizer.eos_token_id).sum() == 1  # pooling takes the end-of-text token
    with torch.no_grad():
        hidden = clip.model.text_model(input_ids=ids).last_hidden_state  # after final LayerNorm
        return clip.model.text_projection(hidden[0, -1])


def _dino_embs(dino, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [dino.model(pixel_values=p).last_hidden_state[0, 0]
                for p in _hf_pixels(dino.path, images, **DINO_OVERRIDES)]


# --- the folders ------------------------------------------------------------------------------

def test_tiny_folders_load_like_real_ones(folders, clip, dino):
    clip_dir, dino_dir = folders
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "vocab.json",
                 "merges.txt", "tokenizer.json", "tokenizer_config.json"):
        assert os.path.isfile(os.path.join(clip_dir, name)), name
    slow, fast = CLIPTokenizer.from_pretrained(clip_dir), CLIPTokenizerFast.from_pretrained(clip_dir)
    assert len(slow) > 100  # not the 3-token tokenizer transformers 5 builds from vocab_file=
    assert slow(PROMPT)["input_ids"] == fast(PROMPT)["input_ids"] == clip.tokenizer(PROMPT)["input_ids"]
    assert clip.model.config.text_config.eos_token_id == clip.tokenizer.eos_token_id
    # full byte alphabet: no character falls back to the unknown token (= end-of-text in CLIP)
    ids = slow("A corgi & a panda: café, 3 ducks!")["input_ids"]
    assert ids.count(slow.eos_token_id) == 1 and ids[-1] == slow.eos_token_id
    assert json.load(open(f"{dino_dir}/config.json"))["model_type"] == "vit"
    assert dino.model.pooler is None  # DINO has no pooler: the embedding is the CLS token
    assert not any(p.requires_grad for p in clip.model.parameters())
    assert not clip.model.training and not dino.model.training
    # transformers 5: the projected features come back as an output object, not a tensor
    out = clip.model.get_image_features(pixel_values=torch.zeros(1, 3, 32, 32))
    if not isinstance(out, torch.Tensor):
        assert out.pooler_output.shape == (1, clip.model.config.projection_dim)


# --- preprocessing ----------------------------------------------------------------------------

@pytest.mark.parametrize("hw", [(40, 72), (72, 40), (32, 32), (50, 40)])
def test_clip_preprocessing_matches_transformers_pil_processor(clip, hw):
    images = _images(2, *hw, seed=3)
    ours = clip.transform(images)
    assert ours.shape == (2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    ref = torch.cat(_hf_pixels(clip.path, images))
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_dino_preprocessing_is_dreamvideo_resize_256_crop_224(dino):
    t = dino.transform
    assert (t.resize, t.crop) == (round(TINY_IMAGE_SIZE * 256 / 224), TINY_IMAGE_SIZE)
    assert t.mean == (0.485, 0.456, 0.406) and t.std == (0.229, 0.224, 0.225)
    images = _images(2, 40, 72, seed=4)
    ref = torch.cat(_hf_pixels(dino.path, images, **DINO_OVERRIDES))
    torch.testing.assert_close(t(images), ref, atol=1e-6, rtol=0)
    # the hub processor's own setting (squash to 32x32) is a different image
    squash = torch.cat(_hf_pixels(dino.path, images))
    assert (t(images) - squash).abs().max() > 0.1


def test_center_crop_and_quantisation_follow_torchvision():
    identity = ImageTransform(resize=4, crop=4, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    for width, left in ((7, 2), (9, 2), (8, 2), (11, 4)):  # round-half-even as torchvision's round()
        img = (torch.arange(width, dtype=torch.float32) / 255).view(1, 1, width, 1).expand(1, 4, width, 3)
        out = identity(img.contiguous())
        assert out.shape == (1, 3, 4, 4)
        cols = (out[0, 0, 0] * 255).round().tolist()
        assert cols == [float(c) for c in range(left, left + 4)], (width, cols)
    # 0..1 floats are truncated to uint8 as ComfyUI saves images: 0.5 -> 127
    half = identity(torch.full((1, 4, 4, 3), 0.5))
    assert torch.allclose(half, torch.full_like(half, 127 / 255))


# --- metrics against hand computations --------------------------------------------------------

def test_clip_t_matches_hand_computation(clip):
    text = _clip_text_emb(clip, PROMPT)
    frames = _clip_image_embs(clip, FRAMES)
    expected = sum(_cos(f, text) for f in frames) / len(frames)
    assert clip_t(FRAMES, PROMPT, clip) == pytest.approx(expected, abs=1e-5)
    other = clip_t(FRAMES, "two people dancing on the beach", clip)
    assert abs(other - expected) > 1e-3  # the prompt matters


def test_clip_i_matches_hand_computation(clip):
    frames, refs = _clip_image_embs(clip, FRAMES), _clip_image_embs(clip, REFS)
    total, count = 0.0, 0
    for f in frames:
        for r in refs:
            total += _cos(f, r)
            count += 1
    assert count == 15
    assert clip_i(FRAMES, REFS, clip) == pytest.approx(total / count, abs=1e-5)


def test_dino_i_matches_hand_computation(dino):
    frames, refs = _dino_embs(dino, FRAMES), _dino_embs(dino, REFS)
    expected = sum(_cos(f, r) for f in frames for r in refs) / (len(frames) * len(refs))
    assert dino_i(FRAMES, REFS, dino) == pytest.approx(expected, abs=1e-5)


def test_temporal_consistency_matches_hand_computation(clip):
    embs = _clip_image_embs(clip, FRAMES)
    pairs = [_cos(embs[i], embs[i + 1]) for i in range(len(embs) - 1)]
    assert len(pairs) == 4
    value = temporal_consistency(FRAMES, clip)
    assert value == pytest.approx(sum(pairs) / len(pairs), abs=1e-5)
    assert value < 1 - 1e-4  # the frames differ


def test_identical_images_score_one(clip, dino):
    still = FRAMES[:1].expand(6, -1, -1, -1).contiguous()
    assert temporal_consistency(still, clip) == pytest.approx(1.0, abs=1e-5)
    assert clip_i(still, FRAMES[:1], clip) == pytest.approx(1.0, abs=1e-5)
    assert dino_i(still, FRAMES[:1], dino) == pytest.approx(1.0, abs=1e-5)


def test_evaluate_video_returns_available_metrics(clip, dino):
    full = evaluate_video(FRAMES, PROMPT, REFS, clip=clip, dino=dino)
    assert list(full) == ["clip_t", "clip_i", "dino_i", "temporal_consistency"]
    assert full["clip_t"] == pytest.approx(clip_t(FRAMES, PROMPT, clip), abs=1e-12)
    assert full["clip_i"] == pytest.approx(clip_i(FRAMES, REFS, clip), abs=1e-12)
    assert full["dino_i"] == pytest.approx(dino_i(FRAMES, REFS, dino), abs=1e-12)
    assert full["temporal_consistency"] == pytest.approx(temporal_consistency(FRAMES, clip), abs=1e-12)
    assert all(isinstance(v, float) and -1 <= v <= 1 for v in full.values())
    assert list(evaluate_video(FRAMES, PROMPT, None, clip=clip)) == ["clip_t", "temporal_consistency"]
    assert list(evaluate_video(FRAMES, None, REFS, dino=dino)) == ["dino_i"]
    assert list(evaluate_video(FRAMES[:1], PROMPT, REFS, clip=clip)) == ["clip_t", "clip_i"]


def test_long_prompt_is_truncated_to_clip_context(clip):
    long_prompt = " ".join(["dog"] * 200)
    value = clip_t(FRAMES, long_prompt, clip)
    assert math.isfinite(value) and -1 <= value <= 1


def test_bf16_close_to_fp32(folders, clip):
    low = load_clip(folders[0], dtype="bf16")
    assert low.dtype == torch.bfloat16
    assert clip_t(FRAMES, PROMPT, low) == pytest.approx(clip_t(FRAMES, PROMPT, clip), abs=0.05)


# --- determinism ------------------------------------------------------------------------------

def test_deterministic_and_seeded(tmp_path, folders, clip, dino):
    first = evaluate_video(FRAMES, PROMPT, REFS, clip=clip, dino=dino)
    assert evaluate_video(FRAMES, PROMPT, REFS, clip=clip, dino=dino) == first
    rng_before = torch.random.get_rng_state()
    again_clip = load_clip(build_tiny_clip(tmp_path / "clip", seed=0))
    again_dino = load_dino(build_tiny_dino(tmp_path / "dino", seed=0))
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # builders leave the global RNG
    for built, again in ((folders[0], again_clip.path), (folders[1], again_dino.path)):
        names = sorted(os.listdir(built))
        assert names == sorted(os.listdir(again))
        for name in names:  # byte-identical folders, tokenizer included
            with open(os.path.join(built, name), "rb") as a, open(os.path.join(again, name), "rb") as b:
                assert a.read() == b.read(), name
    assert evaluate_video(FRAMES, PROMPT, REFS, clip=again_clip, dino=again_dino) == first
    other = evaluate_video(FRAMES, PROMPT, REFS, clip=load_clip(build_tiny_clip(tmp_path / "c1", seed=1)),
                           dino=load_dino(build_tiny_dino(tmp_path / "d1", seed=1)))
    assert all(abs(other[k] - first[k]) > 1e-6 for k in first)


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, words", [
    (torch.rand(40, 72, 3), "[N, H, W, 3]"),
    (torch.rand(2, 40, 72, 4), "[N, H, W, 3]"),
    (torch.rand(2, 3, 40, 72), "[N, H, W, 3]"),
    (torch.zeros(0, 40, 72, 3), "at least 1"),
    (torch.full((2, 8, 8, 3), 2.0), "0..1"),
    (torch.full((2, 8, 8, 3), -0.5), "0..1"),
    (torch.full((2, 8, 8, 3), float("nan")), "NaN"),
    (torch.zeros(2, 8, 8, 3, dtype=torch.uint8), "float"),
    (np.zeros((2, 8, 8, 3), dtype=np.float32), "float tensor"),
])
def test_bad_frames_are_named(clip, bad, words):
    with pytest.raises(ValueError, match=r"^frames: ") as info:
        clip_t(bad, PROMPT, clip)
    assert words in str(info.value)
    with pytest.raises(ValueError, match=r"^frames: "):
        evaluate_video(bad, PROMPT, None, clip=clip)


def test_bad_refs_prompt_and_encoders_are_named(clip, dino):
    with pytest.raises(ValueError, match=r"^ref_images: .*at least 1"):
        clip_i(FRAMES, torch.zeros(0, 32, 32, 3), clip)
    with pytest.raises(ValueError, match=r"^ref_images: .*at least 1"):
        evaluate_video(FRAMES, PROMPT, torch.zeros(0, 32, 32, 3), dino=dino)
    with pytest.raises(ValueError, match=r"^ref_images: .*0\.\.1"):
        dino_i(FRAMES, REFS * 3, dino)
    with pytest.raises(ValueError, match=r"^frames: needs at least 2"):
        temporal_consistency(FRAMES[:1], clip)
    for prompt in ("", "   ", None):
        with pytest.raises(ValueError, match=r"^prompt: "):
            clip_t(FRAMES, prompt, clip)
    with pytest.raises(ValueError, match=r"^clip: expected a ClipEncoder"):
        clip_t(FRAMES, PROMPT, dino)
    with pytest.raises(ValueError, match=r"^dino: expected a DinoEncoder"):
        dino_i(FRAMES, REFS, clip)
    with pytest.raises(ValueError, match=r"^clip: evaluate_video needs"):
        evaluate_video(FRAMES, PROMPT, REFS)


def test_missing_or_wrong_folders_are_named(tmp_path, folders):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=r"^clip_dir: no CLIP model folder at ") as info:
        load_clip(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(ValueError, match=r"^dino_dir: no DINO ViT model folder at "):
        load_dino(missing)
    with pytest.raises(ValueError, match=r"^clip_model: no CLIP model folder"):
        load_clip(missing, input_name="clip_model")
    with pytest.raises(ValueError, match=r"^dino_dir: .*holds a 'clip' model"):
        load_dino(folders[0])
    with pytest.raises(ValueError, match=r"^clip_dir: .*holds a 'vit' model"):
        load_clip(folders[1])
    no_weights = tmp_path / "no_weights"
    shutil.copytree(folders[0], no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"^clip_dir: .*no \.safetensors weights"):
        load_clip(no_weights)
    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(folders[0], no_tokenizer)
    for name in ("tokenizer.json", "vocab.json"):
        (no_tokenizer / name).unlink()
    with pytest.raises(ValueError, match=r"^clip_dir: .*no CLIP tokenizer"):
        load_clip(no_tokenizer)
    assert issubclass(VideoMageInputError, ValueError)
