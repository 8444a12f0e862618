"""Pretraining data: every step's batch is a pure function of ``(seed, stage, step)``
(:func:`step_seed`), so any number of loader processes and any resume point give the same data.
Still frames of the broad visual space (re-hued, enlarged objects, with dilated object masks) for
the VAE stage, and captioned clips with no held-out prompt cell for the text-to-video stage. Split
out of :mod:`.pretrain`, which re-exports these names."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from .controllability import is_held_out
from .generator import render_clip, sample_pretraining_clip
from .pretrain_config import _STAGE_CODE, PretrainConfig


# --------------------------------------------------------------------------- data


def step_seed(seed: int, stage: str, step: int) -> int:
    """The seed of one step's randomness (data, noise, timesteps, dropout): a pure function."""
    return int(np.random.SeedSequence([seed, _STAGE_CODE[stage], step]).generate_state(1)[0])


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[..., 1:, :] |= mask[..., :-1, :]
    out[..., :-1, :] |= mask[..., 1:, :]
    out[..., :, 1:] |= mask[..., :, :-1]
    out[..., :, :-1] |= mask[..., :, 1:]
    return out


def vae_images(rng: np.random.Generator, n: int, cfg: PretrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """``n`` still frames of the broad visual space: uint8 [n, H, W, 3] and object masks [n, H, W]
    (dilated by one pixel, so that edges count as object)."""
    imgs = np.empty((n, cfg.height, cfg.width, 3), np.uint8)
    masks = np.empty((n, cfg.height, cfg.width), bool)
    for i in range(n):
        clip = sample_pretraining_clip(
            rng, frames=1, height=cfg.height, width=cfg.width, p_interaction=cfg.p_interaction
        )
        objs = list(clip.spec.objects)
        changed = False
        for k, o in enumerate(objs):
            if rng.random() < cfg.vae_rehue:
                objs[k] = replace(objs[k], hue=float(rng.uniform(0.0, 360.0)))
                changed = True
            if rng.random() < 0.3:
                objs[k] = replace(objs[k], size=float(o.size * rng.uniform(1.0, cfg.vae_max_scale)))
                changed = True
        if changed:
            clip = render_clip(replace(clip.spec, objects=tuple(objs)))
        imgs[i] = np.round(clip.frames[0] * 255.0).astype(np.uint8)
        masks[i] = _dilate(clip.masks.any(axis=0)[0])
    return imgs, masks


def t2v_clips(rng: np.random.Generator, n: int, cfg: PretrainConfig) -> tuple[np.ndarray, list[str]]:
    """``n`` captioned pretraining clips (uint8 [n, F, H, W, 3]) with no held-out prompt cell."""
    frames = np.empty((n, cfg.frames, cfg.height, cfg.width, 3), np.uint8)
    captions = []
    for i in range(n):
        while True:
            clip = sample_pretraining_clip(
                rng,
                frames=cfg.frames,
                height=cfg.height,
                width=cfg.width,
                p_interaction=cfg.p_interaction,
                p_still_pair=cfg.p_still_pair,
                as_uint8=True,
            )
            if not is_held_out(clip.spec):
                break
        frames[i] = clip.frames
        captions.append(clip.caption)
    return frames, captions


class StepBatches(torch.utils.data.Dataset):
    """Item ``step`` is that step's batch (a pure function of seed, stage and step), so any number
    of worker processes, and any resume point, give the same data."""

    def __init__(self, stage: str, cfg: PretrainConfig):
        self.stage, self.cfg = stage, cfg

    def __len__(self):
        return 1 << 40

    def __getitem__(self, step: int):
        rng = np.random.default_rng(step_seed(self.cfg.seed, self.stage, int(step)))
        if self.stage == "vae":
            imgs, masks = vae_images(rng, self.cfg.vae_batch, self.cfg)
            return {"images": torch.from_numpy(imgs), "masks": torch.from_numpy(masks)}
        frames, caps = t2v_clips(rng, self.cfg.batch, self.cfg)
        return {"frames": torch.from_numpy(frames), "captions": caps}


def _batches(stage: str, cfg: PretrainConfig, start: int, stop: int, workers: int, pin: bool):
    ds = StepBatches(stage, cfg)
    if workers <= 0:
        return (ds[s] for s in range(start, stop))
    return iter(
        torch.utils.data.DataLoader(
            ds,
            batch_size=None,
            sampler=range(start, stop),
            num_workers=workers,
            prefetch_factor=4,
            pin_memory=pin,
        )
    )
