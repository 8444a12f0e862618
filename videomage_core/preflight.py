"""Pre-flight memory check: does a stage fit the GPU it is about to run on, and "auto" checkpointing.

Before a training or sampling stage starts, :func:`check_memory` compares the stage's estimated
peak (:mod:`videomage_core.cost`, a fake run of the engine's own step on a twin of the loaded
model) with what the device has free. If it will not fit, it raises one
:class:`~videomage_core.errors.VideoMageInputError` listing settings that would (gradient
checkpointing, fewer frames, a smaller size, bf16), instead of an out-of-memory error halfway.
:func:`resolve_checkpointing` turns a stage's ``gradient_checkpointing="auto"`` into on exactly when
the step would not fit without it. Nothing is estimated where there is no budget to compare with
(CPU, MPS): "auto" is off there.
"""
from __future__ import annotations

import json
from dataclasses import replace

import torch

from .cost import StageCost, StageSpec, run_stage, twin_of
from .errors import VideoMageInputError, require

GIB = 2 ** 30
# The tally counts allocated bytes (as torch.cuda.max_memory_allocated). On top: the caching
# allocator's fragmentation (blocks split and cached, measured 5-10 % on UNet training), and
# cuDNN / cuBLAS workspaces (up to a few hundred MiB for 3-D convolutions). Neither is counted.
FRAGMENTATION = 0.10
WORKSPACE_BYTES = GIB // 2
CHECKPOINTING_CHOICES = ("auto", True, False)

_ESTIMATES: dict = {}
_TWINS: dict = {}


def free_device_memory(device) -> int | None:
    """Bytes a new allocation can still get on ``device``: the driver's free memory plus what
    PyTorch's caching allocator holds unused. ``None`` where there is no such budget (CPU, MPS).
    Tests monkeypatch this."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def required_bytes(cost: StageCost) -> int:
    """What the stage needs free on the device: its peak beyond the loaded model, plus the margin."""
    return int(cost.extra_bytes * (1 + FRAGMENTATION)) + WORKSPACE_BYTES


def _model_key(model, dtype: torch.dtype | None) -> str:
    vae_dtype = next(model.vae.parameters()).dtype
    return json.dumps([dict(model.unet.config), model.text_encoder.config.to_dict(), dict(model.vae.config),
                       str(dtype or model.dtype), str(None if dtype else vae_dtype),
                       list(model.attention_levels)], sort_keys=True, default=str)


def estimate(model, spec: StageSpec, dtype: torch.dtype | None = None) -> StageCost:
    """:func:`cost.run_stage` on the model's fake twin (in ``dtype`` if given), remembered."""
    key = _model_key(model, dtype)
    if (key, spec) not in _ESTIMATES:
        if key not in _TWINS:
            while len(_TWINS) >= 2:  # the model's dtype and bf16 (building one takes seconds)
                _TWINS.pop(next(iter(_TWINS)))
            _TWINS[key] = twin_of(model, dtype)
        _ESTIMATES[(key, spec)] = run_stage(_TWINS[key], spec)
    return _ESTIMATES[(key, spec)]


def stage_specs(model, stage: str, settings, images: int = 4, subjects: int = 2, ranks: int | None = None,
                mode: str = "scs", checkpointing: bool | str | None = None,
                video_frames: int | None = None, tau: int = 1) -> list[StageSpec]:
    """The steps of ``stage`` that decide its peak, at its settings.

    'subject' (``images``: how many); 'motion' (the LoRA step at ``settings.frames`` or the model's
    frame count, at most ``video_frames``, and the textual inversion of ``images`` reference crops,
    which runs with the same checkpointing); 'fusion' (``ranks``: the fused rank, the subjects' sum);
    'sample' (``settings`` a ``SampleSettings``; ``mode`` 'scs': a guided step, which runs all an
    unguided one does (an unguided one if ``tau`` is 0), and the VAE decode; 'wo_scs': a plain
    step and the decode). Checkpointing: ``checkpointing``, else the settings' own if a bool, else off.
    """
    ckpt = getattr(settings, "gradient_checkpointing", False) if checkpointing is None else checkpointing
    ckpt = ckpt if isinstance(ckpt, bool) else False
    size = {"height": settings.height, "width": settings.width}
    if stage == "subject":
        return [StageSpec("subject", frames=settings.prior_frames, images=images, rank=settings.rank,
                          checkpointing=ckpt, **size)]
    if stage == "motion":
        f = int(settings.frames or model.default("frames", 24))
        f = min(f, video_frames) if video_frames else f
        return [StageSpec("motion", frames=f, rank=settings.rank, checkpointing=ckpt,
                          coverage=getattr(settings, "coverage", "attention"), **size),
                StageSpec("inversion", frames=1, images=images, checkpointing=ckpt, **size)]
    if stage == "fusion":
        return [StageSpec("fusion", frames=settings.frames, rank=ranks or 4 * subjects, checkpointing=ckpt,
                          levels=tuple(settings.levels) if settings.levels else None, **size)]
    require(stage == "sample", "stage", f"expected subject, motion, fusion or sample, got '{stage}'")
    decode = StageSpec("vae_decode", frames=settings.frames, **size)
    step = "sample" if mode == "wo_scs" else ("scs_guided" if tau > 0 else "scs_unguided")
    guided_ckpt = ckpt and step == "scs_guided"
    return [StageSpec(step, frames=settings.frames, rank=ranks or 8, checkpointing=guided_ckpt, **size),
            decode]


def _worst(model, specs: list[StageSpec], dtype=None) -> StageCost:
    return max((estimate(model, s, dtype) for s in specs), key=lambda c: c.extra_bytes)


def _fits(model, specs, free: int, dtype=None) -> bool:
    return required_bytes(_worst(model, specs, dtype)) <= free


def _alternatives(model, stage: str, specs: list[StageSpec], free: int) -> list[str]:
    """Settings that would fit, each changing as little as possible: checkpointing, bf16, then the
    largest frame count and the largest size (with checkpointing) that fit."""
    found = []
    ckpt = [replace(s, checkpointing=True) for s in specs]
    trains = any(s.stage in ("subject", "motion", "fusion", "scs_guided") for s in specs)
    if trains and not all(s.checkpointing for s in specs) and _fits(model, ckpt, free):
        found.append("gradient_checkpointing on")
    if model.dtype != torch.bfloat16 and _fits(model, ckpt, free, torch.bfloat16):
        found.append("dtype bf16" + (" with gradient_checkpointing on" if trains else ""))
    frames = max(s.frames for s in specs)
    if frames > 2:
        for f in sorted({max(2, int(frames * k)) for k in (0.75, 0.5, 0.25)}, reverse=True):
            if _fits(model, [replace(s, frames=min(s.frames, f)) for s in ckpt], free):
                name = "prior_frames" if stage == "subject" else "frames"
                found.append(f"{name} {f}" + (" with gradient_checkpointing on" if trains else ""))
                break
    h, w = specs[0].height, specs[0].width
    for k in (0.75, 0.5):
        hh, ww = max(64, int(h * k) // 64 * 64), max(64, int(w * k) // 64 * 64)
        if (hh, ww) != (h, w) and _fits(model, [replace(s, height=hh, width=ww) for s in ckpt], free):
            found.append(f"size {ww}x{hh}" + (" with gradient_checkpointing on" if trains else ""))
            break
    return found


def check_memory(model, stage: str, settings, input_name: str = "gradient_checkpointing", **shape) -> None:
    """Raise a clear error before ``stage`` starts if its estimated peak will not fit the device.

    ``settings.gradient_checkpointing`` "auto" is judged with checkpointing on (what "auto" falls
    back to). ``shape``: see :func:`stage_specs`. Does nothing without a device budget (CPU).
    """
    free = free_device_memory(model.device)
    if free is None:
        return
    auto = getattr(settings, "gradient_checkpointing", False) == "auto" and "checkpointing" not in shape
    specs = stage_specs(model, stage, settings, **shape, **({"checkpointing": True} if auto else {}))
    worst = _worst(model, specs)
    need = required_bytes(worst)
    if need <= free:
        return
    options = _alternatives(model, stage, specs, free)
    spec = worst.spec
    raise VideoMageInputError(
        input_name,
        f"{stage} will not fit on {model.device}: its {worst.stage} step needs about {need / GIB:.1f} GiB "
        f"beyond the loaded model (estimated peak {worst.peak_bytes / GIB:.1f} GiB with the model's "
        f"{worst.weights_bytes / GIB:.1f} GiB, plus {FRAGMENTATION:.0%} + {WORKSPACE_BYTES / GIB:.1f} GiB "
        f"allocator margin) at {spec['frames']} frames {spec['width']}x{spec['height']}, "
        f"{spec['dtype']}, gradient checkpointing {'on' if spec['checkpointing'] else 'off'}; "
        f"{free / GIB:.1f} GiB is free. "
        + (f"Settings that would fit: {'; '.join(options)}." if options else
           "No smaller setting tried fits either: free memory on the GPU (close other programs) or use a "
           "larger GPU."))


def resolve_checkpointing(model, stage: str, settings, **shape) -> bool:
    """``settings.gradient_checkpointing`` as a bool: True/False as given; "auto" is on exactly
    when the step without it would not fit the device's free memory (off where there is no
    device budget, e.g. on the CPU)."""
    value = getattr(settings, "gradient_checkpointing", False)
    require(value in CHECKPOINTING_CHOICES, "gradient_checkpointing",
            f"expected 'auto', True or False, got {value!r}")
    if value != "auto":
        return bool(value)
    free = free_device_memory(model.device)
    if free is None:
        return False
    specs = [replace(s, checkpointing=False) for s in stage_specs(model, stage, settings, **shape)]
    return not _fits(model, specs, free)


def parse_checkpointing(value) -> bool | str:
    """'auto' / 'on' / 'off' (node and CLI choices; also true/false/1/0) -> 'auto' / True / False."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in ("on", "true", "1", "yes"):
        return True
    if text in ("off", "false", "0", "no"):
        return False
    raise VideoMageInputError("gradient_checkpointing", f"expected auto, on or off, got {value!r}")
