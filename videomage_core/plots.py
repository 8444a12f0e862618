"""Loss-curve images for previews and node outputs (PIL only, no plotting library, no ComfyUI).

:func:`render_loss_curve` draws the per-step loss (raw, faint) with a moving average (bold), any
named loss parts (e.g. ``L_sub`` / ``L_reg``), axis ticks, a title and note lines, and returns a
float tensor ``[1, H, W, 3]`` in 0..1 (ComfyUI's IMAGE layout). :func:`render_pil` returns the PIL
image (what a live progress preview wants).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch

BACKGROUND = (24, 26, 31)
PANEL = (33, 36, 43)
GRID = (60, 64, 74)
TEXT = (222, 225, 232)
MUTED = (150, 155, 166)
MAIN = (92, 170, 255)
PART_COLOURS = ((255, 168, 76), (120, 220, 140), (240, 110, 150), (190, 150, 255), (250, 230, 110))


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what exists so far)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _nice_ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.1e}"
    return f"{v:.3g}"


def render_pil(
    losses: Sequence[float],
    title: str = "loss",
    parts: Sequence[Mapping[str, float]] | None = None,
    notes: Sequence[str] = (),
    width: int = 512,
    height: int = 320,
):
    """The loss curve as an RGB PIL image of ``width`` x ``height``."""
    from PIL import Image, ImageDraw

    width, height = max(160, int(width)), max(120, int(height))
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    small, big = _font(11), _font(14)
    draw.text((10, 7), title, fill=TEXT, font=big)
    note_h = 14 * len(notes)
    left, right, top, bottom = 52, width - 12, 30, height - 26 - note_h
    for i, line in enumerate(notes):
        draw.text((10, height - 8 - note_h + 14 * i), line, fill=MUTED, font=small)
    draw.rectangle([left, top, right, bottom], fill=PANEL)

    values = [float(v) for v in losses if v is not None and math.isfinite(float(v))]
    series: list[tuple[str, list[float], tuple]] = []
    if parts:
        names = [k for k in parts[-1] if k]
        for i, name in enumerate(names):
            vals = [float(p.get(name, float("nan"))) for p in parts]
            if any(math.isfinite(v) for v in vals):
                series.append((name, vals, PART_COLOURS[i % len(PART_COLOURS)]))
    if not values:
        draw.text((left + 10, (top + bottom) // 2 - 6), "no steps recorded", fill=MUTED, font=small)
        return img

    pool = values + [v for _, vals, _ in series for v in vals if math.isfinite(v)]
    lo, hi = min(pool), max(pool)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * (abs(lo) + 1e-3), hi + 0.5 * (abs(hi) + 1e-3)
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    n = len(values)

    def xy(i, v):
        x = left + (right - left) * (i / max(1, n - 1))
        y = bottom - (bottom - top) * ((v - lo) / (hi - lo))
        return x, y

    for tick in _nice_ticks(lo, hi):
        _, y = xy(0, tick)
        draw.line([left, y, right, y], fill=GRID)
        draw.text((4, y - 6), _fmt(tick), fill=MUTED, font=small)
    for tick in _nice_ticks(1, max(1, n), 5):
        step = int(round(tick))
        if 1 <= step <= n:
            x, _ = xy(step - 1, lo)
            draw.line([x, bottom, x, bottom + 3], fill=MUTED)
            draw.text((x - 8, bottom + 4), str(step), fill=MUTED, font=small)

    def polyline(vals, colour, w):
        pts = [xy(i, v) for i, v in enumerate(vals) if math.isfinite(v)]
        if len(pts) == 1:
            x, y = pts[0]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        elif pts:
            draw.line(pts, fill=colour, width=w)

    faint = tuple(int(0.45 * c + 0.55 * b) for c, b in zip(MAIN, PANEL))
    polyline(values, faint, 1)
    polyline(moving_average(values, max(1, n // 20)), MAIN, 2)
    legend = [("loss", MAIN)]
    for name, vals, colour in series:
        polyline(moving_average(vals, max(1, n // 20)), colour, 1)
        legend.append((name, colour))
    x = left + 8
    for name, colour in legend:
        draw.rectangle([x, top + 8, x + 10, top + 16], fill=colour)
        draw.text((x + 14, top + 5), name, fill=TEXT, font=small)
        x += 24 + int(draw.textlength(name, font=small))
    last = f"step {n}: {_fmt(values[-1])}  (min {_fmt(min(values))})"
    draw.text((right - draw.textlength(last, font=small) - 6, top + 5), last, fill=TEXT, font=small)
    return img


def render_loss_curve(
    losses: Sequence[float],
    title: str = "loss",
    parts: Sequence[Mapping[str, float]] | None = None,
    notes: Sequence[str] = (),
    width: int = 512,
    height: int = 320,
) -> torch.Tensor:
    """The loss curve as a float ``[1, H, W, 3]`` image in 0..1."""
    img = render_pil(losses, title, parts, notes, width, height)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
