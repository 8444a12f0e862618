"""The loop every trainer shares: seeded, resumable, observable, cancellable, NaN-safe.

A trainer gives :func:`run_training` its parameter groups and a ``step_fn(step) -> (loss, parts)``
that draws all randomness from the loop's ``torch.Generator`` (a step_fn may call ``backward`` on
its parts itself, through :meth:`LossScale.backward`, and return a detached total). The loop checks
the loss, unscales the gradients (fp16: :class:`LossScale`), steps AdamW, reports each step to
``callback`` and checkpoints to ``checkpoint_path`` (safetensors: parameters, optimiser moments,
generator state, loss scale, losses) so that a resumed run equals an uninterrupted one.
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
    loss_scale: float = 1.0  # the factor this step's loss was multiplied by before backward (fp16)
    skipped: bool = False  # fp16: the scaled gradients overflowed, so the optimiser step was skipped
    has_loss: bool = True  # False for generation steps (sampling, prior videos): ``loss`` means nothing


Callback = Callable[[StepInfo], None]


def within(callback: Callback | None, stage: str, offset: int, total: int) -> Callback | None:
    """A callback that reports a sub-task's steps as steps ``offset + step`` of ``total`` in ``stage``:
    for example the 25 sampling steps of the 3rd of 4 prior videos as steps 51..75 of 100."""
    if callback is None:
        return None

    def relay(info: StepInfo) -> None:
        callback(StepInfo(stage, offset + info.step, total, info.loss, info.parts, info.seconds,
                          info.loss_scale, info.skipped, info.has_loss))

    return relay


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
    skipped_steps: list[int] = field(default_factory=list)  # 1-based steps whose update was skipped
    loss_scale: float = 1.0  # the scale at the end (fp16; 1 otherwise)


class LossScale:
    """Dynamic loss scaling for fp16 training, as ``torch.amp.GradScaler`` does it.

    A mean over a video latent's ~276 000 elements gives each prediction element a gradient near
    1e-6: subnormal in fp16 (smallest normal 6.1e-5), so on its way back through the frozen fp16
    UNet to the fp32 LoRA and token weights much of it flushes to zero. :meth:`backward` multiplies
    the loss by ``scale`` (2**16 at first) before back-propagating; the loop then divides the fp32
    trainable gradients by it (:meth:`unscale`), skips the optimiser step when any is inf or nan
    and halves the scale (:meth:`update`), and doubles it after ``growth_interval`` good steps.
    Disabled (scale 1, nothing checked: bit-identical to plain backward) unless the model is fp16;
    bf16 has fp32's exponent range and needs none.
    """

    def __init__(self, enabled: bool, init_scale: float = 2.0 ** 16, growth_interval: int = 2000,
                 growth_factor: float = 2.0, backoff_factor: float = 0.5):
        self.enabled = bool(enabled)
        self.scale = float(init_scale) if self.enabled else 1.0
        self.growth_interval = growth_interval
        self.growth_factor, self.backoff_factor = growth_factor, backoff_factor
        self.good_steps = 0

    @classmethod
    def for_model(cls, model) -> "LossScale":
        """Enabled when the model's weights are fp16."""
        return cls(model.dtype == torch.float16)

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        """``loss.backward(**kwargs)``, the loss multiplied by the current scale when enabled."""
        (loss * self.scale if self.enabled else loss).backward(**kwargs)

    def unscale(self, params) -> bool:
        """Divide the gradients of ``params`` by the scale; True when all are finite (always when
        disabled). The scale is a power of two, so dividing is exact."""
        if not self.enabled:
            return True
        grads = [p.grad for p in params if p.grad is not None]
        for g in grads:
            g.mul_(1.0 / self.scale)
        return bool(all(torch.isfinite(g).all() for g in grads))

    def update(self, finite: bool) -> None:
        """After a step: halve the scale on an overflow, double it after ``growth_interval`` good steps."""
        if not self.enabled:
            return
        if not finite:
            self.scale *= self.backoff_factor
            self.good_steps = 0
            return
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            self.scale *= self.growth_factor
            self.good_steps = 0

    def state_dict(self) -> dict:
        return {"enabled": self.enabled, "scale": self.scale, "good_steps": self.good_steps}

    def load_state_dict(self, state: dict) -> None:
        if self.enabled and state.get("enabled"):  # (a checkpoint of another precision keeps the defaults)
            self.scale, self.good_steps = float(state["scale"]), int(state["good_steps"])


def run_key(model, settings, inputs: dict[str, torch.Tensor | None]) -> str:
    """What a checkpoint belongs to: the base model, the settings (less :data:`RESUMABLE_CHANGES`)
    and the named input tensors. A checkpoint written under another key is refused, not resumed."""
    fields = {k: v for k, v in asdict(settings).items() if k not in RESUMABLE_CHANGES}
    content = tensors_digest({k: v for k, v in inputs.items() if v is not None})
    key = json.dumps([model.fingerprint, fields, content], sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _save_checkpoint(path: Path, stage: str, groups: list[ParamGroup], opt: torch.optim.Optimizer,
                     generator: torch.Generator, step: int, losses: list, parts: list, run: str,
                     scaler: LossScale, skipped: list) -> None:
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
            "run": run, "loss_scale": json.dumps({**scaler.state_dict(), "skipped": skipped})}
    atomic_save_safetensors(tensors, path, meta)


def _foreign(path: Path, why: str) -> VideoMageInputError:
    return VideoMageInputError("checkpoint", f"'{path}' {why}; delete it or choose another checkpoint "
                               "file to start this run over")


def _load_checkpoint(path: Path, stage: str, groups: list[ParamGroup], opt: torch.optim.Optimizer,
                     generator: torch.Generator, run: str,
                     scaler: LossScale) -> tuple[int, list, list, list]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()} if meta.get("stage") == stage else {}
    except Exception as exc:  # safetensors raises SafetensorError / OSError on bad files
        raise _foreign(path, f"is not a readable checkpoint ({exc})") from exc
    # never overwrite what is not this stage's checkpoint (a trained artifact, another stage's checkpoint)
    if "stage" not in meta:
        raise _foreign(path, "is not a VideoMage training checkpoint (a trained artifact or another file?)")
    if meta["stage"] != stage:
        raise _foreign(path, f"is a checkpoint of the '{meta['stage']}' stage, not of '{stage}'")
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
            scale_state = json.loads(meta.get("loss_scale", "{}"))  # (none in files from before scaling)
            scaler.load_state_dict(scale_state)
            skipped = [int(s) for s in scale_state.get("skipped", [])]
            return int(meta["step"]), json.loads(meta["losses"]), json.loads(meta["parts"]), skipped
    except (KeyError, ValueError, RuntimeError) as exc:
        raise _foreign(path, f"does not fit this run's parameters ({exc})") from exc


def run_training(stage: str, steps: int, groups: list[ParamGroup],
                 step_fn: Callable[[int], tuple[torch.Tensor, dict]], generator: torch.Generator,
                 callback: Callback | None = None, cancel: Callable[[], bool] | None = None,
                 checkpoint_path: str | Path | None = None, checkpoint_every: int = 50,
                 resume: bool = True, stop_after: int | None = None, run: str = "",
                 loss_scale: LossScale | None = None) -> TrainResult:
    """Run ``steps`` optimiser steps of ``step_fn``.

    ``run`` (:func:`run_key`) ties the checkpoint to this run: resuming from a checkpoint of
    another run is a clear error rather than a shape error or a silently mixed result.

    ``stop_after`` ends the run early (with a checkpoint) after that many steps, as an interruption
    would; a later call with ``resume=True`` continues from the checkpoint.

    ``loss_scale`` (:meth:`LossScale.for_model`; the step_fn back-propagates through the same
    object) scales fp16 losses; a step whose gradients overflow is skipped (``StepInfo.skipped``,
    ``TrainResult.skipped_steps``). A non-finite *loss* still stops the run (NonFiniteLossError).
    """
    params = [p for g in groups for p in g.params]
    opt = torch.optim.AdamW([{"params": g.params, "lr": g.lr, "weight_decay": g.weight_decay}
                             for g in groups], eps=1e-8)
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    scaler = loss_scale if loss_scale is not None else LossScale(False)
    start, losses, parts_log, skipped = 0, [], [], []
    if ckpt and ckpt.is_file():  # only this run's checkpoint is resumed (and later overwritten)
        if not resume:
            raise _foreign(ckpt, "exists and resume is off")
        start, losses, parts_log, skipped = _load_checkpoint(ckpt, stage, groups, opt, generator, run, scaler)
    began = time.perf_counter()
    step = start
    for step in range(start, steps):
        if cancel is not None and cancel():
            if ckpt:
                _save_checkpoint(ckpt, stage, groups, opt, generator, step, losses, parts_log, run, scaler,
                                 skipped)
            raise TrainingCancelled(f"{stage}: cancelled at step {step}/{steps}")
        t0 = time.perf_counter()
        at_start = generator.get_state()
        try:
            loss, parts = step_fn(step)
        except KeyboardInterrupt:  # Ctrl-C: keep every finished step, as the cancel check does
            if ckpt:
                opt.zero_grad(set_to_none=True)
                generator.set_state(at_start)  # the step is redone from its own start on resume
                _save_checkpoint(ckpt, stage, groups, opt, generator, step, losses, parts_log, run, scaler,
                                 skipped)
            raise TrainingCancelled(f"{stage}: interrupted at step {step}/{steps}"
                                    + (f"; resumable from {ckpt}" if ckpt else "")) from None
        value = float(loss.detach())
        if not math.isfinite(value):
            opt.zero_grad(set_to_none=True)
            where = ""
            if ckpt:
                _save_checkpoint(ckpt, stage, groups, opt, generator, step, losses, parts_log, run, scaler,
                                 skipped)
                where = f"; the last good state (step {step}) is saved in {ckpt}"
            raise NonFiniteLossError(f"{stage}: the loss became {value} at step {step + 1}/{steps} "
                                     f"(try a lower learning rate){where}")
        if loss.requires_grad:  # a step_fn may have back-propagated its parts itself (less memory)
            scaler.backward(loss)
        scale = scaler.scale
        finite = scaler.unscale(params)
        if finite:
            opt.step()
        else:  # fp16 overflow: no update, a smaller scale next step (as GradScaler)
            skipped.append(step + 1)
        scaler.update(finite)
        opt.zero_grad(set_to_none=True)
        losses.append(value)
        parts = {k: float(v) for k, v in parts.items()}
        parts_log.append(parts)
        if callback is not None:
            callback(StepInfo(stage, step + 1, steps, value, parts, time.perf_counter() - t0,
                              loss_scale=scale, skipped=not finite))
        done = step + 1
        if ckpt and (done % checkpoint_every == 0 or done == steps or done == stop_after):
            _save_checkpoint(ckpt, stage, groups, opt, generator, done, losses, parts_log, run, scaler,
                             skipped)
        if stop_after is not None and done >= stop_after and done < steps:
            break
    for p in params:
        p.requires_grad_(False)
    return TrainResult(losses, parts_log, time.perf_counter() - began, resumed_from=start,
                       skipped_steps=skipped, loss_scale=scaler.scale)
