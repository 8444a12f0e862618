"""ShapesWorld's sprites: the shapes and textures on a sub-sample grid, box-filtered onto pixels.

What :mod:`videomage_core.shapesworld.generator` renders clips with and
:mod:`videomage_core.shapesworld.detection` matches templates with (the world's conventions are in the
generator's docstring: unit-radius shapes inside the unit disc, ``y`` down, pixel ``i`` covering
``[i - 0.5, i + 0.5]``).
"""

from __future__ import annotations

import math

import numpy as np

SUPERSAMPLE = 4
TEXTURE_PERIOD = 6.0        # px at 64 px

_STAR_INNER = 0.45


def shape_inside(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether unit-radius coordinates (y down) lie inside ``shape``; all shapes fit the unit disc."""
    if shape == "circle":
        return x * x + y * y <= 1.0
    if shape == "square":
        return (np.abs(x) <= 0.7) & (np.abs(y) <= 0.7)
    if shape == "diamond":
        return np.abs(x) + np.abs(y) <= 1.0
    if shape == "triangle":   # equilateral, apex up, circumradius 1, centroid at 0
        return (y <= 0.5) & (y >= math.sqrt(3.0) * np.abs(x) - 1.0)
    if shape == "ring":
        r2 = x * x + y * y
        return (r2 <= 1.0) & (r2 >= 0.36)
    if shape == "cross":
        ax, ay = np.abs(x), np.abs(y)
        return ((ax <= 0.3) & (ay <= 0.95)) | ((ay <= 0.3) & (ax <= 0.95))
    if shape == "star":       # five points, apex up, outer radius 1, inner 0.45
        rho = np.hypot(x, y)
        theta = np.degrees(np.arctan2(x, -y))     # clockwise from straight up
        phi = np.radians(np.abs((theta + 36.0) % 72.0 - 36.0))     # angle from the nearest point
        # boundary from P1 = (1, 0) to P2 = inner * (cos 36, sin 36) in the sector's frame
        p2x, p2y = _STAR_INNER * math.cos(math.radians(36)), _STAR_INNER * math.sin(math.radians(36))
        ex, ey = p2x - 1.0, p2y
        rb = (1.0 * ey - 0.0 * ex) / (np.cos(phi) * ey - np.sin(phi) * ex)
        return rho <= rb
    raise ValueError(f"unknown shape {shape!r}")


def texture_pale(texture: str, dx: np.ndarray, dy: np.ndarray, period: float) -> np.ndarray:
    """Where the pale tone of ``texture`` lies, at px offsets from the object's centre."""
    if texture == "plain":
        return np.zeros(np.broadcast(dx, dy).shape, dtype=bool)
    if texture == "stripes":
        return np.broadcast_to(((dx / period + 0.25) % 1.0) < 0.5, np.broadcast(dx, dy).shape)
    if texture == "dots":
        fx = dx / period - np.round(dx / period)
        fy = dy / period - np.round(dy / period)
        return fx * fx + fy * fy < 0.3 ** 2
    if texture == "checker":
        c = period / 2.0
        return ((np.floor(dx / c + 0.5) + np.floor(dy / c + 0.5)) % 2.0) == 0.0
    raise ValueError(f"unknown texture {texture!r}")


def _quantize(c: np.ndarray, ss: int = SUPERSAMPLE) -> np.ndarray:
    """Snap coordinates to sub-sample centres (where sprites are rendered exactly)."""
    return (np.round((c + 0.5) * ss - 0.5) + 0.5) / ss - 0.5


def make_sprite(shape: str, radius: float, texture: str = "plain", period: float = TEXTURE_PERIOD,
                ss: int = SUPERSAMPLE) -> np.ndarray:
    """Sub-sample maps (inside, pale) of one object, centred on a sub-sample point.

    Returned as their summed-area table: int32 [2, n + 1, n + 1] (``n`` sub-samples a side), which
    :func:`splat` box-filters onto the pixel grid at any sub-sample offset in a few slices.
    """
    k = int(math.ceil(radius * ss)) + 1
    d = np.arange(-k, k + 1, dtype=np.float64) / ss
    dx, dy = d[None, :], d[:, None]
    inside = shape_inside(shape, dx / radius, dy / radius)
    pale = inside & texture_pale(texture, dx, dy, period)
    table = np.zeros((2, 2 * k + 2, 2 * k + 2), dtype=np.int32)
    table[:, 1:, 1:] = np.stack([inside, pale]).astype(np.int32).cumsum(axis=1).cumsum(axis=2)
    return table


def splat(table: np.ndarray, cx: float, cy: float, height: int, width: int, ss: int = SUPERSAMPLE):
    """Box-filter a sprite (summed-area table from :func:`make_sprite`) centred at (cx, cy).

    Returns ``(y0, y1, x0, x1, block)`` with ``block`` [C, y1 - y0, x1 - x0] the covered fraction
    of each pixel, clipped to the frame; ``None`` when nothing lands in the frame.
    """
    n = table.shape[-1] - 1
    k = n // 2
    jx = int(round((cx + 0.5) * ss - 0.5)) - k      # frame sub-sample index of the sprite's first column
    jy = int(round((cy + 0.5) * ss - 0.5)) - k
    px0, py0 = jx // ss, jy // ss
    px1, py1 = -((-(jx + n)) // ss), -((-(jy + n)) // ss)
    x0, y0, x1, y1 = max(px0, 0), max(py0, 0), min(px1, width), min(py1, height)
    if x0 >= x1 or y0 >= y1:
        return None
    ix = np.clip(np.arange(x0, x1 + 1) * ss - jx, 0, n)
    iy = np.clip(np.arange(y0, y1 + 1) * ss - jy, 0, n)
    d = table[:, iy[:, None], ix[None, :]]
    block = (d[:, 1:, 1:] - d[:, :-1, 1:] - d[:, 1:, :-1] + d[:, :-1, :-1]).astype(np.float32)
    return y0, y1, x0, x1, block * np.float32(1.0 / (ss * ss))


def splat_frames(table: np.ndarray, centres: np.ndarray, height: int, width: int,
                 ss: int = SUPERSAMPLE) -> np.ndarray:
    """:func:`splat` for a sprite at ``centres`` [F, 2]: full frames [C, F, H, W] float32."""
    c, n = table.shape[0], table.shape[-1] - 1
    k = n // 2
    f = len(centres)
    j = np.round((centres + 0.5) * ss - 0.5).astype(np.int64) - k        # [F, 2] first sub-sample
    p0 = j // ss                                                         # first pixel (x, y)
    npx = -((-(n + ss - 1)) // ss)                                       # pixels a window spans
    offs = np.arange(npx + 1)
    ix = np.clip((p0[:, 0, None] + offs) * ss - j[:, 0, None], 0, n)     # [F, npx + 1]
    iy = np.clip((p0[:, 1, None] + offs) * ss - j[:, 1, None], 0, n)
    d = table[:, iy[:, :, None], ix[:, None, :]]                         # [C, F, npx+1, npx+1]
    block = (d[:, :, 1:, 1:] - d[:, :, :-1, 1:] - d[:, :, 1:, :-1] + d[:, :, :-1, :-1]).astype(np.float32)
    block *= np.float32(1.0 / (ss * ss))
    pad = npx
    out = np.zeros((c, f, height + 2 * pad, width + 2 * pad), dtype=np.float32)
    rows = np.clip(p0[:, 1, None] + offs[:-1] + pad, 0, height + 2 * pad - 1)   # far-away objects
    cols = np.clip(p0[:, 0, None] + offs[:-1] + pad, 0, width + 2 * pad - 1)    # land in the pad
    out[:, np.arange(f)[:, None, None], rows[:, :, None], cols[:, None, :]] = block
    return out[:, :, pad:pad + height, pad:pad + width]
