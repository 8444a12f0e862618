"""What a resumable pretraining run keeps and recomputes: the checkpoint folder (``state.json`` plus
safetensors files of weights, EMA and Adam moments per stage), the conversion of a trainer's
parameters and optimizer state to and from those files, and the learning-rate schedule (linear
warm-up then cosine, with the warm restarts that ``--extend`` records in the state). Split out of
:mod:`.pretrain`, which re-exports these names."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import torch

from ..atomic import atomic_write_json


# --------------------------------------------------------------------------- checkpoints


class Checkpoints:
    """``DIR/state.json`` + one versioned sub-folder per stage (``t2v-0001200/``) of safetensors files,
    each at most one model's fp32 weights (params, Adam moments and EMA apart, so every file stays
    under 16 MB). The state file is replaced last: a crash leaves the previous checkpoint valid."""

    def __init__(self, folder: str | os.PathLike):
        self.dir = Path(folder)
        self.state_path = self.dir / "state.json"

    def exists(self) -> bool:
        return self.state_path.is_file()

    def read_state(self) -> dict:
        return json.loads(self.state_path.read_text()) if self.exists() else {}

    def write_state(self, state: dict) -> None:
        atomic_write_json(self.state_path, state, indent=1)

    def save(self, state: dict, stage: str, step: int, groups: dict[str, dict[str, torch.Tensor]]) -> None:
        from ..artifacts import atomic_save_safetensors

        sub = self.dir / f"{stage}-{step:07d}"
        sub.mkdir(parents=True, exist_ok=True)
        for name, tensors in groups.items():
            atomic_save_safetensors(
                {k: v.detach().float() for k, v in tensors.items()},
                sub / f"{name}.safetensors",
                {"stage": stage, "step": str(step)},
            )
        state[stage]["checkpoint"] = sub.name
        self.write_state(state)
        for old in self.dir.glob(f"{stage}-*"):
            if old.is_dir() and old.name != sub.name:
                shutil.rmtree(old, ignore_errors=True)

    def load(self, state: dict, stage: str, name: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        path = self.dir / state[stage]["checkpoint"] / f"{name}.safetensors"
        return load_file(str(path))


def _named_params(modules: dict) -> dict[str, torch.nn.Parameter]:
    return {f"{m}.{n}": p for m, mod in modules.items() for n, p in mod.named_parameters()}


def _trainer_tensors(params: dict, opt, ema: dict | None, final: bool = False) -> dict[str, dict]:
    """Checkpoint groups; a finished stage keeps only its weights (and EMA)."""
    groups = {"params": {k: p for k, p in params.items()}}
    if ema is not None:
        groups["ema"] = ema
    if final:
        return groups
    groups.update(adam_m={}, adam_v={})
    for k, p in params.items():
        st = opt.state.get(p, {})
        if "exp_avg" in st:
            groups["adam_m"][k] = st["exp_avg"]
            groups["adam_v"][k] = st["exp_avg_sq"]
    return groups


def _restore_trainer(
    ckpt: Checkpoints, state: dict, stage: str, params: dict, opt, ema: dict | None, log=print
) -> None:
    """Load weights, EMA and Adam moments. Without the moment files (left behind to carry a
    checkpoint in less space: they are half of it) the moments restart from zero: the run goes on,
    no longer bit-identical to an uninterrupted one (noted in the state)."""
    step = state[stage]["step"]
    saved = ckpt.load(state, stage, "params")
    if (ckpt.dir / state[stage]["checkpoint"] / "adam_m.safetensors").is_file():
        m, v = ckpt.load(state, stage, "adam_m"), ckpt.load(state, stage, "adam_v")
    else:
        m, v = {}, {}
        state[stage].setdefault("optimizer_restarts", []).append(step)
        log(f"[{stage}] no Adam moments in the checkpoint: they restart at step {step}")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(saved[k])
            if k in m:
                opt.state[p] = {
                    "step": torch.tensor(float(step)),
                    "exp_avg": m[k].to(p).clone(),
                    "exp_avg_sq": v[k].to(p).clone(),
                }
        if ema is not None:
            for k, t in ckpt.load(state, stage, "ema").items():
                ema[k].copy_(t)


def scheduled_lr(st: dict, step: int, total: int, peak: float, warmup: int, min_frac: float) -> float:
    """The stage's learning rate at ``step``: :func:`lr_at` over the first plan, then over the last
    warm restart (``--extend``) that ``step`` has reached."""
    restarts = [r for r in st.get("restarts", []) if step >= r["at"]]
    if restarts:
        r = restarts[-1]
        return lr_at(step - r["at"], r["steps"], r["peak"], r["warmup"], min_frac)
    return lr_at(step, total, peak, warmup, min_frac)


def lr_at(step: int, total: int, peak: float, warmup: int, min_frac: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``peak`` to ``min_frac * peak`` at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    span = max(total - warmup, 1)
    p = min(max(step - warmup, 0) / span, 1.0)
    return peak * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * p)))
