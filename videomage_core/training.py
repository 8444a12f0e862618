"""The loop every trainer shares: seeded, resumable, observable, cancellable, NaN-safe.

A trainer gives :func:`run_training` its parameter groups and a ``step_fn(step) -> (loss, parts)``
that draws all randomness from the loop's ``torch.Generator`` (a step_fn may call ``backward`` on
its parts itself and return a detached total). The loop checks the loss, steps
AdamW, reports each step to ``callback`` and checkpoints to ``checkpoint_path`` (safetensors:
parameters, optimiser moments, generator state, losses) so that a resumed run equals an
uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .artifacts import atomic_save_safetensors
from .cache import tensors_digest
from .errors import NonFiniteLossError, TrainingCancelled, VideoMageInputError

#: Settings a resumed run may change (more steps continue a run; checkpointing only trades memory).
RESUMABLE_CHANGES = ("steps", "gradient_checkpointing")


@dataclass
class StepInfo:
    """What a progress callback receives after each step."""

    stage: str
    step: int  # 1-based
    total: int
    loss: float
    parts: dict = field(default_factory=dict)
    seconds: float = 0.0


Callback = Callable[[StepInfo], None]


@dataclass
class ParamGroup:
    name: str
    params: list
    lr: float
    weight_decay: float = 0.0


@dataclass
class TrainResult:
    losses: list[float]
    parts: list[dict]
    seconds: float
    resumed_from: int = 0


def run_key(model, settings, inputs: dict[str, torch.Tensor | None]) -> str:
    """What a checkpoint belongs to: the base model, the settings (less :data:`RESUMABLE_CHANGES`)
    and the named input tensors. A checkpoint written under another key is refused, not resumed."""
    fields = {k: v for k, v in asdict(settings).items() if k not in RESUMABLE_CHANGES}
    content = tensors_digest({k: v for k, v in inputs.items() if v is not None})
    key = json.dumps([model.fingerprint, fields, content], sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _save_checkpoint(path: Path, stage: str, groups: list[ParamGroup], opt: torch.optim.Optimizer,
                     generator: torch.Generator, step: int, losses: list, parts: list, run: str) -> None:
    tensors = {"generator": generator.get_state()}
    for g in groups:
        for i, p in enumerate(g.params):
            tensors[f"param.{g.name}.{i}"] = p.detach()
            st = opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    tensors[f"opt.{g.name}.{i}.{key}"] = st[key]
            if "step" in st:
                tensors[f"opt.{g.name}.{i}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
    meta = {"stage": stage, "step": str(step), "losses": json.dumps(losses), "parts": json.dumps(parts),
            "run": run}
    atomic_save_safetensors(tensors, path, meta)


def _foreign(path: Path, why: str) -> VideoMageInputError:
    return VideoMageInputError("checkpoint", f"'{path}' {why}; delete it or choose another checkpoint "
                               "file to start this run over")


def _load_checkpoint(path: Path, stage: str, groups: list[ParamGroup], opt: torch.optim.Optimizer,
                     generator: torch.Generator, run: str) -> tuple[int, list, list]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("stage") != stage:
                return 0, [], []
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises SafetensorError / OSError on bad files
        raise _foreign(path, f"is not a readable checkpoint ({exc})") from exc
    if run and meta.get("run", run) != run:  # (files from before run keys carry none)
        raise _foreign(path, "was written by another run (other settings, inputs or base model)")
    try:
        with torch.no_grad():
            for g in groups:
                for i, p in enumerate(g.params):
                    saved = tensors[f"param.{g.name}.{i}"]
                    if saved.shape != p.shape:
                        raise ValueError(f"param.{g.name}.{i} is {tuple(saved.shape)}, "
                                         f"expected {tuple(p.shape)}")
                    p.copy_(saved)
                    if f"opt.{g.name}.{i}.exp_avg" in tensors:
                        opt.state[p] = {
                            "step": tensors[f"opt.{g.name}.{i}.step"].reshape(()).clone(),
                            "exp_avg": tensors[f"opt.{g.name}.{i}.exp_avg"].to(p).clone(),
                            "exp_avg_sq": tensors[f"opt.{g.name}.{i}.exp_avg_sq"].to(p).clone(),
                        }
            generator.set_state(tensors["generator"])
            return int(meta["step"]), json.loads(meta["losses"]), json.loads(meta["parts"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise _foreign(path, f"does not fit this run's parameters ({exc})") from exc


def run_training(stage: str, steps: int, groups: list[ParamGroup],
                 step_fn: Callable[[int], tuple[torch.Tensor, dict]], generator: torch.Generator,
                 callback: Callback | None = None, cancel: Callable[[], bool] | None = None,
                 checkpoint_path: str | Path | None = None, checkpoint_every: int = 50,
                 resume: bool = True, stop_after: int | None = None, run: str = "") -> TrainResult:
    """Run ``steps`` optimiser steps of ``step_fn``.

    ``run`` (:func:`run_key`) ties the checkpoint to this run: resuming from a checkpoint of
    another run is a clear error rather than a shape error or a silently mixed result.

    ``stop_after`` ends the run early (with a checkpoint) after that many steps, as an interruption
    would; a later call with ``resume=True`` continues from the checkpoint.
    """
    params = [p for g in groups for p in g.params]
    opt = torch.optim.AdamW([{"params": g.params, "lr": g.lr, "weight_decay": g.weight_decay}
                             for g in groups], eps=1e-8)
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    start, losses, parts_log = 0, [], []
    if ckpt and resume and ckpt.is_file():
        start, losses, parts_log = _load_checkpoint(ckpt, stage, groups, opt, generator, run)
    began = time.perf_counter()
    step = start
    for step in range(start, steps):
        if cancel is not None and cancel():
            if ckpt:
                _save_checkpoint(ckpt, stage, groups, opt, generator, step, losses, parts_log, run)
            raise TrainingCancelled(f"{stage}: cancelled at step {step}/{steps}")
        t0 = time.perf_counter()
        loss, parts = step_fn(step)
        value = float(loss.detach())
        if not math.isfinite(value):
            opt.zero_grad(set_to_none=True)
            where = ""
            if ckpt:
                _save_checkpoint(ckpt, stage, groups, opt, generator, step, losses, parts_log, run)
                where = f"; the last good state (step {step}) is saved in {ckpt}"
            raise NonFiniteLossError(f"{stage}: the loss became {value} at step {step + 1}/{steps} "
                                     f"(try a lower learning rate){where}")
        if loss.requires_grad:  # a step_fn may have back-propagated its parts itself (less memory)
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(value)
        parts = {k: float(v) for k, v in parts.items()}
        parts_log.append(parts)
        if callback is not None:
            callback(StepInfo(stage, step + 1, steps, value, parts, time.perf_counter() - t0))
        done = step + 1
        if ckpt and (done % checkpoint_every == 0 or done == steps or done == stop_after):
            _save_checkpoint(ckpt, stage, groups, opt, generator, done, losses, parts_log, run)
        if stop_after is not None and done >= stop_after and done < steps:
            break
    for p in params:
        p.requires_grad_(False)
    return TrainResult(losses, parts_log, time.perf_counter() - began, resumed_from=start)
