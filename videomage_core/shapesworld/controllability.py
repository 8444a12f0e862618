"""Base-model controllability on ShapesWorld: does a pretrained model draw what a prompt names?

For each *prompt cell* (one prompt: named colours, named shapes, a direction or a pretraining
interaction) N videos are sampled from a model folder (DDIM + CFG, seeds ``seed0 .. seed0 + N - 1``)
and each is scored with :func:`videomage_core.shapesworld.measures.prompt_following`: colour (each
named colour, per object), shape (each named shape, per object) and motion (the direction or the
interaction, with the right actor). The table per cell and over all cells, with 95 % confidence
half-widths, is what the model card and issue 4's base targets need:

    colour >= 0.8, shape >= 0.65, motion >= 0.6 on the held-out cells, 40+ samples per cell
    (chance: 0.25 / 0.33 / 0.2).

:data:`HELD_OUT_CELLS` are prompts that pretraining never shows (its data stream rejects every clip
whose caption is one of them, :func:`is_held_out`); they test that colour, shape and motion words
compose rather than being memorised as whole captions. (The held-out *interactions* orbit /
jump_over / swap are a different thing: nothing in pretraining shows them at all; they are the
customization motions and are not prompt cells here.) :data:`SEEN_CELLS` are a few prompts that
pretraining does show, for comparison.

Everything runs on ground-truth clips too (:func:`ground_truth_clips`), where every score is 1:
the measures are exact, so any shortfall of a model is the model's.

CLI: ``python -m videomage_core.shapesworld.controllability MODEL_DIR [--samples 40] [--device cuda]
[--json out.json]`` prints the markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .generator import (
    DIRECTIONS,
    NAMED_COLOURS,
    NAMED_SHAPES,
    PAIR_SIZE,
    PRETRAIN_INTERACTIONS,
    SINGLE_SIZE,
    SYMMETRIC_INTERACTIONS,
    ClipSpec,
    ObjectSpec,
    caption,
    sample_interaction,
    sample_object,
    sample_single,
)
from .measures import prompt_following

#: The issue's base-model targets (means over the held-out cells) and chance levels.
TARGETS = {"colour": 0.8, "shape": 0.65, "motion": 0.6}
CHANCE = {"colour": 0.25, "shape": 1 / 3, "motion": 0.2}
MEASURES = ("colour", "shape", "motion")


@dataclass(frozen=True)
class PromptCell:
    """A prompt: objects as ``(colour word or None, shape)`` and a direction or interaction."""

    objects: tuple[tuple[str | None, str], ...]
    motion: str

    def __post_init__(self):
        for colour, shape in self.objects:
            if colour is not None and colour not in NAMED_COLOURS:
                raise ValueError(f"unknown colour word {colour!r}")
            if shape not in NAMED_SHAPES:
                raise ValueError(f"prompt cells name their shapes: one of {NAMED_SHAPES}, got {shape!r}")
        if self.motion in DIRECTIONS and len(self.objects) != 1:
            raise ValueError("a direction cell has one object")
        if self.motion not in DIRECTIONS and (
            self.motion not in PRETRAIN_INTERACTIONS or len(self.objects) != 2
        ):
            raise ValueError(
                f"an interaction cell has two objects and a pretraining interaction "
                f"{PRETRAIN_INTERACTIONS}, got {self.motion!r}"
            )

    def object_specs(self) -> tuple[ObjectSpec, ...]:
        """Canonical objects (named hue centres; an unnamed colour gets purple, never spoken)."""
        return tuple(ObjectSpec(shape=s, hue=NAMED_COLOURS[c] if c else 280.0) for c, s in self.objects)

    @property
    def prompt(self) -> str:
        return caption(self.object_specs(), self.motion)

    @property
    def name(self) -> str:
        return self.prompt

    def spec(self, frames: int = 8, height: int = 128, width: int = 128) -> ClipSpec:
        """What :func:`prompt_following` compares a sampled video with (paths are not used)."""
        objs = self.object_specs()
        return ClipSpec(
            objects=objs,
            paths=np.zeros((len(objs), frames, 2)),
            motion=self.motion,
            height=height,
            width=width,
        )

    def key(self) -> tuple:
        return _caption_key([(c, s) for c, s in self.objects], self.motion)


def _caption_key(objects: Sequence[tuple[str | None, str]], motion: str) -> tuple:
    """Identity of a caption: symmetric interactions ignore the order of their two objects."""
    objs = tuple(objects)
    if motion in SYMMETRIC_INTERACTIONS:
        objs = tuple(sorted(objs, key=lambda o: (o[0] or "", o[1] or "")))
    return objs, motion


def _spec_key(spec: ClipSpec) -> tuple:
    return _caption_key(
        [(o.colour_word, o.shape if o.shape in NAMED_SHAPES else None) for o in spec.objects], spec.motion
    )


#: Prompts pretraining never shows. Every colour, shape and direction appears, each colour twice
#: among the single-object cells; every pretraining interaction appears.
HELD_OUT_CELLS: tuple[PromptCell, ...] = (
    PromptCell((("red", "circle"),), "right"),
    PromptCell((("red", "triangle"),), "up"),
    PromptCell((("green", "square"),), "left"),
    PromptCell((("green", "circle"),), "down"),
    PromptCell((("blue", "triangle"),), "still"),
    PromptCell((("blue", "square"),), "right"),
    PromptCell((("yellow", "circle"),), "left"),
    PromptCell((("yellow", "triangle"),), "down"),
    PromptCell((("red", "circle"), ("blue", "square")), "approach"),
    PromptCell((("green", "triangle"), ("yellow", "circle")), "move_apart"),
    PromptCell((("blue", "circle"), ("red", "triangle")), "chase"),
    PromptCell((("yellow", "square"), ("green", "square")), "chase"),
)

#: A few prompts pretraining does show (for comparison with the held-out ones).
SEEN_CELLS: tuple[PromptCell, ...] = (
    PromptCell((("red", "square"),), "left"),
    PromptCell((("blue", "circle"),), "up"),
    PromptCell((("green", "triangle"),), "right"),
    PromptCell((("yellow", "square"),), "still"),
    PromptCell((("green", "circle"), ("red", "square")), "approach"),
    PromptCell((("yellow", "triangle"), ("blue", "triangle")), "chase"),
)

_HELD_OUT_KEYS = frozenset(c.key() for c in HELD_OUT_CELLS)


def is_held_out(spec: ClipSpec, cells: Sequence[PromptCell] = HELD_OUT_CELLS) -> bool:
    """Whether a clip's caption is one of the held-out prompts (pretraining must reject it)."""
    keys = _HELD_OUT_KEYS if cells is HELD_OUT_CELLS else frozenset(c.key() for c in cells)
    return _spec_key(spec) in keys


# --------------------------------------------------------------------------- ground truth


def ground_truth_clips(
    cell: PromptCell, n: int, rng: np.random.Generator, frames: int = 8, height: int = 128, width: int = 128
):
    """``n`` generator clips that show ``cell`` (varied hues within the named band, sizes, textures,
    positions and backgrounds): what a perfect model would produce."""
    clips = []
    for _ in range(n):
        objs = []
        for colour, shape in cell.objects:
            size = PAIR_SIZE if len(cell.objects) == 2 else SINGLE_SIZE
            avoid = objs[0].hue if objs else None
            o = sample_object(
                rng,
                named_colour=colour is not None,
                shape=shape,
                size_range=size,
                avoid_hue=avoid if colour is None else None,
            )
            if colour is not None:  # the named band of this colour
                o = replace(o, hue=(NAMED_COLOURS[colour] + rng.uniform(-8.0, 8.0)) % 360.0)
            objs.append(o)
        if cell.motion in DIRECTIONS:
            clips.append(sample_single(rng, cell.motion, objs[0], frames=frames, height=height, width=width))
        else:
            clips.append(
                sample_interaction(rng, cell.motion, objs, frames=frames, height=height, width=width)
            )
    return clips


# --------------------------------------------------------------------------- sampling


@torch.no_grad()
def sample_batch(
    model, prompts: Sequence[str], seeds: Sequence[int], settings, autocast_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """DDIM with CFG for several prompts at once; video ``i`` equals
    ``ddim_sample(model, prompts[i], replace(settings, seed=seeds[i]))`` (same noise, same
    updates, batched). Returns latents ``(B, C, F, h, w)``."""
    from ..diffusion import encode_prompts, predict_noise
    from ..losses import classifier_free_guidance
    from ..sampling import initial_noise

    settings.check()
    if len(prompts) != len(seeds):
        raise ValueError("one seed per prompt")
    sched = copy.deepcopy(model.scheduler)
    sched.set_timesteps(settings.steps, device=model.device)
    x = torch.cat([initial_noise(model, replace(settings, seed=int(s))) for s in seeds])
    b = len(prompts)
    text = encode_prompts(model, [settings.negative_prompt] * b + list(prompts))
    ctx = (
        torch.autocast(model.device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else torch.autocast(model.device.type, enabled=False)
    )
    for t in sched.timesteps:
        with ctx:
            eps = predict_noise(model, torch.cat([x, x]), t, text)
        uncond, cond = eps.float().chunk(2)
        eps = classifier_free_guidance(uncond, cond, settings.cfg).to(x.dtype)
        x = sched.step(eps, t, x).prev_sample
    return x


def sample_videos(
    model,
    prompts: Sequence[str],
    seeds: Sequence[int],
    settings,
    batch: int = 16,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Sample and decode: ``[N, F, H, W, 3]`` float32 frames in 0..1."""
    from ..diffusion import decode_latents

    out = []
    for i in range(0, len(prompts), batch):
        lat = sample_batch(model, prompts[i : i + batch], seeds[i : i + batch], settings, autocast_dtype)
        frames = decode_latents(model, lat).numpy()
        out.append(frames.reshape(lat.shape[0], lat.shape[2], *frames.shape[1:]))
    return (
        np.concatenate(out)
        if out
        else np.zeros((0, settings.frames, settings.height, settings.width, 3), np.float32)
    )


# --------------------------------------------------------------------------- scoring


def score_video(frames: np.ndarray, spec: ClipSpec) -> dict:
    """Per-video scores: ``colour`` / ``shape`` (mean over the objects whose colour / shape the
    caption names; None when it names none) and ``motion`` (0 or 1)."""
    pf = prompt_following(frames, spec)
    out = {}
    for m in ("colour", "shape"):
        vals = [v for v in pf[m] if v is not None]
        out[m] = float(np.mean(vals)) if vals else None
    out["motion"] = float(pf["motion"])
    return out


def _score_job(args):
    frames, spec = args
    return score_video(frames, spec)


def score_videos(videos: Sequence[np.ndarray], spec: ClipSpec, workers: int = 0) -> list[dict]:
    jobs = [(v, spec) for v in videos]
    if workers and workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            return list(pool.map(_score_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    return [_score_job(j) for j in jobs]


def _stat(values: Sequence[float]) -> dict:
    """Mean and 95 % confidence half-width (normal approximation) of per-video scores."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "ci95": None, "n": 0}
    half = float(1.96 * v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else None
    return {"mean": float(v.mean()), "ci95": half, "n": int(v.size)}


@dataclass
class ControllabilityReport:
    """Scores per cell and over all cells. ``overall[measure] = {"mean", "ci95", "n"}``."""

    cells: dict = field(default_factory=dict)  # prompt -> {measure: stat, "scores": [...]}
    overall: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def meets_targets(self) -> dict:
        return {
            m: (self.overall.get(m, {}).get("mean") is not None and self.overall[m]["mean"] >= TARGETS[m])
            for m in MEASURES
        }

    def to_dict(self) -> dict:
        return {
            "cells": {k: {m: v[m] for m in MEASURES} for k, v in self.cells.items()},
            "overall": self.overall,
            "targets": TARGETS,
            "chance": CHANCE,
            "meets_targets": self.meets_targets,
            "settings": self.settings,
            "seconds": round(self.seconds, 1),
        }

    def markdown(self) -> str:
        def fmt(s):
            if s is None or s.get("mean") is None:
                return "-"
            ci = s.get("ci95")
            return f"{s['mean']:.2f}" + (f" ± {ci:.2f}" if ci is not None and math.isfinite(ci) else "")

        lines = ["| prompt | n | colour | shape | motion |", "|---|---|---|---|---|"]
        for name, row in self.cells.items():
            lines.append(
                f"| {name} | {row['motion']['n']} | {fmt(row['colour'])} | {fmt(row['shape'])} | "
                f"{fmt(row['motion'])} |"
            )
        o = self.overall
        lines.append(
            f"| **all cells** | {o.get('motion', {}).get('n', 0)} | **{fmt(o.get('colour'))}** | "
            f"**{fmt(o.get('shape'))}** | **{fmt(o.get('motion'))}** |"
        )
        lines.append(
            f"| target (chance) | | >= {TARGETS['colour']} ({CHANCE['colour']:.2f}) | "
            f">= {TARGETS['shape']} ({CHANCE['shape']:.2f}) | >= {TARGETS['motion']} "
            f"({CHANCE['motion']:.2f}) |"
        )
        return "\n".join(lines)


def summarize(
    scores_per_cell: dict, settings: dict | None = None, seconds: float = 0.0
) -> ControllabilityReport:
    """``{prompt: [score_video(...) per video]}`` -> report (overall: every video of every cell)."""
    rep = ControllabilityReport(settings=dict(settings or {}), seconds=seconds)
    pooled = {m: [] for m in MEASURES}
    for name, scores in scores_per_cell.items():
        row = {m: _stat([s[m] for s in scores]) for m in MEASURES}
        row["scores"] = scores
        rep.cells[name] = row
        for m in MEASURES:
            pooled[m] += [s[m] for s in scores]
    rep.overall = {m: _stat(pooled[m]) for m in MEASURES}
    return rep


def score_ground_truth(
    cells: Sequence[PromptCell] = HELD_OUT_CELLS,
    samples_per_cell: int = 4,
    frames: int = 8,
    height: int = 128,
    width: int = 128,
    seed: int = 0,
) -> ControllabilityReport:
    """The scorer on generator clips of each cell (every score must be 1: the measures are exact)."""
    rng = np.random.default_rng(seed)
    out = {}
    for cell in cells:
        clips = ground_truth_clips(cell, samples_per_cell, rng, frames, height, width)
        spec = cell.spec(frames, height, width)
        out[cell.name] = score_videos([c.frames for c in clips], spec)
    return summarize(out, {"source": "ground truth", "samples_per_cell": samples_per_cell})


def evaluate_controllability(
    model,
    cells: Sequence[PromptCell] = HELD_OUT_CELLS,
    samples_per_cell: int = 40,
    settings=None,
    batch: int = 16,
    seed0: int = 0,
    workers: int = 0,
    autocast_dtype: torch.dtype | None = None,
    progress: Callable[[str], None] | None = None,
) -> ControllabilityReport:
    """Sample ``samples_per_cell`` videos per cell from ``model`` (a loaded
    :class:`~videomage_core.model.VideoMageModel` or a folder) and score them.

    ``settings``: a :class:`~videomage_core.sampling.SampleSettings` (default: 8 frames at 128x128,
    30 DDIM steps, CFG 3, the setting the first experiment found best); its seed is ignored (video
    ``k`` of every cell uses seed ``seed0 + k``).
    """
    from ..model import load_model
    from ..sampling import SampleSettings

    if not hasattr(model, "unet"):
        model = load_model(model)
    settings = settings or SampleSettings(frames=8, height=128, width=128, steps=30, cfg=3.0)
    t0 = time.perf_counter()
    out = {}
    for ci, cell in enumerate(cells):
        seeds = [seed0 + k for k in range(samples_per_cell)]
        videos = sample_videos(
            model, [cell.prompt] * samples_per_cell, seeds, settings, batch, autocast_dtype
        )
        out[cell.name] = score_videos(
            list(videos), cell.spec(settings.frames, settings.height, settings.width), workers
        )
        if progress is not None:
            row = summarize({cell.name: out[cell.name]}).overall
            progress(
                f"[{ci + 1}/{len(cells)}] {cell.name}: "
                + ", ".join(f"{m} {row[m]['mean']:.2f}" for m in MEASURES if row[m]["mean"] is not None)
                + f" ({time.perf_counter() - t0:.0f}s)"
            )
    info = {
        "samples_per_cell": samples_per_cell,
        "frames": settings.frames,
        "height": settings.height,
        "width": settings.width,
        "steps": settings.steps,
        "cfg": settings.cfg,
        "negative_prompt": settings.negative_prompt,
        "seeds": f"{seed0}..{seed0 + samples_per_cell - 1}",
        "cells": len(cells),
    }
    return summarize(out, info, time.perf_counter() - t0)


def main(argv=None) -> int:
    from ..sampling import SampleSettings

    p = argparse.ArgumentParser(
        prog="python -m videomage_core.shapesworld.controllability",
        description="Score a ShapesWorld model's prompt following on held-out prompts.",
    )
    p.add_argument("model", help="diffusers model folder (or 'ground-truth' to score generator clips)")
    p.add_argument("--samples", type=int, default=40, help="videos per prompt cell")
    p.add_argument("--cells", choices=("held_out", "seen", "all"), default="held_out")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0, help="processes for the measures")
    p.add_argument("--json", help="write the report here")
    a = p.parse_args(argv)
    cells = {"held_out": HELD_OUT_CELLS, "seen": SEEN_CELLS, "all": HELD_OUT_CELLS + SEEN_CELLS}[a.cells]
    if a.model == "ground-truth":
        rep = score_ground_truth(cells, a.samples, a.frames, a.size, a.size)
    else:
        from ..model import load_model

        model = load_model(a.model, device=a.device)
        settings = SampleSettings(frames=a.frames, height=a.size, width=a.size, steps=a.steps, cfg=a.cfg)
        rep = evaluate_controllability(
            model,
            cells,
            a.samples,
            settings,
            a.batch,
            workers=a.workers,
            autocast_dtype=torch.bfloat16 if model.device.type == "cuda" else None,
            progress=lambda s: print(s, flush=True),
        )
    print(rep.markdown())
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rep.to_dict(), f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
