"""ShapesWorld's motions as paths: the directions and two-object interactions, and the centre of each
object in every frame (in frame, collision-free). :mod:`generator` renders clips along them."""

from __future__ import annotations

import numpy as np

DIRECTIONS = ("left", "right", "up", "down", "still")
INTERACTIONS = ("approach", "move_apart", "chase", "orbit", "jump_over", "swap")
SPEED = (3.0, 5.0)          # px per frame at 64 px
#: Two objects standing still, captioned "{A} and {B}" (a pretraining caption family that is off by default:
#: ``PretrainConfig.p_still_pair``); not an interaction, so no customization motion and no measure names it.
STILL_PAIR = "still_pair"


def _bounds(r: float, extent: int) -> tuple[float, float]:
    """Range of centre coordinates keeping a disc of radius r at least 1 px inside the frame."""
    return r + 0.5, extent - 1.5 - r


def single_path(rng: np.random.Generator, direction: str, radius: float, frames: int, height: int,
                width: int, speed: float | None = None) -> np.ndarray:
    """[F, 2] centres for one object moving in ``direction`` (speed in px/frame, capped to fit)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}")
    unit = min(height, width) / 64.0
    (xlo, xhi), (ylo, yhi) = _bounds(radius, width), _bounds(radius, height)
    if direction == "still":
        p = np.array([rng.uniform(xlo, xhi), rng.uniform(ylo, yhi)])
        return np.repeat(p[None], frames, axis=0)
    vec = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[direction]
    axis = 0 if vec[0] else 1
    lo, hi = (xlo, xhi) if axis == 0 else (ylo, yhi)
    v = speed if speed is not None else rng.uniform(*SPEED) * unit
    v = min(v, (hi - lo) / max(frames - 1, 1))
    travel = v * (frames - 1)
    start = lo + rng.uniform(0.0, max(hi - lo - travel, 0.0))
    along = start + v * np.arange(frames)
    if vec[axis] < 0:
        along = along[::-1]
    across = np.full(frames, rng.uniform(*((ylo, yhi) if axis == 0 else (xlo, xhi))))
    return np.stack([along, across] if axis == 0 else [across, along], axis=-1)


def _axis_frame(rng, height, width, allow_vertical=True):
    """Pick the interaction axis; returns (to_xy, along_extent, across_extent)."""
    if allow_vertical and rng.random() < 0.3:
        return (lambda al, ac: np.stack([ac, al], -1)), height, width
    return (lambda al, ac: np.stack([al, ac], -1)), width, height


def interaction_paths(rng: np.random.Generator, name: str, ra: float, rb: float, frames: int,
                      height: int, width: int) -> np.ndarray:
    """[2, F, 2] centres of objects A (first named) and B for interaction ``name``.

    Radii ``ra``, ``rb`` in px. Collision-free (centre distance >= ra + rb + 3u) and in frame.
    """
    if name not in INTERACTIONS:
        raise ValueError(f"unknown interaction {name!r}")
    unit = min(height, width) / 64.0
    s = np.linspace(0.0, 1.0, frames)
    clearance = ra + rb + 3.0 * unit
    for _ in range(200):
        paths = _interaction_try(rng, name, ra, rb, s, height, width, unit)
        if paths is None:
            continue
        dist = np.linalg.norm(paths[0] - paths[1], axis=-1)
        inside = all(
            (paths[i, :, 0].min() >= r + 0.5 - 1e-6) and (paths[i, :, 0].max() <= width - 1.5 - r + 1e-6)
            and (paths[i, :, 1].min() >= r + 0.5 - 1e-6) and (paths[i, :, 1].max() <= height - 1.5 - r + 1e-6)
            for i, r in ((0, ra), (1, rb)))
        if inside and dist.min() >= clearance - 1e-6:
            return paths
    raise ValueError(f"cannot fit {name!r} with radii {ra:.1f}, {rb:.1f} in {width}x{height}")


def still_pair_paths(rng: np.random.Generator, ra: float, rb: float, frames: int, height: int,
                     width: int) -> np.ndarray:
    """[2, F, 2] centres of two still objects, in frame and apart by at least ra + rb + 3u px."""
    clearance = ra + rb + 3.0 * min(height, width) / 64.0
    for _ in range(200):
        p = np.array([[rng.uniform(*_bounds(r, width)), rng.uniform(*_bounds(r, height))] for r in (ra, rb)])
        if np.linalg.norm(p[0] - p[1]) >= clearance:
            return np.repeat(p[:, None], frames, axis=1)
    raise ValueError(f"cannot fit two still objects with radii {ra:.1f}, {rb:.1f} in {width}x{height}")


def _interaction_try(rng, name, ra, rb, s, height, width, unit):
    rmax = max(ra, rb)
    if name in ("approach", "move_apart", "chase", "swap"):
        to_xy, along_len, across_len = _axis_frame(rng, height, width)
        lo, hi = 0.5, along_len - 1.5                  # centre-to-border margins are added below
        clo, chi = _bounds(rmax, across_len)
        if name in ("approach", "move_apart"):
            d1 = ra + rb + rng.uniform(3.0, 5.0) * unit
            d0max = hi - lo - ra - rb
            if d0max - d1 < 16 * unit:
                return None
            d0 = rng.uniform(min(d1 + 22 * unit, d0max), min(d1 + 34 * unit, d0max))
            d = d0 + (d1 - d0) * s if name == "approach" else d1 + (d0 - d1) * s
            side = 1.0 if rng.random() < 0.5 else -1.0     # +1: A on the low side
            first_r, last_r = (ra, rb) if side > 0 else (rb, ra)
            low = lo + first_r + d.max() / 2   # high >= low up to rounding when d0 = d0max
            mid = rng.uniform(low, max(low, hi - last_r - d.max() / 2))
            a_al, b_al = mid - side * d / 2, mid + side * d / 2
            ac = np.full_like(s, rng.uniform(clo, chi))
            return np.stack([to_xy(a_al, ac), to_xy(b_al, ac)])
        if name == "chase":
            d1 = ra + rb + rng.uniform(3.0, 6.0) * unit
            close = rng.uniform(8.0, 14.0) * unit
            room = hi - lo - ra - rb - d1 - close             # what is left for the leader's travel
            if room < 12 * unit:
                return None
            tb = rng.uniform(12 * unit, min(room, 24 * unit))
            ta = tb + close
            direction = 1.0 if rng.random() < 0.5 else -1.0
            if direction > 0:
                a0 = rng.uniform(lo + ra, hi - rb - d1 - ta + 1e-9) if hi - rb - d1 - ta > lo + ra else lo + ra
                a_al = a0 + ta * s
                b_al = a0 + d1 + close + tb * s
            else:
                a0 = rng.uniform(lo + rb + d1 + ta, hi - ra) if hi - ra > lo + rb + d1 + ta else hi - ra
                a_al = a0 - ta * s
                b_al = a0 - d1 - close - tb * s
            ac = np.full_like(s, rng.uniform(clo, chi))
            return np.stack([to_xy(a_al, ac), to_xy(b_al, ac)])
        # swap: A over the upper half ellipse, B under, about the midpoint
        e = rng.uniform(0.5, 0.8) * (ra + rb + 3 * unit)     # 2e >= clearance
        dmax = (hi - lo) / 2 - rmax
        dmin = max(e, 12 * unit)
        if dmax < dmin or chi - clo < 2 * e:
            return None
        dd = rng.uniform(dmin, dmax)
        mid = np.array([rng.uniform(lo + rmax + dd, hi - rmax - dd), rng.uniform(clo + e, chi - e)])
        side = 1.0 if rng.random() < 0.5 else -1.0
        c, sn = np.cos(np.pi * s), np.sin(np.pi * s)
        a = np.stack([mid[0] - side * dd * c, mid[1] - e * sn], -1)
        b = np.stack([mid[0] + side * dd * c, mid[1] + e * sn], -1)
        return np.stack([to_xy(a[:, 0], a[:, 1]), to_xy(b[:, 0], b[:, 1])])
    if name == "orbit":
        size = min(height, width)
        rmin_orbit = ra + rb + 4 * unit
        rmax_orbit = min(ra + rb + 8 * unit, (size - 2.0) / 2 - ra)
        if rmax_orbit < rmin_orbit:
            return None
        big_r = rng.uniform(rmin_orbit, rmax_orbit)
        m = big_r + ra
        cx = rng.uniform(m + 0.5, width - 1.5 - m)
        cy = rng.uniform(m + 0.5, height - 1.5 - m)
        theta0 = rng.uniform(0, 2 * np.pi)
        sweep = np.radians(rng.uniform(240.0, 320.0)) * (1.0 if rng.random() < 0.5 else -1.0)
        th = theta0 + sweep * s
        a = np.stack([cx + big_r * np.cos(th), cy + big_r * np.sin(th)], -1)
        b = np.repeat(np.array([[cx, cy]]), len(s), axis=0)
        return np.stack([a, b])
    # jump_over: B still on the ground, A jumps over it along a parabola
    ground = rng.uniform(max(height * 0.7, 2 * rb), height - 1.5)
    yb = ground - rb
    ya = ground - ra
    xb = width / 2 + rng.uniform(-3, 3) * unit
    dmin = ra + rb + 3 * unit
    dmax = min(xb - (ra + 0.5), width - 1.5 - ra - xb)
    hmax = ya - ra - 0.5
    if dmax < dmin:
        return None
    dd = rng.uniform(dmin, dmax)
    hmin = 2 * rb + 4 * unit
    if hmax < hmin:
        return None
    hh = rng.uniform(hmin, hmax)
    side = 1.0 if rng.random() < 0.5 else -1.0
    a = np.stack([xb - side * dd * (1 - 2 * s), ya - hh * 4 * s * (1 - s)], -1)
    b = np.repeat(np.array([[xb, yb]]), len(s), axis=0)
    return np.stack([a, b])
