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

Preset ``cpu64f8`` (a 64 px candidate, issue 18)
------------------------------------------------
64 px frames through a factor-8 VAE (channels 32/64/64/64) with 16 latent channels: 8x8x16 latents,
as many numbers as the second edition's 16x16x4 (``cpu64``), but the UNet's four levels end at 1x1 as
the first edition's did (the second edition's 2x2 deepest level could not hold a motion in its
temporal layers: ``bench/motion_capacity.md``), and a UNet step of 16 clips costs ~1.5 s on 2 cores
(the second edition's 8 clips ~1.9 s). A new VAE is trained (about 14 minutes here); the UNet and
text encoder are warm-started from the first edition (``--init-from``: every tensor of matching
shape; ``conv_in`` / ``conv_out`` start fresh). Attention is recorded at level 0, maps 8x8. Measured
(session 6, 51 k clips in 80 min): it does not pass the motion-capacity gate either, so it is a candidate,
not the committed model (``docs/shapesworld.md``).

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

Modules
-------
This module holds the entry points (:func:`pretrain`, ``main``) and the order of the stages; the
rest is split by concern: :mod:`.pretrain_config` (config, presets), :mod:`.pretrain_modules`
(tokenizer, fresh modules), :mod:`.pretrain_data` (per-step batches), :mod:`.pretrain_checkpoints`
(checkpoint folder, learning-rate schedule), :mod:`.pretrain_run` (the training stages) and
:mod:`.pretrain_card` (export, sampling defaults, model card). Their public names are re-exported here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .controllability import HELD_OUT_CELLS

# The pieces, by concern; none imports this module (pretrain_modules and pretrain_data import
# pretrain_config, pretrain_run imports config, data and pretrain_checkpoints, pretrain_card imports config
# and modules). Every public name that used to be defined here is re-exported (``__all__``), so
# ``pretrain.X`` and ``from videomage_core.shapesworld.pretrain import X`` keep working.
from .pretrain_card import (
    _gpu_name,
    _report_from_state,
    export_model,
    folder_mb,
    recommended_settings,
    write_model_card,
)
from .pretrain_checkpoints import Checkpoints, lr_at, scheduled_lr
from .pretrain_config import MAX_MODEL_MB, PRESETS, STAGES, PretrainConfig
from .pretrain_data import StepBatches, step_seed, t2v_clips, vae_images
from .pretrain_modules import _n_params, build_modules, build_tokenizer
from .pretrain_run import _Run, init_from_model

__all__ = [
    "MAX_MODEL_MB", "PRESETS", "STAGES", "PretrainConfig",
    "build_modules", "build_tokenizer",
    "StepBatches", "step_seed", "t2v_clips", "vae_images",
    "Checkpoints", "lr_at", "scheduled_lr",
    "init_from_model",
    "export_model", "folder_mb", "recommended_settings", "write_model_card",
    "PretrainResult", "extend_finished_run", "main", "pretrain",
]


# --------------------------------------------------------------------------- entry point


@dataclass
class PretrainResult:
    out: Path
    status: str  # "done" or "paused"
    state: dict = field(default_factory=dict)
    model_mb: float = 0.0


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
    init_from: str | os.PathLike | None = None,
) -> PretrainResult:
    """Run (or continue) every stage; write the model folder and its card. See the module docstring.

    ``steps`` overrides ``cfg.steps`` (UNet steps); ``minutes`` plans both stages' steps from the
    measured speed instead (15 % of the time for the VAE at most); ``time_limit`` (seconds) pauses
    this call with a checkpoint, as does ``stop_at`` (a UNet step; for tests and scripted chunks).
    ``eval_samples`` overrides ``cfg.eval_samples`` (0 skips it). ``extend`` continues a finished
    run (with ``resume``) for that many more UNet steps: a warm restart of the schedule (the Adam
    moments were not kept, so a fresh warm-up, then cosine from half the peak learning rate).
    ``init_from`` (a new run only): a ShapesWorld model folder whose VAE, if of this run's architecture,
    is kept (no VAE stage; its PSNR and round-trip ceiling are measured on this run's world) and whose
    UNet and text encoder tensors of matching shape are the starting weights (a warm start, see
    :func:`init_from_model`).
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
        if init_from is not None:
            if not (Path(init_from) / "unet" / "config.json").is_file():
                raise FileNotFoundError(f"init_from: expected a ShapesWorld model folder, got {init_from}")
            state["init_from"] = str(init_from)
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
    if state.get("init_from"):
        init_from_model(run, state, state["init_from"], unet, vae, text_encoder, _log)
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
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="default: h200 on --device cuda (about 10 min on one H200-class GPU), else cpu64 "
                        "(the second edition's, warm-started from the first edition with --init-from; the built-in "
                        "model is the first edition's, preset cpu)")
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
    p.add_argument("--lr", type=float, help="the UNet's peak learning rate (default: the preset's)")
    p.add_argument("--p-interaction", type=float,
                   help="share of two-object clips in the UNet's data, 0 to 1 (default: the preset's)")
    p.add_argument("--p-still-pair", type=float,
                   help='share of clips showing two still objects captioned "{A} and {B}", 0 to 1 (default 0: off)')
    p.add_argument("--init-from", help="a new run only: warm start from this ShapesWorld model folder (its VAE kept)")
    a = p.parse_args(argv)
    cfg = PRESETS[a.preset or ("h200" if a.device.startswith("cuda") else "cpu64")]
    if a.p_interaction is not None and not 0 <= a.p_interaction <= 1:
        p.error("--p-interaction is a share: expected a number from 0 to 1")
    if a.p_still_pair is not None and not 0 <= a.p_still_pair < 1:
        p.error("--p-still-pair is a share: expected a number from 0 to below 1")
    for k, v in (("batch", a.batch), ("vae_steps", a.vae_steps), ("seed", a.seed), ("lr", a.lr),
                 ("p_interaction", a.p_interaction), ("p_still_pair", a.p_still_pair)):
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
        init_from=a.init_from,
        command=" ".join(
            ["python -m videomage_core.shapesworld.pretrain"] + sys.argv[1:] if argv is None else list(argv)
        ),
    )
    print(f"status: {res.status}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
