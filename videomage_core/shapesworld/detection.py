"""Exact detectors and tracking for ShapesWorld videos (numpy only): what the measures
(:mod:`videomage_core.shapesworld.measures`) read.

Input frames are ``[F, H, W, 3]`` (float in 0..1 or uint8). Every detector reads pixels only; the
spec of what was asked (:class:`~videomage_core.shapesworld.generator.ObjectSpec`, a motion name,
a reference :class:`~videomage_core.shapesworld.generator.Clip`) says what to compare with.

Pipeline (:func:`analyze`):

1. segmentation: ``max(rgb) > SEGMENT_THRESHOLD`` (exact on generated clips, see generator);
2. objects per frame: 8-connected components above a minimum area; when fewer components than
   expected objects are found, a component whose hues split in two clusters is split by hue;
3. tracks: components linked across frames by predicted position, hue and area;
4. per-frame descriptors of each track: chroma-weighted circular-mean hue of the eroded mask,
   shape by template fit (every shape rendered at the mask's centroid with the mask's area, the
   best IoU wins; templates are also tried blurred, as decoded videos are), texture from the
   paleness (1 - saturation) pattern inside the mask: plain when it is flat, else the texture
   whose pattern (sharp or blurred, at the best of 144 phases) correlates best.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from .generator import (
    NAMED_COLOURS,
    PALETTE,
    SEGMENT_THRESHOLD,
    SHAPES,
    TEXTURES,
    Clip,
    hue_distance,
)
from .sprites import TEXTURE_PERIOD, make_sprite, shape_inside, splat, texture_pale

NAMED_HUE_ACCEPT = 18.0      # a detected hue this close to a named centre carries that name
TEXTURE_AMPLITUDE = 0.032    # paleness spread x best pattern correlation below this: plain


# --------------------------------------------------------------------------- low-level helpers


def as_float(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames.astype(np.float32) / 255.0
    return frames.astype(np.float32, copy=False)


def _max_rgb(frames: np.ndarray) -> np.ndarray:
    return np.maximum(np.maximum(frames[..., 0], frames[..., 1]), frames[..., 2])


def segment(frames, threshold: float = SEGMENT_THRESHOLD) -> np.ndarray:
    """Object pixels [F, H, W] (bright against the dark background)."""
    return _max_rgb(as_float(frames)) > threshold


def rgb_hue_chroma(rgb: np.ndarray):
    """HSV hue (degrees), chroma (max - min) and paleness (min / max) of [..., 3] colours."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    c = mx - mn
    safe = np.where(c > 0, c, 1.0)
    h = np.where(mx == r, ((g - b) / safe) % 6.0, np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    return (h * 60.0) % 360.0, c, mn / np.maximum(mx, 1e-6)


def circular_mean(hues, weights=None) -> float:
    hues = np.radians(np.asarray(hues, dtype=np.float64))
    w = np.ones_like(hues) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.sum() <= 0:
        return float("nan")
    return float(np.degrees(np.arctan2((w * np.sin(hues)).sum(), (w * np.cos(hues)).sum())) % 360.0)


def erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour binary erosion of a [H, W] mask (outside the frame counts as background)."""
    m = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=bool)
    m[1:-1, 1:-1] = mask
    return mask & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]


def label_components(fg: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a [H, W] mask: labels (0 = background, 1..K) and K."""
    h, w = fg.shape
    big = h * w
    pad = np.full((h + 2, w + 2), big, dtype=np.int64)
    lab = np.where(fg, np.arange(big).reshape(h, w), big)
    flat_fg = fg.ravel()
    while True:
        pad[1:-1, 1:-1] = lab
        new = lab.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                np.minimum(new, pad[dy:dy + h, dx:dx + w], out=new)
        new[~fg] = big
        flat = new.ravel()
        for _ in range(4):     # pointer jumping: follow labels to their own labels
            flat[flat_fg] = flat[flat[flat_fg]]
        if np.array_equal(new, lab):
            break
        lab = new
    roots, labels = np.unique(lab[fg], return_inverse=True)
    out = np.zeros((h, w), dtype=np.int32)
    out[fg] = labels + 1
    return out, len(roots)


@functools.lru_cache(maxsize=None)
def _unit_area(shape: str) -> float:
    g = (np.arange(2000) + 0.5) / 1000.0 - 1.0
    return float(shape_inside(shape, g[None, :], g[:, None]).mean() * 4.0)


TEMPLATE_BLURS = (0.8, 1.3)   # px; templates are also tried blurred, as decoded videos are
SHARP_ENOUGH = 0.93           # a sharp template fitting this well needs no blurred tries


@functools.lru_cache(maxsize=256)
def _gauss_matrix(n: int, sigma: float) -> np.ndarray:
    i = np.arange(n)
    g = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)
    return (g / g.sum(axis=1, keepdims=True)).astype(np.float32)


@functools.lru_cache(maxsize=4096)
def _template_table(shape: str, radius_q: float) -> np.ndarray:
    return make_sprite(shape, radius_q)[:1].copy()


def template_mask(shape: str, area: float, cx: float, cy: float, height: int, width: int,
                  blur: float = 0.0) -> np.ndarray:
    """[H, W] mask of ``shape`` rendered as the generator does, centred at (cx, cy), of about
    ``area`` px. With ``blur`` > 0 the coverage is Gaussian-blurred before thresholding at 1/2,
    and the shape is rescaled once so that the blurred mask keeps ``area``."""
    r = max(math.sqrt(area / _unit_area(shape)), 1.0)
    for _ in range(2 if blur > 0 else 1):
        cov = np.zeros((height, width), dtype=np.float32)
        hit = splat(_template_table(shape, round(r * 4) / 4), cx, cy, height, width)
        if hit is not None:
            y0, y1, x0, x1, block = hit
            cov[y0:y1, x0:x1] = block[0]
        if blur > 0:
            cov = _gauss_matrix(height, blur) @ cov @ _gauss_matrix(width, blur).T
        mask = cov >= 0.5
        r *= math.sqrt(area / max(mask.sum(), 1.0))
    return mask


def shape_scores(mask: np.ndarray) -> dict[str, float]:
    """Best IoU of ``mask`` [H, W] with each shape's template (same centroid and area): sharp, and
    blurred by TEMPLATE_BLURS unless some sharp template already fits (SHARP_ENOUGH)."""
    area = float(mask.sum())
    if area < 1:
        return {s: 0.0 for s in SHAPES}
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean(), ys.mean()
    # work in a window around the object (templates never reach beyond 1.5x its extent)
    half = int(math.ceil(1.6 * max(np.ptp(xs), np.ptp(ys)) / 2 + 4))
    x0, y0 = int(round(cx)) - half, int(round(cy)) - half
    win = np.zeros((2 * half + 1, 2 * half + 1), dtype=bool)
    wy, wx = ys - y0, xs - x0
    ok = (wy >= 0) & (wy <= 2 * half) & (wx >= 0) & (wx <= 2 * half)
    win[wy[ok], wx[ok]] = True
    n = 2 * half + 1

    def iou(t):
        return float((t & win).sum() / max((t | win).sum(), 1))

    scores = {s: iou(template_mask(s, area, cx - x0, cy - y0, n, n)) for s in SHAPES}
    if max(scores.values()) < SHARP_ENOUGH:
        for s in SHAPES:
            for blur in TEMPLATE_BLURS:
                scores[s] = max(scores[s], iou(template_mask(s, area, cx - x0, cy - y0, n, n, blur)))
    return scores


def classify_shape(mask: np.ndarray) -> str:
    sc = shape_scores(mask)
    return max(sc, key=sc.get)


_TEX_GRID = 24        # samples per period of the periodic texture tables
TEXTURE_BLURS = (0.0, 1.0)   # px; texture patterns are also matched blurred


@functools.lru_cache(maxsize=64)
def _texture_table(texture: str, period: float, blur: float) -> np.ndarray:
    """One period of ``texture``'s pale fraction on a [24, 24] grid (row = y), optionally blurred."""
    fine = 4 * _TEX_GRID
    g = (np.arange(fine) + 0.5) / fine * period
    pale = texture_pale(texture, g[None, :], g[:, None], period).astype(np.float64)
    table = pale.reshape(_TEX_GRID, 4, _TEX_GRID, 4).mean(axis=(1, 3))
    if blur > 0:
        k = np.fft.fftfreq(_TEX_GRID, d=period / _TEX_GRID)       # cycles per px
        gain = np.exp(-2 * (np.pi * blur) ** 2 * (k[:, None] ** 2 + k[None, :] ** 2))
        table = np.real(np.fft.ifft2(np.fft.fft2(table) * gain))
    return table


def texture_features(rgb: np.ndarray, mask: np.ndarray, period: float) -> dict:
    """Paleness (1 - saturation) pattern inside ``mask`` [H, W]: its spread ``"std"`` and, per
    texture, the best correlation with that texture's pattern over all phases (a shift search, so
    the pattern may sit anywhere relative to the object)."""
    inner = erode(mask)
    if inner.sum() < 0.4 * mask.sum() or inner.sum() < 6:
        inner = mask
    ys, xs = np.nonzero(inner)
    out = {"std": 0.0, **{t: 0.0 for t in TEXTURES if t != "plain"}}
    if len(ys) < 4:
        return out
    _, _, pale = rgb_hue_chroma(rgb[ys, xs])
    v = pale - pale.mean()
    out["std"] = float(np.sqrt((v * v).mean()))
    if out["std"] <= 1e-9:
        return out
    vn = v / np.linalg.norm(v)
    steps = np.arange(12) * (_TEX_GRID // 12)                      # half-pixel-ish phase steps
    gx = np.floor((xs % period) / period * _TEX_GRID).astype(np.int64)
    gy = np.floor((ys % period) / period * _TEX_GRID).astype(np.int64)
    ix = (gx[None, :] - steps[:, None]) % _TEX_GRID                 # [12, N]
    iy = (gy[None, :] - steps[:, None]) % _TEX_GRID
    for tex in ("stripes", "dots", "checker"):
        best = 0.0
        for blur in TEXTURE_BLURS:
            table = _texture_table(tex, float(period), blur)
            pat = table[iy[:, None, :], ix[None, :, :]].reshape(-1, len(v))      # [144, N]
            pat = pat - pat.mean(axis=1, keepdims=True)
            norm = np.linalg.norm(pat, axis=1)
            corr = pat @ vn / np.maximum(norm, 1e-9)
            best = max(best, float(np.where(norm > 1e-9, corr, 0.0).max()))
        out[tex] = best
    return out


def classify_texture(rgb: np.ndarray, mask: np.ndarray, period: float) -> str:
    f = texture_features(rgb, mask, period)
    best = max(("stripes", "dots", "checker"), key=f.get)
    if f["std"] * f[best] < TEXTURE_AMPLITUDE:
        return "plain"
    return best


def region_hue(rgb: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Chroma-weighted circular-mean hue (degrees) and mean chroma of a region (eroded if possible)."""
    inner = erode(mask)
    if inner.sum() < 0.3 * mask.sum() or inner.sum() < 4:
        inner = mask
    h, c, _ = rgb_hue_chroma(rgb[inner])
    return circular_mean(h, c * c), float(c.mean()) if c.size else 0.0


def colour_name(hue: float, named_only: bool = True) -> str | None:
    """Named colour of a detected hue (None when outside every named band), or nearest palette hue."""
    if named_only:
        for name, centre in NAMED_COLOURS.items():
            if hue_distance(hue, centre) <= NAMED_HUE_ACCEPT:
                return name
        return None
    return min(PALETTE, key=lambda k: hue_distance(hue, PALETTE[k]))


# --------------------------------------------------------------------------- objects and tracks


@dataclass
class _Component:
    mask: np.ndarray
    area: int
    centroid: np.ndarray
    hue: float


@dataclass
class DetectedObject:
    """One tracked object: per-frame masks and descriptors (NaN / None where absent)."""

    masks: np.ndarray             # [F, H, W] bool
    centroids: np.ndarray         # [F, 2] (x, y)
    areas: np.ndarray             # [F]
    hues: np.ndarray              # [F] degrees
    shapes: list                  # [F] shape name or None
    textures: list                # [F] texture name or None

    @property
    def present(self) -> np.ndarray:
        return self.areas > 0

    @property
    def hue(self) -> float:
        ok = self.present
        return circular_mean(self.hues[ok], self.areas[ok]) if ok.any() else float("nan")

    @property
    def shape(self) -> str | None:
        return _mode([s for s in self.shapes if s is not None])

    @property
    def texture(self) -> str | None:
        return _mode([t for t in self.textures if t is not None])

    def trajectory(self) -> np.ndarray:
        """[F, 2] centroids with gaps filled from the nearest present frame."""
        return _fill_gaps(self.centroids)


@dataclass
class Analysis:
    frames: np.ndarray
    objects: list = field(default_factory=list)     # DetectedObject, largest first

    @property
    def size(self) -> int:
        return min(self.frames.shape[1:3])


def _mode(items):
    if not items:
        return None
    values, counts = np.unique(np.array(items), return_counts=True)
    return str(values[np.argmax(counts)])


def _fill_gaps(c: np.ndarray) -> np.ndarray:
    c = c.copy()
    ok = np.isfinite(c[:, 0])
    if not ok.any():
        return c
    idx = np.arange(len(c))
    for k in range(2):
        c[:, k] = np.interp(idx, idx[ok], c[ok, k])
    return c


def _split_by_hue(rgb: np.ndarray, comp: _Component) -> list[_Component]:
    """Split a component in two by hue when its pixels form two clear hue clusters."""
    ys, xs = np.nonzero(comp.mask)
    h, c, _ = rgb_hue_chroma(rgb[ys, xs])
    keep = c > 0.15
    if keep.sum() < 8:
        return [comp]
    hk = h[keep]
    centres = np.array([hk.min(), hk.max()]) if np.ptp(hk) < 180 else np.array([0.0, 180.0])
    for _ in range(8):
        assign = hue_distance(h[:, None], centres[None, :]).argmin(axis=1)
        new = np.array([circular_mean(h[(assign == k) & keep], c[(assign == k) & keep])
                        if ((assign == k) & keep).any() else centres[k] for k in (0, 1)])
        if np.allclose(new, centres):
            break
        centres = new
    frac = np.bincount(assign[keep], minlength=2) / keep.sum()
    if hue_distance(centres[0], centres[1]) < 40 or frac.min() < 0.15:
        return [comp]
    out = []
    for k in (0, 1):
        m = np.zeros_like(comp.mask)
        m[ys[assign == k], xs[assign == k]] = True
        yy, xx = np.nonzero(m)
        out.append(_Component(m, len(yy), np.array([xx.mean(), yy.mean()]), float(centres[k])))
    return out


def _components(rgb: np.ndarray, fg: np.ndarray, min_area: int, expected: int | None) -> list[_Component]:
    labels, k = label_components(fg)
    comps = []
    if k:
        areas = np.bincount(labels.ravel(), minlength=k + 1)
        for lab in np.argsort(-areas[1:])[:4] + 1:
            if areas[lab] < min_area:
                break
            m = labels == lab
            ys, xs = np.nonzero(m)
            comps.append(_Component(m, int(areas[lab]), np.array([xs.mean(), ys.mean()]),
                                    region_hue(rgb, m)[0]))
    if expected and 0 < len(comps) < expected:
        comps = _split_by_hue(rgb, comps[0]) + comps[1:]
    return comps


def _link_cost(track: dict, c: _Component, size: float) -> float:
    """Cost of continuing ``track`` ({frame: component}) with ``c``: position, hue and area."""
    ts = sorted(track)
    last = track[ts[-1]]
    pred = last.centroid
    if len(ts) > 1 and ts[-1] - ts[-2] == 1:           # constant-velocity prediction
        pred = last.centroid + (last.centroid - track[ts[-2]].centroid)
    pos = min(np.linalg.norm(pred - c.centroid), np.linalg.norm(last.centroid - c.centroid)) / size
    dh = hue_distance(last.hue, c.hue) / 90.0 if np.isfinite(last.hue) and np.isfinite(c.hue) else 0.0
    return pos + dh + 0.5 * abs(math.log(c.area / last.area))


def analyze(frames, n_objects: int | None = None, min_area: int | None = None) -> Analysis:
    """Detect, track and describe objects; keep the ``n_objects`` largest tracks (all when None)."""
    frames = as_float(frames)
    f, h, w, _ = frames.shape
    size = min(h, w)
    min_area = min_area or max(4, int(round(0.0015 * h * w)))
    fg = segment(frames)
    tracks: list[dict] = []     # each: {frame: _Component}
    for t in range(f):
        comps = _components(frames[t], fg[t], min_area, n_objects)
        live = list(tracks)
        best = _min_cost_matching([[_link_cost(tr, c, size) for tr in live] for c in comps])
        for ci, c in enumerate(comps):
            if ci in best:
                live[best[ci]][t] = c
            else:
                tracks.append({t: c})
    tracks.sort(key=lambda tr: -sum(c.area for c in tr.values()))
    if n_objects is not None:
        tracks = tracks[:n_objects]
    return Analysis(frames=frames, objects=[_describe(frames, tr) for tr in tracks])


def _min_cost_matching(costs: list) -> dict:
    """{row: column} matching rows (components) to columns (tracks) at minimal total cost."""
    n_rows = len(costs)
    n_cols = len(costs[0]) if n_rows else 0
    k = min(n_rows, n_cols)
    if k == 0:
        return {}
    c = np.asarray(costs)
    if n_rows <= 5 and n_cols <= 5:
        best, best_total = {}, math.inf
        for rows in itertools.combinations(range(n_rows), k):
            for cols in itertools.permutations(range(n_cols), k):
                total = c[list(rows), list(cols)].sum()
                if total < best_total:
                    best_total, best = total, dict(zip(rows, cols))
        return best
    best = {}
    for flat in np.argsort(c, axis=None):      # greedy on large problems
        r, col = divmod(int(flat), n_cols)
        if r not in best and col not in best.values():
            best[r] = col
    return best


def _describe(frames: np.ndarray, track: dict) -> DetectedObject:
    f, h, w, _ = frames.shape
    masks = np.zeros((f, h, w), dtype=bool)
    cents = np.full((f, 2), np.nan)
    areas = np.zeros(f)
    hues = np.full(f, np.nan)
    shapes, textures = [None] * f, [None] * f
    for t, c in track.items():
        masks[t], cents[t], areas[t], hues[t] = c.mask, c.centroid, c.area, c.hue
    period = TEXTURE_PERIOD * min(h, w) / 64
    for t in [t for t in track if not _touches_border(masks[t])] or list(track):   # whole views first
        shapes[t] = classify_shape(masks[t])
        textures[t] = classify_texture(frames[t], masks[t], period)
    return DetectedObject(masks=masks, centroids=cents, areas=areas, hues=hues, shapes=shapes, textures=textures)


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def _analysis(frames_or_analysis, n_objects) -> Analysis:
    if isinstance(frames_or_analysis, Analysis):
        return frames_or_analysis
    if isinstance(frames_or_analysis, Clip):
        frames_or_analysis = frames_or_analysis.frames
    return analyze(frames_or_analysis, n_objects=n_objects)
