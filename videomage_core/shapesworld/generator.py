"""ShapesWorld: procedural videos of coloured shapes with captions and exact ground truth.

A stand-in world for ZeroScope where no pretrained weights exist: a tiny text-to-video model can
be pretrained on these clips, then customized (subjects, motions) and measured exactly with
:mod:`videomage_core.shapesworld.measures`. numpy only; deterministic from a
``numpy.random.Generator``; about 2 ms per 8x64x64 clip on a busy 2-core CPU.

Conventions
-----------
- Frames are ``float32 [F, H, W, 3]`` in 0..1 (``uint8`` on request). Coordinates are ``(x, y)``
  in pixels, pixel ``i`` covering ``[i - 0.5, i + 0.5]``; ``y`` grows downwards.
- Sizes in :class:`ObjectSpec` are fractions of ``min(H, W)`` (the object's circumradius), so a
  spec renders the same at any resolution. Speeds and geometry scale with ``u = min(H, W) / 64``.
  Single-object speeds are per frame; interactions are defined over the whole clip (s = 0..1), so
  their per-frame speed falls as F grows.
- Every shape lies inside the disc of its circumradius; two-object trajectories keep the discs
  at least ``3 u`` apart, so objects never touch or overlap in generated clips.

World
-----
- Shapes (drawable): circle, square, triangle, diamond, star, ring, cross; unrotated. Radius
  7-11 u px for one object, 6.5-8.5 u px in two-object clips.
- Hue: continuous HSV hue in degrees; saturation 0.8-1, value 0.88-1 (objects are bright and
  saturated). Texture (object-attached, period ``6 u`` px): plain, stripes (vertical), dots,
  checker; the second tone of a texture is a pale tint of the same hue and value (saturation x0.3),
  so texture never changes the hue nor the brightness.
- Background: dark (value <= 0.22), weakly tinted, lightly patterned (flat, gradient, blobs,
  weave), static. Objects are composited with a coverage->alpha map that jumps at coverage 0.5,
  so ``max(rgb) > SEGMENT_THRESHOLD`` is *exactly* the set of pixels at least half covered by an
  object: segmentation of ground-truth clips is exact (anti-aliased edges nonetheless).

Vocabulary (what captions may name)
-----------------------------------
- Colours: ``red`` (0 deg), ``yellow`` (60), ``green`` (120), ``blue`` (240) are named. A hue within
  ``NAMED_HUE_TOLERANCE`` (12 deg) of one of them is named; the sampler draws named hues within
  +-8 deg and unnamed hues at least 25 deg away from every named one (orange, lime, cyan, azure,
  purple, magenta, pink...). Unnamed hues are drawable but never spoken.
- Shapes: ``circle``, ``square``, ``triangle`` are named; diamond, star, ring, cross are drawable
  but unnamed and are called ``shape`` (the superclass word, :data:`SUPERCLASS`).
- Textures and sizes are never named: they are pure appearance, the part of a subject's identity
  that only subject customization (token + LoRA) can carry.
- Noun phrase: ``a [colour] (shape-name | shape)``: purple circle -> "a circle", red star ->
  "a red shape", purple star -> "a shape". A second object with the same noun phrase is
  "another ...".
- Single-object motions (:data:`DIRECTIONS`): ``"{np} moving left|right|up|down"`` and
  ``"{np} standing still"``; speed 3-5 px/frame at 64 px (capped so the object stays in frame).
- Two-object interactions (:data:`INTERACTIONS`), object A is named first:

  ==========  ==========================================  ====================================
  name        caption                                     trajectory (s = t / (F - 1))
  ==========  ==========================================  ====================================
  approach    "{A} and {B} approach each other"           on one axis (horizontal or vertical),
                                                          both move to the midpoint at equal
                                                          speed; the distance shrinks by 22-34
                                                          u px (less if the frame is tight) to
                                                          a 3-5 u px gap between the discs
  move_apart  "{A} and {B} move apart"                    approach reversed in time
  chase       "{A} chases {B}"                            same axis and direction; A behind B
                                                          and faster: B moves 12-24 u px, A
                                                          8-14 u px more, ending 3-6 u px apart
  orbit       "{A} orbits {B}"                            B still; A on a circle around B, radius
                                                          = rA + rB + 4..8 u, sweep 240-320 deg
  jump_over   "{A} jumps over {B}"                        B still on the ground; A from one side
                                                          to the other on a parabola over B
                                                          (x linear, y = ground - h 4s(1-s),
                                                          h >= 2 rB + 4u); horizontal only
  swap        "{A} and {B} swap places"                   both move on two half ellipses about
                                                          their midpoint (A over, B under;
                                                          half-axes D >= 12u along, E across,
                                                          2E >= rA + rB + 3u): A - B turns by
                                                          180 deg; horizontal or vertical
  ==========  ==========================================  ====================================

- Split: :data:`HELD_OUT_INTERACTIONS` = ("orbit", "jump_over", "swap") never appear in
  pretraining samples (:func:`sample_pretraining_clip`: 60 % single-object clips, 40 %
  approach / move_apart / chase); they are the motions a user teaches
  from one reference clip. Pretraining sees single-object motions and approach / move_apart /
  chase, so it knows two-object scenes and relative motion but not these three patterns.

Ground truth per clip (:class:`Clip`): frames, per-object visible masks ``[N, F, H, W]``,
mask centroids ``[N, F, 2]``, exact rendered centres ``[N, F, 2]``, object identities
(:class:`ObjectSpec`), the motion label and the caption.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from .paths import (  # noqa: F401 (the motions and their paths, re-exported: the world's names in one place)
    DIRECTIONS,
    INTERACTIONS,
    SPEED,
    STILL_PAIR,
    _bounds,
    interaction_paths,
    still_pair_paths,
    single_path,
)
from .sprites import (  # noqa: F401 (re-exported: the world's names in one place)
    SUPERSAMPLE,
    TEXTURE_PERIOD,
    _quantize,
    make_sprite,
    shape_inside,
    splat,
    splat_frames,
    texture_pale,
)

# --------------------------------------------------------------------------- vocabulary

SHAPES = ("circle", "square", "triangle", "diamond", "star", "ring", "cross")
NAMED_SHAPES = ("circle", "square", "triangle")
TEXTURES = ("plain", "stripes", "dots", "checker")
# Second edition: every sampled object is plain. At 16x16 latents the VAE does not resolve textures
# (round-trip texture accuracy 0.33-0.39 against chance 0.25, shape 0.96-1.00, hue 0.90-0.96), so
# texture is not part of an identity; textured objects can still be rendered on request.
TEXTURE_PROBS = (1.0, 0.0, 0.0, 0.0)
NAMED_COLOURS = {"red": 0.0, "yellow": 60.0, "green": 120.0, "blue": 240.0}
# Reference hues for reporting only (unnamed ones never appear in captions).
PALETTE = {"red": 0.0, "orange": 30.0, "yellow": 60.0, "lime": 90.0, "green": 120.0,
           "cyan": 180.0, "blue": 240.0, "purple": 280.0, "pink": 320.0}
NAMED_HUE_TOLERANCE = 12.0   # a hue this close to a named centre is named in captions
NAMED_HUE_JITTER = 8.0       # the sampler's spread around a named centre
UNNAMED_HUE_MARGIN = 25.0    # sampled unnamed hues stay this far from every named centre
SUPERCLASS = "shape"

HELD_OUT_INTERACTIONS = ("orbit", "jump_over", "swap")
PRETRAIN_INTERACTIONS = tuple(i for i in INTERACTIONS if i not in HELD_OUT_INTERACTIONS)
SYMMETRIC_INTERACTIONS = ("approach", "move_apart", "swap")   # A and B play the same role

_INTERACTION_TEMPLATES = {
    "approach": "{a} and {b} approach each other",
    "move_apart": "{a} and {b} move apart",
    "chase": "{a} chases {b}",
    "orbit": "{a} orbits {b}",
    "jump_over": "{a} jumps over {b}",
    "swap": "{a} and {b} swap places",
    STILL_PAIR: "{a} and {b}",  # two still objects: pretraining only (PretrainConfig.p_still_pair)
}

#: Every word a caption can contain (for building a tokenizer).
VOCABULARY = tuple(sorted(
    {"a", "another", "and", "moving", "standing", "still", "left", "right", "up", "down",
     SUPERCLASS, *NAMED_SHAPES, *NAMED_COLOURS}
    | {w for t in _INTERACTION_TEMPLATES.values() for w in t.split() if not w.startswith("{")}))

# --------------------------------------------------------------------------- rendering constants

SEGMENT_THRESHOLD = 0.485   # max(rgb) above this is object; see module docstring
BG_MAX_VALUE = 0.22
OBJ_MIN_VALUE = 0.85
PALE_SATURATION = 0.3       # texture's second tone: saturation x this
SINGLE_SIZE = (7 / 64, 11 / 64)
PAIR_SIZE = (6.5 / 64, 8.5 / 64)
BACKGROUND_PATTERNS = ("flat", "gradient", "blobs", "weave")


def hue_distance(a, b):
    """Circular distance between hues in degrees (0..180); broadcasts."""
    d = np.abs((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) % 360.0)
    return np.minimum(d, 360.0 - d)


def colour_word(hue: float) -> str | None:
    """The caption word for a hue, or None when the hue is not named."""
    for name, centre in NAMED_COLOURS.items():
        if hue_distance(hue, centre) <= NAMED_HUE_TOLERANCE:
            return name
    return None


def shape_word(shape: str) -> str:
    return shape if shape in NAMED_SHAPES else SUPERCLASS


def hsv_to_rgb(h, s, v) -> np.ndarray:
    """HSV (hue in degrees, s and v in 0..1) to RGB; broadcasts, returns [..., 3]."""
    h = np.asarray(h, dtype=np.float64) % 360.0 / 60.0
    s = np.asarray(s, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None]) % 6.0
    return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ObjectSpec:
    """Identity of one object. ``size`` is the circumradius as a fraction of min(H, W)."""

    shape: str
    hue: float
    texture: str = "plain"
    size: float = 8 / 64
    saturation: float = 0.9
    value: float = 0.95

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; one of {SHAPES}")
        if self.texture not in TEXTURES:
            raise ValueError(f"unknown texture {self.texture!r}; one of {TEXTURES}")
        if not (OBJ_MIN_VALUE <= self.value <= 1.0) or not (0.5 <= self.saturation <= 1.0):
            raise ValueError("objects must be bright and saturated: value >= 0.85, saturation >= 0.5")
        object.__setattr__(self, "hue", float(self.hue) % 360.0)

    @property
    def colour_word(self) -> str | None:
        return colour_word(self.hue)

    @property
    def noun_phrase(self) -> str:
        words = ["a"] + ([self.colour_word] if self.colour_word else []) + [shape_word(self.shape)]
        return " ".join(words)

    def radius_px(self, height: int, width: int) -> float:
        return self.size * min(height, width)


@dataclass(frozen=True)
class BackgroundSpec:
    hue: float = 220.0
    saturation: float = 0.4
    value: float = 0.1
    pattern: str = "flat"
    amplitude: float = 0.0
    angle: float = 0.0
    seed: int = 0


@dataclass
class ClipSpec:
    """Everything needed to render a clip: ``render_clip(spec)`` is a pure function.

    ``paths`` are snapped to sub-sample centres (1/4 px), where rendering is exact."""

    objects: tuple[ObjectSpec, ...]
    paths: np.ndarray           # [N, F, 2] object centres (x, y) in px
    motion: str                 # a direction (one object) or an interaction name (two)
    background: BackgroundSpec = field(default_factory=BackgroundSpec)
    height: int = 64
    width: int = 64

    def __post_init__(self):
        self.objects = tuple(self.objects)
        self.paths = _quantize(np.asarray(self.paths, dtype=np.float64).reshape(len(self.objects), -1, 2))
        caption(self.objects, self.motion)          # validates the motion and the object count

    @property
    def num_frames(self) -> int:
        return self.paths.shape[1]

    @property
    def kind(self) -> str:
        return "interaction" if self.motion in INTERACTIONS else "pair" if self.motion == STILL_PAIR else "single"

    @property
    def caption(self) -> str:
        return caption(self.objects, self.motion)


@dataclass
class Clip:
    frames: np.ndarray          # [F, H, W, 3] float32 0..1 (or uint8)
    masks: np.ndarray           # [N, F, H, W] bool, visible pixels of each object
    centroids: np.ndarray       # [N, F, 2] mask centroids (x, y); NaN where an object is hidden
    spec: ClipSpec

    @property
    def caption(self) -> str:
        return self.spec.caption

    @property
    def objects(self) -> tuple[ObjectSpec, ...]:
        return self.spec.objects

    @property
    def motion(self) -> str:
        return self.spec.motion

    @property
    def centers(self) -> np.ndarray:
        """Exact rendered shape centres [N, F, 2] (quantized to 1/SUPERSAMPLE px)."""
        return self.spec.paths


@dataclass
class SubjectImages:
    images: np.ndarray          # [n, H, W, 3] float32
    masks: np.ndarray           # [n, H, W] bool
    objects: tuple[ObjectSpec, ...]   # the subject at each image's scale


def interaction_prompt(motion: str, a: str, b: str) -> str:
    """The caption template of an interaction (or ``STILL_PAIR``) filled with two noun phrases ("a <s1>",
    "a <s2>")."""
    if motion not in _INTERACTION_TEMPLATES:
        raise ValueError(f"unknown interaction {motion!r}")
    return _INTERACTION_TEMPLATES[motion].format(a=a, b=b)


def caption(objects: Sequence[ObjectSpec], motion: str) -> str:
    nps = [o.noun_phrase for o in objects]
    if motion in DIRECTIONS:
        if len(objects) != 1:
            raise ValueError("a direction caption needs exactly one object")
        return f"{nps[0]} standing still" if motion == "still" else f"{nps[0]} moving {motion}"
    if motion not in INTERACTIONS and motion != STILL_PAIR:
        raise ValueError(f"unknown motion {motion!r}")
    if len(objects) != 2:
        raise ValueError("an interaction caption needs exactly two objects")
    a, b = nps
    if b == a:
        b = "another " + b[2:]
    return interaction_prompt(motion, a, b)


# --------------------------------------------------------------------------- rendering


def render_background(bg: BackgroundSpec, height: int, width: int) -> np.ndarray:
    """[H, W, 3] float32 static background, max channel <= BG_MAX_VALUE."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = xx / max(width - 1, 1), yy / max(height - 1, 1)
    if bg.pattern == "flat":
        p = np.zeros((height, width))
    elif bg.pattern == "gradient":
        a = math.radians(bg.angle)
        p = (u - 0.5) * math.cos(a) + (v - 0.5) * math.sin(a)
        p = p / max(np.abs(p).max(), 1e-9)
    elif bg.pattern == "blobs":
        g = np.random.default_rng(bg.seed).uniform(-1.0, 1.0, size=(4, 4))
        wy = np.clip(1.0 - np.abs(v[:, :1] * 3 - np.arange(4)[None, :]), 0, 1)   # [H, 4]
        wx = np.clip(1.0 - np.abs(u[:1, :].T * 3 - np.arange(4)[None, :]), 0, 1)  # [W, 4]
        p = wy @ g @ wx.T
    elif bg.pattern == "weave":
        f = 3.0 + (bg.seed % 4)
        a = math.radians(bg.angle)
        p = np.sin(2 * math.pi * f * (u * math.cos(a) + v * math.sin(a))) * np.sin(2 * math.pi * f * (v * math.cos(a) - u * math.sin(a)))
    else:
        raise ValueError(f"unknown background pattern {bg.pattern!r}")
    val = np.clip(bg.value * (1.0 + bg.amplitude * p), 0.0, BG_MAX_VALUE)
    return (hsv_to_rgb(bg.hue, bg.saturation, 1.0)[None, None, :] * val[..., None]).astype(np.float32)


def render_clip(spec: ClipSpec, as_uint8: bool = False) -> Clip:
    """Render a clip (pure function of ``spec``): frames, masks and centroids."""
    n, f = len(spec.objects), spec.num_frames
    h, w = spec.height, spec.width
    unit = min(h, w) / 64.0
    cov = np.empty((n, f, h, w), dtype=np.float32)
    pale = np.empty((n, f, h, w), dtype=np.float32)
    for i, obj in enumerate(spec.objects):
        table = make_sprite(obj.shape, obj.radius_px(h, w), obj.texture, TEXTURE_PERIOD * unit)
        cov[i], pale[i] = splat_frames(table, spec.paths[i], h, w)
    # composite only where some object covers a pixel (elsewhere the frame is the background)
    idx = np.flatnonzero(cov.reshape(n, -1).max(axis=0) if n > 1 else cov.reshape(-1))
    cv, pl = cov.reshape(n, -1)[:, idx], pale.reshape(n, -1)[:, idx]
    occ = np.ones_like(cv)          # later objects are in front: occ[i] = part not hidden by them
    for i in range(n - 2, -1, -1):
        occ[i] = occ[i + 1] * (1.0 - cv[i + 1])
    union = 1.0 - np.prod(1.0 - cv, axis=0)
    # alpha = 0.6 U below half coverage, 0.2 + 0.8 U above: the step at U = 0.5 keeps segmentation
    # exact (see module docstring); gain = alpha / U multiplies the coverage-weighted colour
    gain = np.where(union >= 0.5, (0.2 + 0.8 * union) / np.maximum(union, 0.5), 0.6)
    keep_bg = 1.0 - gain * union
    col_sat = np.stack([hsv_to_rgb(o.hue, o.saturation, o.value) for o in spec.objects])
    col_pale = np.stack([hsv_to_rgb(o.hue, o.saturation * PALE_SATURATION, o.value) for o in spec.objects])
    bg = render_background(spec.background, h, w)
    obj_rgb = gain[:, None] * ((occ * (cv - pl)).T @ col_sat + (occ * pl).T @ col_pale) \
        + keep_bg[:, None] * bg.reshape(-1, 3)[idx % (h * w)]
    np.clip(obj_rgb, 0.0, 1.0, out=obj_rgb)
    if as_uint8:
        bg = np.round(bg * 255.0).astype(np.uint8)
        obj_rgb = np.round(obj_rgb * 255.0).astype(np.uint8)
    frames = np.empty((f, h, w, 3), dtype=np.uint8 if as_uint8 else np.float32)
    frames[:] = bg
    frames.reshape(-1, 3)[idx] = obj_rgb
    thr = SEGMENT_THRESHOLD * (255.0 if as_uint8 else 1.0)
    on = obj_rgb.max(axis=1) > thr              # the background never exceeds the threshold
    if n == 1:
        masks = np.zeros(f * h * w, dtype=bool)
        masks[idx[on]] = True
    else:
        owner = np.argmax(cv * occ, axis=0)
        masks = np.zeros((n, f * h * w), dtype=bool)
        masks[owner[on], idx[on]] = True
    masks = masks.reshape(n, f, h, w)
    return Clip(frames=frames, masks=masks, centroids=mask_centroids(masks), spec=spec)


def mask_centroids(masks: np.ndarray) -> np.ndarray:
    """Centroids (x, y) of boolean masks [..., H, W] -> [..., 2]; NaN for empty masks."""
    h, w = masks.shape[-2:]
    area = masks.sum(axis=(-2, -1)).astype(np.float64)
    cx = (masks.sum(axis=-2) * np.arange(w)).sum(axis=-1)
    cy = (masks.sum(axis=-1) * np.arange(h)).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([cx / area, cy / area], axis=-1)


# --------------------------------------------------------------------------- sampling


def sample_hue(rng: np.random.Generator, named: bool) -> float:
    if named:
        centre = list(NAMED_COLOURS.values())[rng.integers(len(NAMED_COLOURS))]
        return float((centre + rng.uniform(-NAMED_HUE_JITTER, NAMED_HUE_JITTER)) % 360.0)
    while True:
        h = float(rng.uniform(0.0, 360.0))
        if hue_distance(h, list(NAMED_COLOURS.values())).min() >= UNNAMED_HUE_MARGIN:
            return h


def sample_object(rng: np.random.Generator, *, named_colour: bool | None = None, shape: str | None = None,
                  texture: str | None = None, size_range=SINGLE_SIZE, avoid_hue: float | None = None,
                  min_hue_gap: float = 60.0) -> ObjectSpec:
    """A random object. ``named_colour=None`` picks named/unnamed with even odds."""
    if named_colour is None:
        named_colour = bool(rng.random() < 0.5)
    while True:
        hue = sample_hue(rng, named_colour)
        if avoid_hue is None or hue_distance(hue, avoid_hue) >= min_hue_gap:
            break
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    texture = texture or TEXTURES[rng.choice(len(TEXTURES), p=TEXTURE_PROBS)]
    return ObjectSpec(shape=shape, hue=hue, texture=texture, size=float(rng.uniform(*size_range)),
                      saturation=float(rng.uniform(0.8, 1.0)), value=float(rng.uniform(0.88, 1.0)))


def sample_background(rng: np.random.Generator) -> BackgroundSpec:
    return BackgroundSpec(hue=float(rng.uniform(0, 360)), saturation=float(rng.uniform(0.2, 0.6)),
                          value=float(rng.uniform(0.06, 0.16)),
                          pattern=BACKGROUND_PATTERNS[rng.integers(len(BACKGROUND_PATTERNS))],
                          amplitude=float(rng.uniform(0.0, 0.35)), angle=float(rng.uniform(0, 360)),
                          seed=int(rng.integers(2 ** 31)))


def sample_single(rng: np.random.Generator, direction: str | None = None, subject: ObjectSpec | None = None,
                  frames: int = 8, height: int = 64, width: int = 64, as_uint8: bool = False) -> Clip:
    """One object moving in a direction (random when None)."""
    direction = direction or DIRECTIONS[rng.integers(len(DIRECTIONS))]
    subject = subject or sample_object(rng)
    path = single_path(rng, direction, subject.radius_px(height, width), frames, height, width)
    spec = ClipSpec(objects=(subject,), paths=path[None], motion=direction,
                    background=sample_background(rng), height=height, width=width)
    return render_clip(spec, as_uint8=as_uint8)


def sample_interaction(rng: np.random.Generator, name: str, subjects: Sequence[ObjectSpec] | None = None,
                       frames: int = 8, height: int = 64, width: int = 64, as_uint8: bool = False) -> Clip:
    """Two objects performing interaction ``name`` (or standing still: ``STILL_PAIR``); random subjects (hues
    >= 60 deg apart) when None."""
    if subjects is None:
        a = sample_object(rng, size_range=PAIR_SIZE)
        subjects = (a, sample_object(rng, size_range=PAIR_SIZE, avoid_hue=a.hue))
    if len(subjects) != 2:
        raise ValueError("an interaction needs two subjects")
    ra, rb = (o.radius_px(height, width) for o in subjects)
    paths = (still_pair_paths(rng, ra, rb, frames, height, width) if name == STILL_PAIR
             else interaction_paths(rng, name, ra, rb, frames, height, width))
    spec = ClipSpec(objects=tuple(subjects), paths=paths, motion=name,
                    background=sample_background(rng), height=height, width=width)
    return render_clip(spec, as_uint8=as_uint8)


def sample_pretraining_clip(rng: np.random.Generator, frames: int = 8, height: int = 64, width: int = 64,
                            p_interaction: float = 0.4, as_uint8: bool = False, p_still_pair: float = 0.0) -> Clip:
    """A pretraining clip: single motions and PRETRAIN_INTERACTIONS only (never held-out ones); with
    ``p_still_pair`` > 0, that share of all clips are two still objects ("{A} and {B}"), and
    ``p_interaction`` is the interactions' share of the rest (at 0 the random stream is the one before the
    option existed)."""
    if p_still_pair > 0 and rng.random() < p_still_pair:
        return sample_interaction(rng, STILL_PAIR, frames=frames, height=height, width=width, as_uint8=as_uint8)
    if rng.random() < p_interaction:
        name = PRETRAIN_INTERACTIONS[rng.integers(len(PRETRAIN_INTERACTIONS))]
        return sample_interaction(rng, name, frames=frames, height=height, width=width, as_uint8=as_uint8)
    return sample_single(rng, frames=frames, height=height, width=width, as_uint8=as_uint8)


def render_subject_images(subject: ObjectSpec, n: int, rng: np.random.Generator, height: int = 64,
                          width: int = 64, scale_range=(0.9, 1.2)) -> SubjectImages:
    """``n`` still images of one subject at varied positions and scales on varied backgrounds."""
    images, masks, objs = [], [], []
    for _ in range(n):
        obj = replace(subject, size=subject.size * float(rng.uniform(*scale_range)))
        r = obj.radius_px(height, width)
        (xlo, xhi), (ylo, yhi) = _bounds(r, width), _bounds(r, height)
        pos = np.array([[[rng.uniform(xlo, xhi), rng.uniform(ylo, yhi)]]])
        clip = render_clip(ClipSpec(objects=(obj,), paths=pos, motion="still",
                                    background=sample_background(rng), height=height, width=width))
        images.append(clip.frames[0])
        masks.append(clip.masks[0, 0])
        objs.append(obj)
    return SubjectImages(images=np.stack(images), masks=np.stack(masks), objects=tuple(objs))
