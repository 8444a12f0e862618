"""Exact measures for ShapesWorld videos (numpy only).

Input frames are ``[F, H, W, 3]`` (float in 0..1 or uint8). Every detector reads pixels only; the
spec of what was asked (:class:`~videomage_core.shapesworld.generator.ObjectSpec`, a motion name,
a reference :class:`~videomage_core.shapesworld.generator.Clip`) says what to compare with.

The detectors (segmentation, objects per frame, tracks and per-frame hue / shape / texture
descriptors: :func:`analyze`) live in :mod:`videomage_core.shapesworld.detection`; this module keeps
the direction / interaction classifiers and the measures, and re-exports the detectors' names, so
``measures.X`` and ``from videomage_core.shapesworld.measures import X`` keep working.

Measures (all 0..1, 1 on ground truth):

- :func:`prompt_following`: the named colour, named shape and direction / interaction asked by a
  caption, each correct or not (only what a caption names is checked).
- :func:`subject_fidelity`: hue (1 within 10 deg, 0 beyond 60), shape and (for a textured subject)
  texture agreement of an output object with a reference subject (mean of the two or three);
  :func:`pair_subject_fidelity` for two subjects, counted where both are shown together.
- :func:`motion_fidelity`: mean trajectory error over each object's displacement from its start
  and the A - B relative vector, best assignment of objects to roles; 1 up to 0.02 x frame size,
  falling linearly to 0 at 0.2 x frame size; times :func:`presence_factor` of the frames where
  both objects are present and apart, so that an object that vanishes or merges into the other
  (and so follows its path) cannot pass for the reference's motion.
- :func:`appearance_leakage`: for attributes where a reference-video subject differs from the asked
  subject, how far each output object's attribute lies toward the reference one (1 = copied).
- :func:`attribute_binding`: with the best one-to-one assignment of output objects to subjects, the
  fraction of the attributes that tell the subjects apart that each object takes from its own
  subject (0.5 when two subjects' traits are swapped half and half).
- :func:`temporal_consistency`: presence, hue stability, area stability and shape / texture
  constancy of each tracked object across frames.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np

# The detectors and tracking (detection.py never imports this module), re-exported here.
from .detection import (
    NAMED_HUE_ACCEPT,
    SHARP_ENOUGH,
    TEMPLATE_BLURS,
    TEXTURE_AMPLITUDE,
    TEXTURE_BLURS,
    Analysis,
    DetectedObject,
    _analysis,
    _fill_gaps,
    analyze,
    as_float,
    circular_mean,
    classify_shape,
    classify_texture,
    colour_name,
    erode,
    label_components,
    region_hue,
    rgb_hue_chroma,
    segment,
    shape_scores,
    template_mask,
    texture_features,
)
from .generator import (
    DIRECTIONS,
    NAMED_SHAPES,
    SYMMETRIC_INTERACTIONS,
    Clip,
    ClipSpec,
    ObjectSpec,
    hue_distance,
)

__all__ = [
    "NAMED_HUE_ACCEPT", "SHARP_ENOUGH", "TEMPLATE_BLURS", "TEXTURE_AMPLITUDE", "TEXTURE_BLURS",
    "Analysis", "DetectedObject", "analyze", "as_float", "circular_mean", "classify_shape",
    "classify_texture", "colour_name", "erode", "label_components", "region_hue", "rgb_hue_chroma",
    "segment", "shape_scores", "template_mask", "texture_features",
    "HUE_FULL", "HUE_ZERO", "MOTION_DEAD_ZONE", "MOTION_TOLERANCE", "SEPARATION", "STATIC_FRACTION",
    "STILL_FRACTION",
    "appearance_leakage", "attribute_binding", "classify_direction", "classify_interaction", "evaluate",
    "fidelity_parts", "hue_agreement", "interaction_features", "match_subjects", "motion_fidelity",
    "no_object_parts", "object_fidelity",
    "pair_subject_fidelity", "pair_subject_parts", "pair_valid_fraction", "pair_valid_frames", "presence_factor",
    "prompt_following", "subject_fidelity", "subject_parts",
    "temporal_consistency",
]

STILL_FRACTION = 0.1         # net displacement below this x frame size: "still"
STATIC_FRACTION = 0.05       # an object whose positions stay this close to their mean is static
HUE_FULL, HUE_ZERO = 10.0, 60.0   # hue-agreement ramp (degrees)
MOTION_TOLERANCE = 0.2       # trajectory error (x frame size) where motion fidelity reaches 0
MOTION_DEAD_ZONE = 0.02      # ... and below which it is 1 (centroids of different shapes differ a little)
SEPARATION = 0.75            # two objects closer than this x their summed disc radii count as one blob


# --------------------------------------------------------------------------- motion


def classify_direction(trajectory: np.ndarray, size: float) -> str:
    """left / right / up / down / still from a [F, 2] centroid trajectory (least-squares slope)."""
    c = _fill_gaps(np.asarray(trajectory, dtype=np.float64))
    if not np.isfinite(c).all() or len(c) < 2:
        return "still"
    t = np.arange(len(c)) - (len(c) - 1) / 2
    disp = (t[:, None] * (c - c.mean(0))).sum(0) / (t * t).sum() * (len(c) - 1)
    if np.hypot(*disp) < STILL_FRACTION * size:
        return "still"
    if abs(disp[0]) >= abs(disp[1]):
        return "right" if disp[0] > 0 else "left"
    return "down" if disp[1] > 0 else "up"


def _unwrapped_rotation(rel: np.ndarray) -> float:
    ang = np.unwrap(np.arctan2(rel[:, 1], rel[:, 0]))
    return float(np.degrees(ang[-1] - ang[0]))


def interaction_features(a: np.ndarray, b: np.ndarray, size: float) -> dict:
    """Scale-free features of two [F, 2] trajectories (A first)."""
    a, b = _fill_gaps(np.asarray(a, float)), _fill_gaps(np.asarray(b, float))
    rel = a - b
    dist = np.linalg.norm(rel, axis=1)
    spread = lambda p: float(np.linalg.norm(p - p.mean(0), axis=1).max() / size)
    da, db = a[-1] - a[0], b[-1] - b[0]
    na, nb = np.linalg.norm(da), np.linalg.norm(db)
    return {
        "static_a": spread(a) < STATIC_FRACTION,
        "static_b": spread(b) < STATIC_FRACTION,
        "rotation": _unwrapped_rotation(rel),
        "ratio": float(dist[-1] / max(dist[0], 1e-6)),
        "swapped": float((np.linalg.norm(a[-1] - b[0]) + np.linalg.norm(b[-1] - a[0])) / (2 * max(dist[0], 1e-6))),
        "cos": float(da @ db / (na * nb)) if na > 0 and nb > 0 else 0.0,
        "a_toward_b": float(da @ (b[0] - a[0])),
        "rise": float((rel[:, 1] - np.linspace(rel[0, 1], rel[-1, 1], len(rel))).min() / size),
        "side_flip": bool(np.sign(rel[0, 0]) != np.sign(rel[-1, 0]) and abs(rel[0, 0]) > abs(rel[0, 1])),
    }


def classify_interaction(a: np.ndarray, b: np.ndarray, size: float) -> tuple[str, int | None]:
    """Interaction of trajectories A and B, and which one (0 = A, 1 = B) is the actor.

    The actor is the one named first in the caption ("A orbits B", "A chases B", "A jumps over
    B"); None for symmetric interactions. Returns ("none", None) for anything else.
    """
    f = interaction_features(a, b, size)
    if f["static_a"] and f["static_b"]:
        return "none", None
    if f["static_a"] or f["static_b"]:
        actor = 1 if f["static_a"] else 0
        m = interaction_features(b, a, size) if actor == 1 else f     # the mover first
        if abs(m["rotation"]) >= 222.0:
            return "orbit", actor
        if abs(m["rotation"]) >= 120.0 and m["side_flip"] and m["rise"] < -0.15:
            return "jump_over", actor
        if m["ratio"] < 0.75:
            return "approach", None
        if m["ratio"] > 1.33:
            return "move_apart", None
        return "none", None
    if f["swapped"] < 0.35 and abs(f["rotation"]) >= 120.0:
        return "swap", None
    if f["cos"] > 0.7:
        return "chase", 0 if f["a_toward_b"] > 0 else 1
    if f["ratio"] < 0.75:
        return "approach", None
    if f["ratio"] > 1.33:
        return "move_apart", None
    if abs(f["rotation"]) >= 222.0:
        return "orbit", None
    return "none", None


# --------------------------------------------------------------------------- subjects


def hue_agreement(a: float, b: float) -> float:
    """1 when hues are within HUE_FULL degrees, falling linearly to 0 at HUE_ZERO."""
    if not (np.isfinite(a) and np.isfinite(b)):
        return 0.0
    return float(np.clip((HUE_ZERO - hue_distance(a, b)) / (HUE_ZERO - HUE_FULL), 0.0, 1.0))


def _frame_fraction(values: list, target: str) -> float:
    vals = [v for v in values if v is not None]
    return sum(v == target for v in vals) / len(vals) if vals else 0.0


def fidelity_parts(obj: DetectedObject, subject: ObjectSpec) -> dict:
    """What :func:`object_fidelity` averages: hue agreement, shape agreement (fraction of frames) and,
    for a textured subject, texture agreement (None for a plain one)."""
    return {"hue": hue_agreement(obj.hue, subject.hue), "shape": _frame_fraction(obj.shapes, subject.shape),
            "texture": None if subject.texture == "plain" else _frame_fraction(obj.textures, subject.texture)}


def object_fidelity(obj: DetectedObject, subject: ObjectSpec) -> float:
    """Mean of :func:`fidelity_parts`. A plain subject's identity is its hue and shape: the second
    edition's world is all plain (its VAE does not resolve textures), and counting "plain" there would
    give any object a third of the score for free."""
    return float(np.mean([v for v in fidelity_parts(obj, subject).values() if v is not None]))


def _assign(objects: list, subjects: Sequence[ObjectSpec], score) -> list:
    """Best one-to-one assignment (object index or None, per subject); a detected object always
    beats a missing one."""
    best, best_total = [None] * len(subjects), -math.inf
    idx = list(range(len(objects))) + [None] * len(subjects)
    for perm in dict.fromkeys(itertools.permutations(idx, len(subjects))):
        total = sum(score(objects[o], s) if o is not None else -1.0 for o, s in zip(perm, subjects))
        if total > best_total + 1e-12:
            best_total, best = total, list(perm)
    return best


def match_subjects(analysis: Analysis, subjects: Sequence[ObjectSpec]) -> list:
    """For each subject, the detected object that fits it best (one-to-one), or None."""
    return [None if o is None else analysis.objects[o]
            for o in _assign(analysis.objects, subjects, object_fidelity)]


def subject_fidelity(frames_or_analysis, subject: ObjectSpec, n_objects: int | None = None) -> float:
    """How well the output's best-matching object shows ``subject`` (0..1)."""
    an = _analysis(frames_or_analysis, n_objects)
    return max((object_fidelity(o, subject) for o in an.objects), default=0.0)


def pair_subject_fidelity(frames_or_analysis, subjects: Sequence[ObjectSpec]) -> float:
    """Both subjects shown together (0..1): the mean of their :func:`subject_fidelity`, times
    :func:`presence_factor` of the frames that show two objects, present and apart. One object whose
    colour flickers between the two subjects' is detected as two part-time objects, each a good match;
    without the factor it scored 0.49 (session 15's demo draw)."""
    if len(subjects) != 2:
        raise ValueError("pair subject fidelity compares two subjects")
    an = _analysis(frames_or_analysis, 2)
    mean = float(np.mean([subject_fidelity(an, s, 2) for s in subjects]))
    return mean * presence_factor(pair_valid_fraction(an))


def no_object_parts(subject: ObjectSpec) -> dict:
    """:func:`subject_parts` of a video with no object to score: zeros (texture None for a plain subject)."""
    return {"hue": 0.0, "shape": 0.0, "texture": None if subject.texture == "plain" else 0.0}


def subject_parts(frames_or_analysis, subject: ObjectSpec, n_objects: int | None = None) -> dict:
    """:func:`fidelity_parts` of the object :func:`subject_fidelity` scores (the best-matching one);
    :func:`no_object_parts` when no object is found. For a plain subject, fidelity is the mean of hue and shape."""
    an = _analysis(frames_or_analysis, n_objects)
    if not an.objects:
        return no_object_parts(subject)
    return fidelity_parts(max(an.objects, key=lambda o: object_fidelity(o, subject)), subject)


def pair_subject_parts(frames_or_analysis, subjects: Sequence[ObjectSpec]) -> dict:
    """:func:`pair_subject_fidelity` split by what it averages: each part of both subjects' best-matching
    objects, averaged over the two subjects and times the same presence factor (so for plain subjects
    ``(hue + shape) / 2`` is the pair's subject fidelity). Says whether a subject is lost by its colour or
    by its shape."""
    if len(subjects) != 2:
        raise ValueError("pair subject parts compare two subjects")
    an = _analysis(frames_or_analysis, 2)
    parts = [subject_parts(an, s, 2) for s in subjects]
    factor = presence_factor(pair_valid_fraction(an))
    return {k: float(np.mean([p[k] for p in parts])) * factor for k in ("hue", "shape")}


def _discriminating(s1: ObjectSpec, s2: ObjectSpec) -> list[str]:
    out = []
    if hue_distance(s1.hue, s2.hue) > 30.0:
        out.append("hue")
    if s1.shape != s2.shape:
        out.append("shape")
    if s1.texture != s2.texture:
        out.append("texture")
    return out


def _closer(obj: DetectedObject, attr: str, own: ObjectSpec, other: ObjectSpec) -> float:
    """Where ``obj``'s attribute lies from ``other`` (0) to ``own`` (1)."""
    if attr == "hue":
        if not np.isfinite(obj.hue):
            return 0.0
        d_own, d_other = hue_distance(obj.hue, own.hue), hue_distance(obj.hue, other.hue)
        x = 0.5 + 0.5 * (d_other - d_own) / max(hue_distance(own.hue, other.hue), 1e-6)
        return float(np.clip((x - 0.1) / 0.8, 0.0, 1.0))      # dead zones absorb small hue errors
    return float(getattr(obj, attr) == getattr(own, attr))


def attribute_binding(frames_or_analysis, subjects: Sequence[ObjectSpec]) -> float:
    """Each output object takes all its traits from one subject, a different one per object (0..1)."""
    if len(subjects) != 2:
        raise ValueError("attribute binding compares two subjects")
    an = _analysis(frames_or_analysis, len(subjects))
    s1, s2 = subjects
    attrs = _discriminating(s1, s2)
    if not attrs:
        return 1.0

    def own_share(obj, subj):
        other = s2 if subj is s1 else s1
        return float(np.mean([_closer(obj, a, subj, other) for a in attrs]))

    assign = _assign(an.objects, subjects, own_share)
    return float(np.mean([own_share(an.objects[o], s) if o is not None else 0.0 for o, s in zip(assign, subjects)]))


def appearance_leakage(frames_or_analysis, targets: Sequence[ObjectSpec], references: Sequence[ObjectSpec]) -> float:
    """How much the reference video's subjects' appearance shows in the output (0..1).

    For each output object (matched to an asked subject) and each reference subject, the attributes
    where that reference differs from the asked subject are scored from 0 (the asked value) to 1
    (the reference value); an object's leakage is its worst reference; the result is the mean.
    """
    an = _analysis(frames_or_analysis, len(targets))
    matched = match_subjects(an, targets)
    leaks = []
    for obj, tgt in zip(matched, targets):
        if obj is None:
            leaks.append(0.0)
            continue
        per_ref = [float(np.mean([_closer(obj, a, ref, tgt) for a in attrs]))
                   for ref in references if (attrs := _discriminating(ref, tgt))]
        leaks.append(max(per_ref, default=0.0))
    return float(np.mean(leaks)) if leaks else 0.0


# --------------------------------------------------------------------------- prompt, motion, time


def prompt_following(frames_or_analysis, spec: ClipSpec) -> dict:
    """Check what ``spec``'s caption names: colours, shapes and the direction or interaction.

    Returns ``{"colour": [...], "shape": [...], "motion": 0/1, "score": mean}`` with per-object
    1.0 / 0.0, or None where the caption does not name that attribute.
    """
    an = _analysis(frames_or_analysis, len(spec.objects))
    matched = match_subjects(an, spec.objects)
    colour, shape = [], []
    for obj, s in zip(matched, spec.objects):
        word = s.colour_word
        colour.append(None if word is None else float(obj is not None and colour_name(obj.hue) == word))
        shape.append(None if s.shape not in NAMED_SHAPES else float(obj is not None and obj.shape == s.shape))
    if any(o is None for o in matched):
        motion = 0.0
    elif spec.motion in DIRECTIONS:
        motion = float(classify_direction(matched[0].trajectory(), an.size) == spec.motion)
    else:
        label, actor = classify_interaction(matched[0].trajectory(), matched[1].trajectory(), an.size)
        ok = label == spec.motion and (spec.motion in SYMMETRIC_INTERACTIONS or actor == 0)
        motion = float(ok)
    checks = [v for v in colour + shape if v is not None] + [motion]
    return {"colour": colour, "shape": shape, "motion": motion, "score": float(np.mean(checks))}


def motion_fidelity(frames_or_analysis, reference: Clip) -> float:
    """Trajectory match of the output's objects to a reference clip's (0..1), whatever they look like.

    Error: mean over frames of each object's displacement-from-start error and of the A - B
    relative-vector error, for the assignment of output objects to reference roles that fits best
    (which subject plays which role is prompt following's business). 1 up to MOTION_DEAD_ZONE x frame
    size, 0 from MOTION_TOLERANCE x frame size.
    """
    n_obj = len(reference.objects)
    an = _analysis(frames_or_analysis, n_obj)
    if len(an.objects) < n_obj:
        return 0.0
    valid = pair_valid_fraction(an) if n_obj == 2 else float(an.objects[0].present.mean())
    ref = [_fill_gaps(c) for c in reference.centroids]
    best = math.inf
    for perm in itertools.permutations(range(len(an.objects)), n_obj):
        out = [an.objects[i].trajectory() for i in perm]
        n = min(len(out[0]), len(ref[0]))
        err = [np.linalg.norm((o[:n] - o[0]) - (r[:n] - r[0]), axis=1).mean() for o, r in zip(out, ref)]
        if n_obj == 2:
            err.append(np.linalg.norm((out[0][:n] - out[1][:n]) - (ref[0][:n] - ref[1][:n]), axis=1).mean())
        best = min(best, float(np.mean(err)) / an.size)
    score = float(np.clip((MOTION_TOLERANCE - best) / (MOTION_TOLERANCE - MOTION_DEAD_ZONE), 0.0, 1.0))
    return score * presence_factor(valid)


def pair_valid_frames(frames_or_analysis) -> np.ndarray:
    """[F] bool: both of the two largest objects are present and apart in that frame.

    Apart: centroid distance at least SEPARATION x the sum of their equivalent-disc radii
    (sqrt(area / pi)). Generated clips keep a gap between objects, so every frame of one passes;
    one blob split by hue into two touching halves, or two objects drawn on top of each other, fails.
    """
    an = _analysis(frames_or_analysis, 2)
    if len(an.objects) < 2:
        return np.zeros(an.frames.shape[0], dtype=bool)
    a, b = an.objects[:2]
    both = a.present & b.present
    dist = np.linalg.norm(np.nan_to_num(a.centroids) - np.nan_to_num(b.centroids), axis=1)
    radii = np.sqrt(a.areas / np.pi) + np.sqrt(b.areas / np.pi)
    return both & (dist >= SEPARATION * radii)


def pair_valid_fraction(frames_or_analysis) -> float:
    """Fraction of frames where the two objects are both present and apart (:func:`pair_valid_frames`)."""
    return float(pair_valid_frames(frames_or_analysis).mean())


def presence_factor(valid_fraction: float) -> float:
    """What motion fidelity keeps of its trajectory score: 1 when every frame shows the objects
    (present and apart), 0 from half the frames down, linear between. A track whose object is gone
    is filled from its last position, so without this an object that vanishes, or merges into the
    other and follows its path, could still match a reference in which it stands still."""
    return float(np.clip((valid_fraction - 0.5) / 0.5, 0.0, 1.0))


def temporal_consistency(frames_or_analysis, n_objects: int | None = None) -> float:
    """Appearance stability of each tracked object across frames (0..1), averaged over objects."""
    an = _analysis(frames_or_analysis, n_objects)
    if not an.objects:
        return 0.0
    scores = []
    for o in an.objects:
        ok = o.present
        presence = ok.mean()
        hue_dev = hue_distance(o.hues[ok], o.hue).max() if ok.any() else 180.0
        hue_s = float(np.clip(1.0 - (hue_dev - 8.0) / 30.0, 0.0, 1.0))
        a = o.areas[ok]
        area_s = float(np.clip(1.0 - (a.std() / a.mean() - 0.1) / 0.3, 0.0, 1.0)) if a.size else 0.0
        shape_s = _frame_fraction(o.shapes, o.shape) if o.shape else 0.0
        tex_s = _frame_fraction(o.textures, o.texture) if o.texture else 0.0
        scores.append(presence * np.mean([hue_s, area_s, shape_s, tex_s]))
    return float(np.mean(scores))


def evaluate(frames, spec: ClipSpec, reference: Clip | None = None,
             subjects: Sequence[ObjectSpec] | None = None) -> dict:
    """All measures at once for an output asked to show ``spec`` (and move like ``reference``).

    ``subjects``: the subjects the output should show (defaults to ``spec.objects``).
    """
    subjects = tuple(subjects or spec.objects)
    an = analyze(frames, n_objects=len(subjects))
    out = {"prompt": prompt_following(an, spec),
           "subject_fidelity": [subject_fidelity(an, s) for s in subjects],
           "temporal_consistency": temporal_consistency(an)}
    if len(subjects) == 2:
        out["attribute_binding"] = attribute_binding(an, subjects)
    if reference is not None:
        out["motion_fidelity"] = motion_fidelity(an, reference)
        out["appearance_leakage"] = appearance_leakage(an, subjects, reference.objects)
    return out
