"""ShapesWorld generator: determinism, exact ground truth, vocabulary, held-out split, speed."""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from videomage_core.shapesworld import generator as G
from videomage_core.shapesworld.generator import (
    DIRECTIONS,
    HELD_OUT_INTERACTIONS,
    INTERACTIONS,
    NAMED_COLOURS,
    NAMED_SHAPES,
    SHAPES,
    VOCABULARY,
    ClipSpec,
    ObjectSpec,
    render_clip,
    render_subject_images,
    sample_interaction,
    sample_pretraining_clip,
    sample_single,
)


def _clips(seed=0, frames=8, height=64, width=64):
    rng = np.random.default_rng(seed)
    out = [sample_single(rng, d, frames=frames, height=height, width=width) for d in DIRECTIONS]
    out += [sample_interaction(rng, n, frames=frames, height=height, width=width) for n in INTERACTIONS]
    return out


def test_same_seed_same_bytes():
    for make in (lambda r: sample_pretraining_clip(r), lambda r: sample_interaction(r, "orbit"),
                 lambda r: sample_single(r, "up", as_uint8=True)):
        a = [make(np.random.default_rng(7)) for _ in range(3)]
        assert all(x.frames.tobytes() == a[0].frames.tobytes() for x in a)
        assert all(x.masks.tobytes() == a[0].masks.tobytes() and x.caption == a[0].caption for x in a)
    s1 = render_subject_images(ObjectSpec("star", 280, "dots"), 4, np.random.default_rng(3))
    s2 = render_subject_images(ObjectSpec("star", 280, "dots"), 4, np.random.default_rng(3))
    assert s1.images.tobytes() == s2.images.tobytes()
    c1, c2 = sample_pretraining_clip(np.random.default_rng(1)), sample_pretraining_clip(np.random.default_rng(2))
    assert c1.frames.tobytes() != c2.frames.tobytes()


@pytest.mark.parametrize("size", [(8, 64, 64), (16, 64, 64), (8, 32, 32), (8, 48, 80)])
def test_masks_and_centroids_agree_with_pixels(size):
    f, h, w = size
    for clip in _clips(1, f, h, w):
        assert clip.frames.shape == (f, h, w, 3) and clip.frames.dtype == np.float32
        assert clip.masks.shape == (len(clip.objects), f, h, w)
        fg = clip.frames.max(axis=-1) > G.SEGMENT_THRESHOLD
        assert np.array_equal(fg, clip.masks.any(axis=0))                  # segmentation is exact
        assert clip.masks.sum(axis=0).max() <= 1                           # one owner per pixel
        assert clip.masks.sum(axis=(2, 3)).min() > 0                        # every object visible
        ys, xs = np.mgrid[0:h, 0:w]
        for m, c in zip(clip.masks, clip.centroids):
            for t in range(f):
                np.testing.assert_allclose(c[t], [xs[m[t]].mean(), ys[m[t]].mean()], atol=1e-9)
        # mask centroids sit on the rendered centres (all shapes are centred on their centroid)
        assert np.abs(clip.centroids - clip.centers).max() < 0.75
        # fully covered pixels carry exactly the object's hue and value; the background stays dark
        for obj, m in zip(clip.objects, clip.masks):
            rgb = clip.frames[m]
            full = rgb.max(-1) >= obj.value - 1e-5
            assert full.mean() > 0.2
            assert G.hue_distance(_hue(rgb[full]), obj.hue).max() < 0.5
        assert clip.frames[~clip.masks.any(0)].max() <= 0.47


def _hue(rgb):
    r, g, b = rgb[:, 0].astype(float), rgb[:, 1].astype(float), rgb[:, 2].astype(float)
    mx, mn = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    c = mx - mn
    h = np.where(mx == r, ((g - b) / c) % 6, np.where(mx == g, (b - r) / c + 2, (r - g) / c + 4))
    return h * 60.0


def test_uint8_frames_keep_exact_segmentation():
    rng = np.random.default_rng(4)
    for _ in range(10):
        clip = sample_pretraining_clip(rng, as_uint8=True)
        assert clip.frames.dtype == np.uint8
        assert np.array_equal(clip.frames.max(-1) > G.SEGMENT_THRESHOLD * 255, clip.masks.any(0))


def test_trajectories_follow_their_definitions():
    rng = np.random.default_rng(5)
    for _ in range(20):
        for d in DIRECTIONS:
            c = sample_single(rng, d)
            step = np.diff(c.centers[0], axis=0)
            if d == "still":
                assert np.abs(step).max() == 0
            else:
                vec = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[d]
                along = step @ np.array(vec)
                assert along.min() > 2.7 and along.max() < 5.3        # 3-5 px/frame (1/4 px snapping)
                assert np.abs(step @ np.array(vec[::-1])).max() == 0
        for name in INTERACTIONS:
            c = sample_interaction(rng, name)
            a, b = c.centers
            ra, rb = (o.radius_px(64, 64) for o in c.objects)
            dist = np.linalg.norm(a - b, axis=1)
            assert dist.min() >= ra + rb + 2.5                              # never touch
            for p, r in ((a, ra), (b, rb)):                                 # always inside
                assert p.min() >= r - 0.5 and p.max() <= 63 - r + 0.5
            still_b = np.abs(b - b[0]).max() == 0
            assert still_b == (name in ("orbit", "jump_over"))
            if name == "approach":
                assert np.all(np.diff(dist) < 0) and dist[0] - dist[-1] > 15
            if name == "move_apart":
                assert np.all(np.diff(dist) > 0) and dist[-1] - dist[0] > 15
            if name == "chase":
                da, db = a[-1] - a[0], b[-1] - b[0]
                assert da @ db > 0 and np.linalg.norm(da) > np.linalg.norm(db) and da @ (b[0] - a[0]) > 0
            if name == "swap":
                assert np.abs(a[-1] - b[0]).max() < 0.3 and np.abs(b[-1] - a[0]).max() < 0.3
            if name == "orbit":
                assert np.ptp(dist) < 0.75                                   # 1/4 px snapping
                ang = np.degrees(np.unwrap(np.arctan2(*(a - b).T[::-1])))
                assert 235 <= abs(ang[-1] - ang[0]) <= 325
            if name == "jump_over":
                assert abs(a[0, 1] - a[-1, 1]) < 0.3 and a[:, 1].min() < b[0, 1] - 2 * rb
                assert np.sign(a[0, 0] - b[0, 0]) != np.sign(a[-1, 0] - b[0, 0])


def test_held_out_interactions_never_in_pretraining():
    assert set(HELD_OUT_INTERACTIONS) == {"orbit", "jump_over", "swap"}
    assert set(G.PRETRAIN_INTERACTIONS) | set(HELD_OUT_INTERACTIONS) == set(INTERACTIONS)
    rng = np.random.default_rng(6)
    motions = {sample_pretraining_clip(rng).motion for _ in range(400)}
    assert motions.isdisjoint(HELD_OUT_INTERACTIONS)
    assert set(DIRECTIONS) | set(G.PRETRAIN_INTERACTIONS) == motions


def test_still_pairs_are_off_by_default_and_keep_the_random_stream():
    """p_still_pair = 0 draws nothing extra, so a default run's data is the data before the option existed."""
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(50):
        assert sample_pretraining_clip(a).caption == sample_pretraining_clip(b, p_still_pair=0.0).caption
    assert a.random() == b.random()


def test_still_pairs_stand_still_apart_in_frame_and_are_captioned_with_and():
    rng = np.random.default_rng(4)
    clips = [sample_pretraining_clip(rng, height=32, width=32, p_still_pair=0.5) for _ in range(200)]
    pairs = [c for c in clips if c.motion == G.STILL_PAIR]
    assert 70 <= len(pairs) <= 130                      # half of 200, +- 4.2 binomial standard deviations
    assert {c.motion for c in clips} - {G.STILL_PAIR} <= set(DIRECTIONS) | set(G.PRETRAIN_INTERACTIONS)
    for c in pairs:
        assert c.spec.kind == "pair" and len(c.objects) == 2
        assert " and " in c.caption and c.caption.split()[-1] in set(NAMED_SHAPES) | {"shape"}
        assert np.ptp(c.spec.paths, axis=1).max() == 0                     # neither object moves
        (ra, rb) = (o.radius_px(32, 32) for o in c.objects)
        assert np.linalg.norm(c.spec.paths[0, 0] - c.spec.paths[1, 0]) >= ra + rb + 3 * 32 / 64 - 1e-6
        assert c.masks[0].any(axis=(-2, -1)).all() and c.masks[1].any(axis=(-2, -1)).all()  # both in view


@pytest.mark.parametrize("objects, motion, expected", [
    ((ObjectSpec("circle", 3),), "right", "a red circle moving right"),
    ((ObjectSpec("circle", 280),), "right", "a circle moving right"),          # purple: unnamed
    ((ObjectSpec("star", 0),), "left", "a red shape moving left"),             # star: unnamed
    ((ObjectSpec("star", 280),), "still", "a shape standing still"),
    ((ObjectSpec("square", 30),), "up", "a square moving up"),                 # orange: unnamed
    ((ObjectSpec("circle", 0), ObjectSpec("square", 240)), "approach", "a red circle and a blue square approach each other"),
    ((ObjectSpec("ring", 180), ObjectSpec("cross", 300)), "swap", "a shape and another shape swap places"),
    ((ObjectSpec("triangle", 60), ObjectSpec("triangle", 62, "dots")), "chase", "a yellow triangle chases another yellow triangle"),
    ((ObjectSpec("diamond", 120), ObjectSpec("circle", 200)), "orbit", "a green shape orbits a circle"),
    ((ObjectSpec("circle", 240), ObjectSpec("star", 60)), "jump_over", "a blue circle jumps over a yellow shape"),
    ((ObjectSpec("circle", 240), ObjectSpec("star", 60)), "still_pair", "a blue circle and a yellow shape"),
    ((ObjectSpec("ring", 180), ObjectSpec("cross", 300)), "still_pair", "a shape and another shape"),
])
def test_caption_table(objects, motion, expected):
    assert G.caption(objects, motion) == expected


def test_captions_never_name_unnamed_attributes():
    rng = np.random.default_rng(8)
    colour_words, shape_words = set(NAMED_COLOURS), set(NAMED_SHAPES)
    for _ in range(300):
        clip = sample_pretraining_clip(rng) if rng.random() < 0.5 else sample_interaction(rng, INTERACTIONS[rng.integers(6)])
        words = clip.caption.split()
        assert set(words) <= set(VOCABULARY)
        named_colours = [o.colour_word for o in clip.objects if o.colour_word]
        named_shapes = [o.shape for o in clip.objects if o.shape in NAMED_SHAPES]
        assert sorted(w for w in words if w in colour_words) == sorted(named_colours)
        assert sorted(w for w in words if w in shape_words) == sorted(named_shapes)
        assert words.count("shape") == sum(o.shape not in NAMED_SHAPES for o in clip.objects)
        for o in clip.objects:       # sampled hues are clearly named or clearly unnamed
            d = G.hue_distance(o.hue, list(NAMED_COLOURS.values())).min()
            assert d <= G.NAMED_HUE_JITTER + 1e-9 or d >= G.UNNAMED_HUE_MARGIN


def test_world_is_broader_than_its_vocabulary():
    rng = np.random.default_rng(9)
    objs = [sample_pretraining_clip(rng).objects for _ in range(300)]
    objs = [o for group in objs for o in group]
    # every shape; textures only where the edition draws them (the second edition: plain only, as its
    # VAE does not resolve them), though every texture can still be rendered on request
    drawn = {t for t, p in zip(G.TEXTURES, G.TEXTURE_PROBS) if p > 0}
    assert {o.shape for o in objs} == set(SHAPES) and {o.texture for o in objs} == drawn
    assert 0.3 < np.mean([o.colour_word is None for o in objs]) < 0.7
    assert 0.4 < np.mean([o.shape not in NAMED_SHAPES for o in objs]) < 0.75


def test_subject_images_vary_and_have_masks():
    subj = ObjectSpec("star", 280, "stripes", 9 / 64)
    s = render_subject_images(subj, 5, np.random.default_rng(10))
    assert s.images.shape == (5, 64, 64, 3) and s.masks.shape == (5, 64, 64)
    assert np.array_equal(s.images.max(-1) > G.SEGMENT_THRESHOLD, s.masks)
    cents = [np.argwhere(m).mean(0) for m in s.masks]
    assert min(np.linalg.norm(a - b) for i, a in enumerate(cents) for b in cents[i + 1:]) > 1.0
    assert len({round(o.size, 6) for o in s.objects}) == 5
    assert all(replace(o, size=subj.size) == subj for o in s.objects)
    bgs = [img[~m].mean(0) for img, m in zip(s.images, s.masks)]
    assert max(np.abs(a - b).max() for a in bgs for b in bgs) > 0.01        # varied backgrounds


def test_explicit_spec_renders_and_validates():
    spec = ClipSpec(objects=(ObjectSpec("cross", 120, "checker", 0.15),),
                    paths=np.array([[[20.0, 30.0], [24.0, 30.0]]]), motion="right")
    clip = render_clip(spec)
    assert clip.frames.shape == (2, 64, 64, 3) and clip.caption == "a green shape moving right"
    with pytest.raises(ValueError):
        ObjectSpec("blob", 0)
    with pytest.raises(ValueError):
        ObjectSpec("circle", 0, value=0.5)              # too dark to segment exactly
    with pytest.raises(ValueError):
        G.caption((ObjectSpec("circle", 0),), "orbit")


def test_speed_100_clips():
    rng = np.random.default_rng(11)
    sample_pretraining_clip(rng)
    t = time.perf_counter()
    for _ in range(100):
        sample_pretraining_clip(rng)
    assert time.perf_counter() - t < 2.0
