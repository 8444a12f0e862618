"""Pretrain the built-in ShapesWorld model: tokenizer, VAE, text encoder + UNet3D, scheduler.

``python -m videomage_core.shapesworld.pretrain --out DIR [--device cuda] [--minutes N | --steps N]
[--resume] [--time-limit SECONDS]`` writes a diffusers folder (model_index.json, unet/, vae/,
text_encoder/, tokenizer/, scheduler/, at most 20 MB) that :func:`videomage_core.model.load_model`
loads, plus ``MODEL_CARD.md``, ``loss_curve.png`` and ``controllability.json``. Checkpoints (safetensors
only) go to ``DIR.ckpt/`` (``--ckpt``); ``--resume`` continues a stopped run exactly where it
stopped (every step's randomness is a pure function of ``(seed, stage, step)``, so a resumed run
equals an uninterrupted one), ``--time-limit`` stops an invocation cleanly after that many seconds
(checkpoint written; chain calls with ``--resume``: a device command may run 10 minutes at most).
``--resume --extend N`` trains a finished run N more UNet steps (a warm restart of the schedule at
half the peak learning rate) and exports again: how the committed model got more steps.

Stages
------
0. Tokenizer: a CLIP byte-level BPE whose merges make every caption word of
   :data:`~videomage_core.shapesworld.generator.VOCABULARY` one token (checked), built with
   :func:`videomage_core.tiny_encoders.build_tiny_clip_tokenizer`; customization adds its own tokens
   later (``<sub1>``...) exactly as on ZeroScope.
1. VAE (AutoencoderKL) on still frames of a visual space broader than the captions: every hue
   (half the objects re-hued uniformly over 0..360, so also the hues between the named and the
   unnamed bands), all 7 shapes, all 4 textures, sizes up to 1.25x the generator's, all background
   patterns; L1 + L2 with object pixels weighted x5 (objects are ~10 % of a frame and are what
   every measure reads), KL 1e-6 (per pixel, as Stable Diffusion). Runs until the PSNR over
   object pixels reaches ``vae_psnr_target`` (checked every ``vae_eval_every`` steps on a fixed
   validation set) or ``vae_steps``. Then the latent scaling factor is set to 1 / std of the
   latents (as SD's 0.18215 was found), and the *ceiling* is measured: prompt following of
   ground-truth clips of the held-out cells after a VAE round trip (what a perfect UNet could
   reach through this VAE).
2. Text-to-video: UNet3DConditionModel (ZeroScope's four-level layout and module names) and
   CLIPTextModel trained jointly on captioned clips from
   :func:`~videomage_core.shapesworld.generator.sample_pretraining_clip` (60 % one object in a
   direction, 40 % approach / move_apart / chase; the held-out interactions orbit / jump_over /
   swap never appear) minus every clip whose caption is one of
   :data:`~videomage_core.shapesworld.controllability.HELD_OUT_CELLS`; VAE frozen, latents = posterior
   mean x scaling factor (what the engine's ``encode_video`` gives); epsilon loss with ZeroScope's
   DDIM schedule (scaled-linear 0.00085..0.012, 1000 steps); 10 % caption dropout (empty prompt,
   the engine's default negative prompt) for CFG; AdamW, warm-up then cosine LR, grad-norm clip
   1; EMA of the weights (the exported model is the EMA).
3. Export (EMA weights) + controllability (:mod:`.controllability`, held-out cells, CFG 3) +
   model card.

Preset ``cpu`` (the committed built-in model, ``videomage_core/models/shapesworld``)
----------------------------------------------------------------------------------
No GPU was lent to the sessions that built it, so the model that ships is the one a 2-core CPU
trains in about three hours (an hour's plan, then ``--extend 2400`` and ``--extend 1600``):
32x32 px, VAE factor 4 -> 8x8 latent, and the engine records attention at the full-resolution level (``down_blocks.0`` / ``up_blocks.3``, written to ``videomage.json`` as
``attention_levels``), where maps are 8x8 as the issue asks. The UNet is the first experiment's
(channels 32/64/64/64, 3.56 M parameters), batch 16, ~1.3 s per step on 2 idle cores (~2.0 s on
one thread; parts of the run were pinned to one core so the other stayed free), EMA 0.995. Objects are 3-5 px in
radius at this size, so textures are barely resolved (the VAE's object PSNR is ~18 dB) while hue,
shape and trajectories survive the round trip (ceiling: colour 1.0, shape 0.93, motion 1.0).
``--preset full`` below is the GPU plan (128 px, maps at the quarter level), never run.

Config chosen, and why (preset ``full``)
----------------------------------------
- Latent 32x32 (UNet levels 32 / 16 / 8 / 4): the quarter level that the engine records
  (``down_blocks.2`` / ``up_blocks.1``, :data:`videomage_core.bases.zeroscope.DEFAULT_LEVELS`) is 8x8, the
  smallest map the mask and collaborative losses can use (the first experiment's 8x8 latent gave
  2x2 maps). An object (radius 7-11 of 64 units) spans 2-3 cells of such a map.
- 128x128 px with a VAE of factor 4 (three levels, channels 32/64/64, 0.95 M parameters). The
  engine never assumes 8: ``VideoMageModel.vae_scale_factor`` is ``2 ** (levels - 1)`` of the VAE
  config, and every size check (multiples of 8) holds at 128. The latent grid, hence the UNet's
  cost, is the same for any factor; what the factor changes is pixel work, measured on this CPU
  (1 thread, busy machine): generator 7.7 ms / 33 ms per 8-frame clip at 128 / 256 px; VAE encode
  48 / 144 ms and decode 113 / 372 ms per frame; VAE training 0.73 / 3.7 s per image at factor
  4 / 8; measures 92 / 321 ms per clip. Factor 4 still compresses 12x (ZeroScope 48x), so the VAE
  is a real component whose appearance coverage customization depends on, and a texture period
  (6 units) is 3 latent cells at either factor. Factor 2 at 64 px would be cheaper still but
  hardly an autoencoder (3x).
- 8 frames: motion needs a trajectory (speeds 3-5 units/frame give 21-35 of 64 units of travel,
  clearly above the detectors' 10 % still threshold); every frame multiplies the cost.
- UNet channels (32, 64, 64, 64), one layer per block, 8 heads, cross-attention 64: 3.56 M
  parameters (14.2 MB fp32), the experiment's model that learned colour and shape; text encoder
  hidden 64, 2 layers, 4 heads; total 18.8 MB fp32 (limit 20 MB).
- Batch 64 clips, lr 1e-3 (warm-up 300), cosine to 5 %, EMA 0.999, 20 000 steps: 1.3 M clips,
  500x the experiment's 2 558 steps x 16 clips (which got colour ~0.6, shape ~0.7, direction
  ~0.25 at 8x8 latents); motion is learned last, so the budget goes to steps.

Cost (measured on the 2-core CPU, 1 thread, machine shared with other test runs)
-------------------------------------------------------------------------------
- FLOPs (torch flop counter): UNet forward + backward 34.8 GFLOP per clip; VAE encode 14 GFLOP
  per 8-frame clip; VAE training 20 GFLOP per image.
- ``--preset full`` short run: VAE 28-31 s per step of 32 images (~0.9 s per image); UNet stage
  27-34 s per step of 8 clips (3.4-4.2 s per clip: UNet forward + backward ~2.4, VAE encode
  ~0.4, generation 0.06). At batch 64 that is ~4 min per step: the planned 20 000 steps would
  take ~2 months of this CPU. Pretraining needs a GPU; nothing about it is worth running here
  beyond smoke runs.
- Sampling the full model on this CPU: 1.6 s per DDIM step (CFG batch of 2), 0.9 s to decode 8
  frames: ~50 s per 30-step video. (A 16x16 latent would be ~4-5x cheaper everywhere, but its
  quarter-level maps are 4x4.)
- GPU (estimated, no device in the session that wrote this): 3.1 TFLOP per 64-clip UNet step;
  at the 20-40 TFLOP/s a model this narrow realistically gets in bf16 on an H100, 80-150 ms per
  step, i.e. 25-50 min for 20 000 steps, plus 1-2 min for the VAE (<= 3 000 steps, 1.9 PFLOP)
  and ~2 min for the controllability evaluation (480 videos). Data: 64 clips x 7.7 ms = 0.5 s of
  CPU per step, so the default 12 ``--workers`` keep up with ~45 ms steps. The s/step is printed
  (and planned with ``--minutes``) after 10 steps.
- A device session has 30 minutes and 10 minutes per command: run ``--minutes 18 --time-limit
  540`` then ``--resume --time-limit 540`` back to back (the machine keeps its files while warm),
  with ``--out``/``--ckpt`` under an ignored folder (``outputs/``). Checkpoint files are one model
  each (<= 15 MB: params, EMA, Adam m, Adam v), so a stopped run can be brought back and carried
  on later; without the two Adam files (30 MB less to carry) ``--resume`` restarts the moments.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import atomic_write_json
from .controllability import (
    HELD_OUT_CELLS,
    ground_truth_clips,
    is_held_out,
    score_videos,
    summarize,
)
from .generator import (
    HELD_OUT_INTERACTIONS,
    NAMED_COLOURS,
    NAMED_SHAPES,
    PRETRAIN_INTERACTIONS,
    SHAPES,
    TEXTURES,
    VOCABULARY,
    render_clip,
    sample_pretraining_clip,
)

MAX_MODEL_MB = 20.0
STAGES = ("vae", "t2v")
_STAGE_CODE = {"vae": 1, "t2v": 2, "vae_val": 11, "ceiling": 12}


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run (stored with its checkpoints; a resume must match)."""

    height: int = 128
    width: int = 128
    frames: int = 8
    # VAE
    vae_channels: tuple = (32, 64, 64)
    vae_layers: int = 1
    vae_groups: int = 32
    latent_channels: int = 4
    vae_batch: int = 32
    vae_lr: float = 5e-4
    vae_steps: int = 3000
    vae_warmup: int = 100
    vae_psnr_target: float = 30.0  # dB over object pixels (dilated masks)
    vae_eval_every: int = 250
    vae_val_images: int = 64
    vae_object_weight: float = 4.0
    vae_kl: float = 1e-6
    vae_rehue: float = 0.5  # fraction of objects given a uniform hue
    vae_max_scale: float = 1.25  # objects up to this x the generator's size
    ceiling_per_cell: int = 3  # ground-truth clips per held-out cell for the VAE ceiling
    # UNet + text encoder
    unet_channels: tuple = (32, 64, 64, 64)
    unet_layers: int = 1
    unet_heads: int = 8
    unet_groups: int = 8
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_ff: int = 256
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 300
    min_lr_frac: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    steps: int = 20000
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    p_interaction: float = 0.4
    # evaluation
    eval_samples: int = 40
    eval_steps: int = 30
    eval_cfg: float = 3.0
    eval_batch: int = 40
    min_map: int = 8  # smallest allowed attention map at the recorded levels
    record_level: int = 2  # UNet level whose attention the engine records (0 = full latent size)
    seed: int = 0

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.height // self.vae_factor, self.width // self.vae_factor

    @property
    def attention_levels(self) -> tuple[str, str]:
        """The recorded blocks: ``down_blocks.k`` and its mirror ``up_blocks.(3 - k)``."""
        return (f"down_blocks.{self.record_level}", f"up_blocks.{3 - self.record_level}")

    @property
    def map_size(self) -> tuple[int, int]:
        """Attention-map size at the recorded level (ceil division by 2 ** level)."""
        f = 2**self.record_level
        return tuple(-(-s // f) for s in self.latent_size)

    def check(self) -> None:
        if self.height % 8 or self.width % 8:
            raise ValueError("height and width must be multiples of 8 (the engine's size checks)")
        if self.height % self.vae_factor or self.width % self.vae_factor:
            raise ValueError("height and width must be multiples of the VAE factor")
        if len(self.unet_channels) != 4:
            raise ValueError("the UNet keeps ZeroScope's four levels")
        if self.record_level not in (0, 1, 2):
            raise ValueError("record_level must be 0, 1 or 2 (the levels with attention)")
        if min(self.map_size) < self.min_map:
            raise ValueError(
                f"attention maps at the recorded levels would be {self.map_size}, "
                f"below {self.min_map}x{self.min_map}"
            )
        if self.warmup < 1 or self.vae_warmup < 1:
            raise ValueError("warm-up must be at least one step")

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> PretrainConfig:
        kw = {}
        for f in fields(cls):
            if f.name in d:
                kw[f.name] = tuple(d[f.name]) if isinstance(d[f.name], list) else d[f.name]
        return cls(**kw)


PRESETS = {
    "full": PretrainConfig(),
    # What a 2-core CPU can train in about an hour (the committed built-in model): 32 px frames, VAE
    # factor 4 -> 8x8 latent, attention recorded at the full-resolution level (down_blocks.0 /
    # up_blocks.3), so maps stay 8x8; the first ShapesWorld experiment's UNet (~0.9 s per 16-clip step).
    "cpu": PretrainConfig(
        height=32,
        width=32,
        vae_batch=32,
        vae_steps=1500,
        vae_warmup=50,
        vae_psnr_target=30.0,
        vae_eval_every=150,
        ceiling_per_cell=4,
        batch=16,
        warmup=150,
        ema_decay=0.995,
        record_level=0,
    ),
    # Tests: seconds on a CPU. 32 px, 4 frames, channels of 8-16; attention maps 2x2 (allowed here).
    "smoke": PretrainConfig(
        height=32,
        width=32,
        frames=4,
        vae_channels=(8, 16, 16),
        vae_groups=8,
        vae_batch=4,
        vae_steps=2,
        vae_warmup=1,
        vae_eval_every=2,
        vae_val_images=4,
        ceiling_per_cell=0,
        unet_channels=(16, 16, 16, 16),
        unet_heads=2,
        unet_groups=8,
        text_dim=16,
        text_layers=1,
        text_heads=2,
        text_ff=32,
        batch=2,
        steps=2,
        warmup=1,
        eval_samples=1,
        eval_steps=2,
        eval_batch=4,
        min_map=1,
    ),
}


# --------------------------------------------------------------------------- tokenizer and modules


def build_tokenizer(folder: str | os.PathLike):
    """CLIP tokenizer in ``folder`` with every caption word a single token (checked)."""
    from ..tiny_encoders import build_tiny_clip_tokenizer

    words = list(VOCABULARY)
    tok = build_tiny_clip_tokenizer(folder, corpus=" ".join(words), num_merges=sum(len(w) for w in words))
    split = [w for w in words if len(tok(w, add_special_tokens=False).input_ids) != 1]
    if split:
        raise RuntimeError(f"tokenizer splits caption words {split}")
    return tok


def build_modules(cfg: PretrainConfig, tokenizer, seed: int | None = None):
    """Fresh (unet, vae, text_encoder, scheduler) for ``cfg``."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed if seed is None else seed)
        unet = UNet3DConditionModel(
            sample_size=cfg.latent_size[0],
            in_channels=cfg.latent_channels,
            out_channels=cfg.latent_channels,
            block_out_channels=tuple(cfg.unet_channels),
            layers_per_block=cfg.unet_layers,
            cross_attention_dim=cfg.text_dim,
            attention_head_dim=cfg.unet_heads,
            norm_num_groups=cfg.unet_groups,
        )
        n = len(cfg.vae_channels)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=tuple(cfg.vae_channels),
            layers_per_block=cfg.vae_layers,
            latent_channels=cfg.latent_channels,
            norm_num_groups=cfg.vae_groups,
            sample_size=cfg.height,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=cfg.text_dim,
                intermediate_size=cfg.text_ff,
                num_hidden_layers=cfg.text_layers,
                num_attention_heads=cfg.text_heads,
                max_position_embeddings=tokenizer.model_max_length,
                projection_dim=cfg.text_dim,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
    return unet, vae, text_encoder, scheduler


def _n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


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


# --------------------------------------------------------------------------- the run


@dataclass
class PretrainResult:
    out: Path
    status: str  # "done" or "paused"
    state: dict = field(default_factory=dict)
    model_mb: float = 0.0


class _Run:
    def __init__(self, out, cfg: PretrainConfig, device, ckpt_dir, workers, log):
        self.out = Path(out)
        self.cfg = cfg
        self.device = torch.device(device)
        self.ckpt = Checkpoints(ckpt_dir)
        self.workers = workers
        self.log = log
        self.cuda = self.device.type == "cuda"
        self.amp = torch.bfloat16 if self.cuda else None
        self.tok_dir = self.ckpt.dir / "tokenizer"

    def autocast(self):
        if self.amp is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp)

    # ---------------------------------------------------------------- VAE helpers

    def _to_input(self, images_u8: torch.Tensor) -> torch.Tensor:
        """uint8 [..., H, W, 3] -> float [N, 3, H, W] in -1..1 on the device."""
        x = images_u8.to(self.device, non_blocking=True).reshape(-1, *images_u8.shape[-3:])
        return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0

    @torch.no_grad()
    def vae_validate(self, vae, images, masks) -> dict:
        vae.eval()
        mse_all, mse_obj = [], []
        for i in range(0, len(images), 16):
            x = self._to_input(images[i : i + 16])
            with self.autocast():
                rec = vae.decode(vae.encode(x).latent_dist.mean).sample
            err = ((rec.float().clamp(-1, 1) - x) / 2) ** 2  # in 0..1 units
            m = masks[i : i + 16].to(self.device)[:, None].expand_as(err)
            mse_all.append(err.mean().item())
            mse_obj.append((err[m].mean() if m.any() else err.mean()).item())
        vae.train()
        return {
            "psnr": 10 * math.log10(1 / max(np.mean(mse_all), 1e-12)),
            "psnr_objects": 10 * math.log10(1 / max(np.mean(mse_obj), 1e-12)),
        }

    @torch.no_grad()
    def encode(self, vae, frames_u8: torch.Tensor, scaling: float) -> torch.Tensor:
        """uint8 [B, F, H, W, 3] -> latents (B, C, F, h, w) (posterior mean x scaling)."""
        b, f = frames_u8.shape[:2]
        x = self._to_input(frames_u8)
        with self.autocast():
            lat = vae.encode(x).latent_dist.mean
        lat = lat.float() * scaling
        return lat.reshape(b, f, *lat.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()

    @torch.no_grad()
    def decode(self, vae, lat: torch.Tensor, scaling: float) -> np.ndarray:
        b, c, f = lat.shape[:3]
        z = lat.permute(0, 2, 1, 3, 4).reshape(b * f, c, *lat.shape[3:]) / scaling
        out = []
        for i in range(0, len(z), 32):
            with self.autocast():
                out.append(vae.decode(z[i : i + 32]).sample.float())
        x = ((torch.cat(out).clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
        return x.reshape(b, f, *x.shape[1:])

    @torch.no_grad()
    def vae_ceiling(self, vae, scaling: float) -> dict | None:
        """Prompt following of ground-truth held-out clips after a VAE round trip."""
        n = self.cfg.ceiling_per_cell
        if n <= 0:
            return None
        vae.eval()
        rng = np.random.default_rng(step_seed(self.cfg.seed, "ceiling", 0))
        scores = {}
        for cell in HELD_OUT_CELLS:
            clips = ground_truth_clips(cell, n, rng, self.cfg.frames, self.cfg.height, self.cfg.width)
            u8 = torch.from_numpy(np.stack([np.round(c.frames * 255).astype(np.uint8) for c in clips]))
            rec = self.decode(vae, self.encode(vae, u8, scaling), scaling)
            scores[cell.name] = score_videos(
                list(rec), cell.spec(self.cfg.frames, self.cfg.height, self.cfg.width), self.workers
            )
        return {k: v["mean"] for k, v in summarize(scores).overall.items()}

    # ---------------------------------------------------------------- generic loop

    def _plan_total(self, st: dict, default_total: int, minutes: float | None, rate: float, cap: bool) -> int:
        if minutes is None:
            return default_total
        planned = max(st["step"] + 1, int(minutes * 60.0 / max(rate, 1e-6)))
        return min(planned, default_total) if cap else planned

    def _loop(
        self,
        stage: str,
        state: dict,
        modules: dict,
        step_fn: Callable,
        peak_lr: float,
        warmup: int,
        min_frac: float,
        default_total: int,
        minutes: float | None,
        deadline: float | None,
        ema_decay: float | None,
        after_step: Callable | None = None,
        cap: bool = False,
        stop_at: int | None = None,
        ckpt_seconds: float = 300.0,
    ) -> bool:
        """Train ``stage`` until its planned total (True), or until the deadline or step ``stop_at``
        (False, checkpointed: an interruption that ``--resume`` continues exactly)."""
        cfg = self.cfg
        st = state[stage]
        params = _named_params(modules)
        plist = list(params.values())
        for p in plist:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(
            plist,
            lr=peak_lr,
            weight_decay=cfg.weight_decay if stage == "t2v" else 0.0,
            betas=(0.9, 0.999),
            eps=1e-8,
        )
        ema = {k: p.detach().clone().float() for k, p in params.items()} if ema_decay else None
        if st.get("checkpoint"):
            _restore_trainer(self.ckpt, state, stage, params, opt, ema, self.log)
            self.log(f"[{stage}] resumed at step {st['step']}/{st.get('total') or '?'}")
        for m in modules.values():
            m.train()

        def save(final=False):
            st["seconds"] = round(st.get("seconds", 0.0), 2)
            self.ckpt.save(state, stage, st["step"], _trainer_tensors(params, opt, ema, final))

        calib = min(10, max(1, warmup))  # steps timed before planning by minutes (inside the warm-up)
        total = st.get("total")
        if total is None and minutes is None:
            total = st["total"] = default_total
        last_save = time.monotonic()
        window = []
        t_stage = time.monotonic()
        steps_here = 0
        it = None
        stop = total if total else None
        while True:
            if total is not None and st["step"] >= total:
                break
            if deadline is not None and time.monotonic() >= deadline:
                save()
                self.log(f"[{stage}] paused at step {st['step']}/{total}: time limit (resume with --resume)")
                return False
            if it is None:
                it = _batches(
                    stage, cfg, st["step"], stop if stop else st["step"] + calib, self.workers, self.cuda
                )
            try:
                batch = next(it)
            except StopIteration:
                it = None
                continue
            step = st["step"]
            t0 = time.perf_counter()
            for g in opt.param_groups:
                g["lr"] = scheduled_lr(st, step, total or default_total, peak_lr, warmup, min_frac)
            torch.manual_seed(step_seed(cfg.seed, stage, step))  # dropout inside the modules
            loss, parts = step_fn(step, batch)
            if not math.isfinite(loss.item()):
                save()
                raise FloatingPointError(f"[{stage}] loss became {loss.item()} at step {step}")
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(plist, cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if ema is not None:
                d = min(ema_decay, (1 + step) / (10 + step))
                with torch.no_grad():
                    torch._foreach_lerp_(list(ema.values()), [p.detach().float() for p in plist], 1 - d)
            if self.cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            st["step"] = step + 1
            st["seconds"] = st.get("seconds", 0.0) + dt
            st.setdefault("losses", []).append(round(float(loss.item()), 6))
            for k, v in parts.items():
                st.setdefault("parts", {}).setdefault(k, []).append(round(float(v), 6))
            steps_here += 1
            window.append(dt)
            if total is None and st["step"] >= calib:
                rate = float(np.median(window[1:] or window))
                total = self._plan_total(st, default_total, minutes, rate, cap)
                st["total"] = total
                stop = total
                it = None  # re-open the stream up to the total
                self.log(
                    f"[{stage}] planned {total} steps ({rate:.3f} s/step"
                    + (f", {minutes:.1f} min" if minutes is not None else "")
                    + ")"
                )
            if after_step is not None and after_step(st["step"], st):
                total = st["total"] = st["step"]  # e.g. the VAE reached its target
            if st["step"] % max(1, min(100, (total or 100) // 20)) == 0 or st["step"] == total:
                recent = st["losses"][-50:]
                sps = float(np.mean(window[-20:]))
                eta = (total - st["step"]) * sps if total else float("nan")
                self.log(
                    f"[{stage}] step {st['step']}/{total} loss {np.mean(recent):.4f} "
                    f"lr {opt.param_groups[0]['lr']:.2e} {sps:.3f} s/step ETA {eta / 60:.1f} min"
                )
            if stop_at is not None and stop_at <= st["step"] < total:
                save()
                self.log(f"[{stage}] paused at step {st['step']}/{total} (stop_at)")
                return False
            if time.monotonic() - last_save > ckpt_seconds:
                save()
                last_save = time.monotonic()
        st["done"] = True
        st["wall_seconds_stage"] = round(time.monotonic() - t_stage, 1)
        save(final=True)
        for p in plist:
            p.requires_grad_(False)
        if ema is not None:
            with torch.no_grad():
                for k, p in params.items():
                    p.copy_(ema[k])
        return True

    # ---------------------------------------------------------------- stages

    def train_vae(self, state, vae, minutes, deadline) -> bool:
        cfg = self.cfg
        st = state.setdefault("vae", {"step": 0})
        vae.to(self.device)
        if st.get("done"):
            vae.load_state_dict({k[4:]: v for k, v in self.ckpt.load(state, "vae", "params").items()})
            return True
        rng = np.random.default_rng(step_seed(cfg.seed, "vae_val", 0))
        vi, vm = vae_images(rng, cfg.vae_val_images, cfg)
        val_images, val_masks = torch.from_numpy(vi), torch.from_numpy(vm)

        def step_fn(step, batch):
            g = torch.Generator(device=self.device).manual_seed(step_seed(cfg.seed, "vae", step))
            x = self._to_input(batch["images"])
            w = 1.0 + cfg.vae_object_weight * batch["masks"].to(self.device)[:, None].float()
            with self.autocast():
                post = vae.encode(x).latent_dist
                rec = vae.decode(post.sample(generator=g)).sample.float()
            d = rec - x
            recon = (w * (d.abs() + d * d)).mean() / w.mean()
            kl = post.kl().float().mean() / (x.shape[1] * x.shape[2] * x.shape[3])
            return recon + cfg.vae_kl * kl, {"recon": recon.item()}

        def after(step, s):
            if step % cfg.vae_eval_every and step != s.get("total"):
                return False
            m = self.vae_validate(vae, val_images, val_masks)
            s.setdefault("psnr", []).append({"step": step, **{k: round(v, 2) for k, v in m.items()}})
            self.log(f"[vae] step {step}: PSNR {m['psnr']:.2f} dB, objects {m['psnr_objects']:.2f} dB")
            return m["psnr_objects"] >= cfg.vae_psnr_target

        vae_minutes = None if minutes is None else 0.15 * minutes
        done = self._loop(
            "vae",
            state,
            {"vae": vae},
            step_fn,
            cfg.vae_lr,
            cfg.vae_warmup,
            0.1,
            cfg.vae_steps,
            vae_minutes,
            deadline,
            None,
            after,
            cap=True,
        )
        if not done:
            return False
        vae.eval()
        # latent scaling: 1 / std of the latents of the validation frames
        lats = []
        with torch.no_grad():
            for i in range(0, len(val_images), 16):
                with self.autocast():
                    lats.append(vae.encode(self._to_input(val_images[i : i + 16])).latent_dist.mean.float())
        st["scaling_factor"] = float(1.0 / torch.cat(lats).std().clamp_min(1e-6))
        st["final"] = self.vae_validate(vae, val_images, val_masks)
        vae.eval()
        st["ceiling"] = self.vae_ceiling(vae, st["scaling_factor"])
        self.log(
            f"[vae] done: scaling factor {st['scaling_factor']:.4f}, PSNR {st['final']['psnr']:.2f} dB "
            f"(objects {st['final']['psnr_objects']:.2f}), round-trip ceiling {st['ceiling']}"
        )
        self.ckpt.write_state(state)
        return True

    def train_t2v(
        self,
        state,
        unet,
        vae,
        text_encoder,
        scheduler,
        tokenizer,
        minutes,
        deadline,
        stop_at: int | None = None,
    ) -> bool:
        cfg = self.cfg
        st = state.setdefault("t2v", {"step": 0})
        scaling = state["vae"]["scaling_factor"]
        vae.to(self.device).eval().requires_grad_(False)
        unet.to(self.device)
        text_encoder.to(self.device)
        if st.get("done"):
            ema = self.ckpt.load(state, "t2v", "ema")
            unet.load_state_dict({k[5:]: v for k, v in ema.items() if k.startswith("unet.")})
            text_encoder.load_state_dict({k[13:]: v for k, v in ema.items() if k.startswith("text_encoder.")})
            return True
        ids_cache: dict[str, torch.Tensor] = {}
        alphas = scheduler.alphas_cumprod.to(self.device)
        n_train = scheduler.config.num_train_timesteps

        def ids_for(caps):
            for c in set(caps) - ids_cache.keys():
                ids_cache[c] = tokenizer(
                    c,
                    padding="max_length",
                    max_length=tokenizer.model_max_length,
                    truncation=True,
                    return_tensors="pt",
                ).input_ids[0]
            return torch.stack([ids_cache[c] for c in caps]).to(self.device)

        def step_fn(step, batch):
            gseed = step_seed(cfg.seed, "t2v", step)
            gc = torch.Generator().manual_seed(gseed)
            g = torch.Generator(device=self.device).manual_seed(gseed)
            lat = self.encode(vae, batch["frames"], scaling)
            b = lat.shape[0]
            drop = (torch.rand(b, generator=gc) < cfg.caption_dropout).tolist()
            caps = ["" if d else c for c, d in zip(batch["captions"], drop)]
            noise = torch.randn(lat.shape, generator=g, device=self.device)
            t = torch.randint(0, n_train, (b,), generator=g, device=self.device)
            a = alphas[t].view(b, 1, 1, 1, 1)
            noisy = a.sqrt() * lat + (1 - a).sqrt() * noise
            with self.autocast():
                text = text_encoder(ids_for(caps))[0]
                pred = unet(noisy, t, encoder_hidden_states=text).sample
            return F.mse_loss(pred.float(), noise), {}

        t2v_minutes = None
        if minutes is not None:
            t2v_minutes = max(minutes - state["vae"].get("seconds", 0.0) / 60.0, 0.1)
        return self._loop(
            "t2v",
            state,
            {"unet": unet, "text_encoder": text_encoder},
            step_fn,
            cfg.lr,
            cfg.warmup,
            cfg.min_lr_frac,
            cfg.steps,
            t2v_minutes,
            deadline,
            cfg.ema_decay,
            stop_at=stop_at,
        )


# --------------------------------------------------------------------------- export and card


def folder_mb(folder: Path, model_only: bool = True) -> float:
    from ..bases.zeroscope import COMPONENTS

    files = (
        [p for c in COMPONENTS for p in (folder / c).rglob("*") if p.is_file()]
        if model_only
        else [p for p in folder.rglob("*") if p.is_file()]
    )
    return sum(p.stat().st_size for p in files) / 1e6


def export_model(out: Path, unet, vae, text_encoder, scheduler, tok_dir: Path, scaling: float) -> float:
    """Write the diffusers folder (weights in fp32); returns its size in MB."""
    from ..tiny import save_diffusers_folder

    vae.register_to_config(scaling_factor=float(scaling))
    mods = [m.to("cpu").eval() for m in (unet, vae, text_encoder)]
    save_diffusers_folder(out, *mods, scheduler, tok_dir)
    return folder_mb(out)


def recommended_settings(cfg: PretrainConfig) -> dict:
    """What the model was trained for (``videomage.json`` in the folder; the pack may read it for its
    defaults instead of ZeroScope's 24 x 320 x 576, CFG 9)."""
    return {
        "model": "shapesworld",
        "frames": cfg.frames,
        "height": cfg.height,
        "width": cfg.width,
        "steps": cfg.eval_steps,
        "cfg": cfg.eval_cfg,
        "negative_prompt": "",
        "attention_levels": list(cfg.attention_levels),
        "attention_map_size": list(cfg.map_size),
        "superclass": "shape",
        "vocabulary": list(VOCABULARY),
        # prompts the engine's trainers build, in words this model knows (ZeroScope's defaults such as
        # "a video of a {s}" or "A static video of {subjects}." are outside its vocabulary)
        "prior_captions": ["a {s} standing still", "a {s} moving left", "a {s} moving right", "a {s} moving up"],
        "appearance_template": "{subjects} standing still",
        "subject_video_prompt": "a {token} standing still",
        "background_prompt": "",
        # SCS step size: the paper's 1e4 saturates this small model's latents at 8x8 maps (measured:
        # motion fidelity 0.0 at 1e4, 1e3 and 1e2; 0.98 and 0.45 at 10 on the demo's cell)
        "scs_alpha": 10.0,
    }


def _loss_table(losses: list[float], points: int = 10) -> list[tuple[int, float]]:
    if not losses:
        return []
    n = len(losses)
    w = max(1, n // 50)
    out = []
    for i in sorted({max(1, round(n * k / points)) for k in range(1, points + 1)}):
        out.append((i, float(np.mean(losses[max(0, i - w) : i]))))
    return out


def write_model_card(
    out: Path, cfg: PretrainConfig, state: dict, modules: dict, device: str, report=None, command: str = ""
) -> Path:
    from ..plots import render_pil

    vae_st, t2v_st = state.get("vae", {}), state.get("t2v", {})
    losses = t2v_st.get("losses", [])
    if losses:
        render_pil(
            losses,
            "ShapesWorld text-to-video loss (epsilon MSE)",
            width=640,
            height=360,
            notes=[
                f"{len(losses)} steps, batch {cfg.batch}, {t2v_st.get('seconds', 0) / 60:.1f} min on {device}"
            ],
        ).save(out / "loss_curve.png")
    done = vae_st.get("done") and t2v_st.get("done")
    status = (
        "complete"
        if done
        else (
            f"IN PROGRESS: VAE step {vae_st.get('step', 0)}/{vae_st.get('total')}, "
            f"UNet step {t2v_st.get('step', 0)}/{t2v_st.get('total')}"
        )
    )
    pc = {k: _n_params(m) for k, m in modules.items()}
    fin = vae_st.get("final", {})
    ceil = vae_st.get("ceiling")
    held = "\n".join(f"- {c.prompt}" for c in HELD_OUT_CELLS)
    L = [
        "# ShapesWorld base model (VideoMage built-in)",
        "",
        f"Status: **{status}**. Written by `python -m videomage_core.shapesworld.pretrain`"
        + (f" (`{command}`)" if command else "")
        + ".",
        "",
        "A text-to-video model of ZeroScope's architecture (UNet3DConditionModel with the four-level "
        "layout and module names, AutoencoderKL, CLIPTextModel + CLIP BPE tokenizer, DDIM), pretrained "
        "from scratch on ShapesWorld (`videomage_core.shapesworld.generator`), so that every workflow runs "
        "on a CPU in seconds and customization can be measured exactly. Not a general video model.",
        "",
        "## Data",
        f"- {cfg.frames} frames at {cfg.width}x{cfg.height} px, generated on the fly (never repeated): "
        f"{100 * (1 - cfg.p_interaction):.0f} % one object moving left / right / up / down / standing still, "
        f"{100 * cfg.p_interaction:.0f} % two-object interactions {', '.join(PRETRAIN_INTERACTIONS)}.",
        f"- Never shown: the interactions {', '.join(HELD_OUT_INTERACTIONS)} (customization motions), and "
        f"these {len(HELD_OUT_CELLS)} held-out prompts (clips with these captions are rejected):",
        held,
        f"- Captions name colours {', '.join(NAMED_COLOURS)} and shapes {', '.join(NAMED_SHAPES)} only; "
        f"the visual space is broader: all hues, shapes {', '.join(SHAPES)} ('shape' in captions), textures "
        f"{', '.join(TEXTURES)} (never named), dark patterned backgrounds.",
        f"- VAE: still frames of the same world with {100 * cfg.vae_rehue:.0f} % of objects re-hued "
        f"uniformly over 0..360 deg and sizes up to {cfg.vae_max_scale}x.",
        f"- Vocabulary ({len(VOCABULARY)} words, each one token): {' '.join(VOCABULARY)}.",
        "",
        "## Model",
        f"- UNet3DConditionModel: channels {tuple(cfg.unet_channels)}, {cfg.unet_layers} layer(s) per block, "
        f"{cfg.unet_heads} heads, cross-attention {cfg.text_dim}; {pc.get('unet', 0) / 1e6:.2f} M "
        f"parameters. Latent {cfg.latent_channels}x{cfg.latent_size[0]}x{cfg.latent_size[1]}; attention maps "
        f"at the recorded level ({' / '.join(cfg.attention_levels)}) are {cfg.map_size[0]}x{cfg.map_size[1]}.",
        f"- AutoencoderKL: channels {tuple(cfg.vae_channels)} (factor {cfg.vae_factor}), "
        f"{pc.get('vae', 0) / 1e6:.2f} M parameters, scaling factor "
        f"{vae_st.get('scaling_factor', float('nan')):.4f}.",
        f"- CLIPTextModel: hidden {cfg.text_dim}, {cfg.text_layers} layers, {cfg.text_heads} heads; "
        f"{pc.get('text_encoder', 0) / 1e6:.2f} M parameters.",
        "- DDIMScheduler: scaled-linear betas 0.00085..0.012, 1000 steps, epsilon prediction (ZeroScope's).",
        f"- Folder size: {folder_mb(out):.1f} MB (limit {MAX_MODEL_MB:.0f} MB). Trained for {cfg.frames} "
        f"frames at {cfg.width}x{cfg.height}; `videomage.json` holds these sampling defaults "
        f"(CFG {cfg.eval_cfg}).",
        "",
        "## Training",
        f"- Device: {device}. Seed {cfg.seed}; every step's randomness is a function of (seed, stage, step).",
        f"- VAE: {vae_st.get('step', 0)} steps of {cfg.vae_batch} frames, lr {cfg.vae_lr} cosine, "
        f"{vae_st.get('seconds', 0) / 60:.1f} min; PSNR {fin.get('psnr', float('nan')):.2f} dB "
        f"(object pixels {fin.get('psnr_objects', float('nan')):.2f} dB, target {cfg.vae_psnr_target}).",
        "- VAE round-trip ceiling (prompt following of ground-truth held-out clips after encode + decode): "
        + (", ".join(f"{k} {v:.2f}" for k, v in ceil.items() if v is not None) if ceil else "not measured")
        + ".",
        f"- UNet + text encoder: {t2v_st.get('step', 0)} of {t2v_st.get('total')} steps of {cfg.batch} "
        f"clips, AdamW lr {cfg.lr} (warm-up {cfg.warmup}, cosine to {cfg.min_lr_frac}x), weight decay "
        f"{cfg.weight_decay}, "
        f"grad clip {cfg.grad_clip}, caption dropout {cfg.caption_dropout}, EMA {cfg.ema_decay} (exported); "
        f"{t2v_st.get('seconds', 0) / 60:.1f} min"
        + (f" ({t2v_st['seconds'] / max(t2v_st['step'], 1):.3f} s/step)" if t2v_st.get("step") else "")
        + "".join(
            f"; warm restart at step {r['at']} for {r['steps']} steps (peak lr {r['peak']:g})"
            for r in t2v_st.get("restarts", [])
        )
        + ".",
        "",
        "## Loss curve",
        "![loss](loss_curve.png)" if losses else "(no UNet steps yet)",
        "",
    ]
    if losses:
        L += ["| step | loss (moving average) |", "|---|---|"]
        L += [f"| {i} | {v:.4f} |" for i, v in _loss_table(losses)]
        L.append("")
    L += ["## Controllability (held-out prompts)", ""]
    if report is not None:
        s = report.settings
        L += [
            f"{s.get('samples_per_cell')} samples per prompt, {s.get('steps')} DDIM steps, "
            f"CFG {s.get('cfg')}, "
            f"seeds {s.get('seeds')}; scored with `shapesworld.measures.prompt_following` (exact on ground "
            f"truth). Mean ± 95 % half-width.",
            "",
            report.markdown(),
            "",
            "Targets met: "
            + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in report.meets_targets.items())
            + ".",
            "",
        ]
    else:
        L += [
            "Not measured yet (run `python -m videomage_core.shapesworld.controllability` on this folder).",
            "",
        ]
    L += ["## Config", "```json", json.dumps(cfg.to_dict(), indent=1), "```", ""]
    path = out / "MODEL_CARD.md"
    path.write_text("\n".join(L))
    return path


# --------------------------------------------------------------------------- entry point


def pretrain(
    out: str | os.PathLike,
    cfg: PretrainConfig | None = None,
    device: str = "cpu",
    steps: int | None = None,
    minutes: float | None = None,
    time_limit: float | None = None,
    resume: bool = False,
    ckpt_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    eval_samples: int | None = None,
    log: Callable[[str], None] | None = None,
    command: str = "",
    stop_at: int | None = None,
    extend: int | None = None,
) -> PretrainResult:
    """Run (or continue) every stage; write the model folder and its card. See the module docstring.

    ``steps`` overrides ``cfg.steps`` (UNet steps); ``minutes`` plans both stages' steps from the
    measured speed instead (15 % of the time for the VAE at most); ``time_limit`` (seconds) pauses
    this call with a checkpoint, as does ``stop_at`` (a UNet step; for tests and scripted chunks).
    ``eval_samples`` overrides ``cfg.eval_samples`` (0 skips it). ``extend`` continues a finished
    run (with ``resume``) for that many more UNet steps: a warm restart of the schedule (the Adam
    moments were not kept, so a fresh warm-up, then cosine from half the peak learning rate).
    """
    t_start = time.monotonic()
    deadline = t_start + time_limit if time_limit else None
    cfg = cfg or PRESETS["full"]
    if steps is not None:
        cfg = replace(cfg, steps=int(steps))
    cfg.check()
    out = Path(out)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir else out.with_name(out.name + ".ckpt")
    sinks = []  # the log file, once the checkpoint folder exists

    def _log(msg):
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        (log or (lambda s: print(s, flush=True)))(line)
        for f in sinks:
            f.write(line + "\n")
            f.flush()

    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if workers is None:
        workers = min(12, max(0, (os.cpu_count() or 1) - 2)) if device == "cuda" else 0
    run = _Run(out, cfg, device, ckpt_dir, workers, _log)
    ck = run.ckpt
    if ck.exists():
        if not resume:
            raise FileExistsError(f"{ckpt_dir} holds a run already: pass --resume, or remove it")
        state = ck.read_state()
        saved = PretrainConfig.from_dict(state["config"])
        if saved.to_dict() != cfg.to_dict():
            diff = {k: (v, cfg.to_dict()[k]) for k, v in saved.to_dict().items() if cfg.to_dict()[k] != v}
            if set(diff) - {"steps", "eval_samples", "eval_steps", "eval_cfg", "eval_batch"}:
                raise ValueError(f"--resume with another config than the checkpoint's: {diff}")
            if "steps" in diff and state.get("t2v", {}).get("total") and not state["t2v"].get("done"):
                state["t2v"]["total"] = cfg.steps  # a new plan keeps the steps done so far
            state["config"] = cfg.to_dict()
    else:
        state = {"config": cfg.to_dict(), "created": time.strftime("%Y-%m-%d %H:%M:%S"), "device": device}
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        build_tokenizer(run.tok_dir)
        ck.write_state(state)
    if extend is not None:
        extend_finished_run(state, cfg, int(extend))
        ck.write_state(state)
        _log(f"[t2v] extended to {state['t2v']['total']} steps (warm restart at {state['t2v']['step']})")
    if not (run.tok_dir / "tokenizer.json").is_file():  # deterministic: rebuilt if not carried along
        build_tokenizer(run.tok_dir)
    with open(ckpt_dir / "train.log", "a") as logf:
        sinks.append(logf)
        return _pretrain_stages(
            run, state, cfg, out, device, minutes, deadline, stop_at, eval_samples, workers, command, _log
        )


def extend_finished_run(state: dict, cfg: PretrainConfig, steps: int) -> None:
    """Plan ``steps`` more UNet steps after a finished run, as a warm restart (see :func:`pretrain`)."""
    st = state.get("t2v") or {}
    if steps < 1:
        raise ValueError(f"extend: expected a positive number of UNet steps, got {steps}")
    if not st.get("done"):
        raise ValueError("extend: the run in the checkpoint folder has not finished its UNet stage; use --resume alone")
    at = int(st["step"])
    st.setdefault("restarts", []).append(
        {"at": at, "steps": steps, "peak": cfg.lr * 0.5, "warmup": min(cfg.warmup, max(1, steps // 10))}
    )
    st["total"] = at + steps
    st["done"] = False
    state.pop("eval", None)


def _pretrain_stages(
    run, state, cfg, out, device, minutes, deadline, stop_at, eval_samples, workers, command, _log
) -> PretrainResult:
    ck = run.ckpt
    if minutes is not None and "minutes" not in state:
        state["minutes"] = float(minutes)
    minutes = state.get("minutes")
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(run.tok_dir, local_files_only=True)
    unet, vae, text_encoder, scheduler = build_modules(cfg, tokenizer)
    _log(
        f"config: {cfg.vae_factor}x VAE, latent {cfg.latent_size}, maps {cfg.map_size}, params unet "
        f"{_n_params(unet) / 1e6:.2f} M, vae {_n_params(vae) / 1e6:.2f} M, "
        f"text {_n_params(text_encoder) / 1e6:.2f} M; "
        f"device {device}, workers {workers}"
    )
    if not run.train_vae(state, vae, minutes, deadline):
        return PretrainResult(out, "paused", state)
    finished = run.train_t2v(state, unet, vae, text_encoder, scheduler, tokenizer, minutes, deadline, stop_at)
    if not finished:  # export the current EMA so the partial model can be looked at
        ema = ck.load(state, "t2v", "ema")
        unet.load_state_dict({k[5:]: v for k, v in ema.items() if k.startswith("unet.")})
        text_encoder.load_state_dict({k[13:]: v for k, v in ema.items() if k.startswith("text_encoder.")})
    mb = export_model(out, unet, vae, text_encoder, scheduler, run.tok_dir, state["vae"]["scaling_factor"])
    (out / "videomage.json").write_text(json.dumps(recommended_settings(cfg), indent=1))
    if mb > MAX_MODEL_MB:
        _log(f"WARNING: the model folder is {mb:.1f} MB, over the {MAX_MODEL_MB:.0f} MB limit")
    modules = {"unet": unet, "vae": vae, "text_encoder": text_encoder}
    report = None
    n_eval = cfg.eval_samples if eval_samples is None else int(eval_samples)
    if finished and n_eval > 0:
        report = _evaluate(out, cfg, device, n_eval, workers, _log)
        state["eval"] = report.to_dict()
        ck.write_state(state)
        (out / "controllability.json").write_text(json.dumps(report.to_dict(), indent=1))
    elif finished and state.get("eval"):
        _log("controllability: kept the earlier measurement")
    write_model_card(
        out,
        cfg,
        state,
        modules,
        device if device != "cuda" else _gpu_name(),
        report or _report_from_state(state),
        command,
    )
    _log(f"wrote {out} ({mb:.1f} MB), status {'done' if finished else 'paused'}")
    return PretrainResult(out, "done" if finished else "paused", state, mb)


def _gpu_name() -> str:
    try:
        return f"cuda ({torch.cuda.get_device_name(0)})"
    except Exception:  # noqa: BLE001
        return "cuda"


def _report_from_state(state: dict):
    from .controllability import ControllabilityReport

    ev = state.get("eval")
    if not ev:
        return None
    rep = ControllabilityReport(settings=ev.get("settings", {}), seconds=ev.get("seconds", 0.0))
    rep.cells = {k: {m: v[m] for m in ("colour", "shape", "motion")} for k, v in ev["cells"].items()}
    rep.overall = ev["overall"]
    return rep


def _evaluate(out: Path, cfg: PretrainConfig, device: str, samples: int, workers: int, log):
    from ..model import load_model
    from ..sampling import SampleSettings
    from .controllability import evaluate_controllability

    model = load_model(out, device=device)
    settings = SampleSettings(
        frames=cfg.frames, height=cfg.height, width=cfg.width, steps=cfg.eval_steps, cfg=cfg.eval_cfg
    )
    log(
        f"controllability: {len(HELD_OUT_CELLS)} held-out prompts x {samples} samples, "
        f"{cfg.eval_steps} steps, "
        f"CFG {cfg.eval_cfg}"
    )
    rep = evaluate_controllability(
        model,
        HELD_OUT_CELLS,
        samples,
        settings,
        batch=cfg.eval_batch,
        workers=workers,
        autocast_dtype=torch.bfloat16 if device == "cuda" else None,
        progress=log,
    )
    log("controllability:\n" + rep.markdown())
    return rep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m videomage_core.shapesworld.pretrain",
        description="Pretrain the built-in ShapesWorld model (resumable).",
    )
    p.add_argument("--out", required=True, help="model folder to write (diffusers layout)")
    p.add_argument("--ckpt", help="checkpoint folder (default: OUT.ckpt next to OUT)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", choices=sorted(PRESETS), default="full")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, help="UNet steps (default: the preset's)")
    g.add_argument("--minutes", type=float, help="plan both stages' steps to fit this many minutes")
    p.add_argument("--time-limit", type=float, help="seconds: checkpoint and stop this call after that long")
    p.add_argument("--resume", action="store_true", help="continue the run in the checkpoint folder")
    p.add_argument("--workers", type=int, help="data processes (default: 0 on CPU, up to 12 on CUDA)")
    p.add_argument("--batch", type=int, help="clips per UNet step (default: the preset's)")
    p.add_argument("--vae-steps", type=int, help="most VAE steps (default: the preset's)")
    p.add_argument("--eval-samples", type=int, help="videos per held-out prompt (0: skip)")
    p.add_argument(
        "--extend",
        type=int,
        help="with --resume on a finished run: train this many more UNet steps (a warm restart) and export again",
    )
    p.add_argument("--seed", type=int)
    a = p.parse_args(argv)
    cfg = PRESETS[a.preset]
    for k, v in (("batch", a.batch), ("vae_steps", a.vae_steps), ("seed", a.seed)):
        if v is not None:
            cfg = replace(cfg, **{k: v})
    if a.extend is not None and not a.resume:
        p.error("--extend continues a finished run: pass --resume too")
    threads = os.environ.get("OMP_NUM_THREADS")
    if a.device == "cpu" and threads:
        torch.set_num_threads(int(threads))
    res = pretrain(
        a.out,
        cfg,
        a.device,
        a.steps,
        a.minutes,
        a.time_limit,
        a.resume,
        a.ckpt,
        a.workers,
        a.eval_samples,
        extend=a.extend,
        command=" ".join(
            ["python -m videomage_core.shapesworld.pretrain"] + sys.argv[1:] if argv is None else list(argv)
        ),
    )
    print(f"status: {res.status}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
