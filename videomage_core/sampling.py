"""Samplers: DDIM with classifier-free guidance, DDIM inversion, the noise prior, and
Spatial-Temporal Collaborative Sampling (SCS, ``method.md`` section 4, the paper's Algorithm 1).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .attention import AttentionRecorder
from .data import check_size
from .diffusion import encode_prompts, predict_noise, randn
from .errors import TrainingCancelled, require
from .lora import adapters_active
from .losses import (classifier_free_guidance, combine_branches, guidance_step_sizes,
                     noise_prior, spatial_alignment_loss, temporal_alignment_loss)
from .tokens import check_prompt_tokens, superclass_prompt, word_positions
from .training import StepInfo


@dataclass
class SampleSettings:
    """The paper's sampling settings: 50 DDIM steps, CFG 9.0, 24 frames at 320x576."""

    frames: int = 24
    height: int = 320
    width: int = 576
    steps: int = 50
    cfg: float = 9.0
    seed: int = 0
    negative_prompt: str = ""

    def check(self) -> None:
        require(self.frames >= 2, "frames", f"a video needs at least 2 frames, got {self.frames}")
        check_size(self.width, self.height)
        require(self.steps >= 1, "steps", f"expected at least 1 step, got {self.steps}")


@dataclass
class SCSSettings:
    """Algorithm 1's knobs: tau guided steps, alpha_t from ``alpha0``, branch weights."""

    tau: int = 15
    alpha0: float | None = None  # None: the model's ``scs_alpha`` (videomage.json), else 1e4 (the paper)
    beta_s: float = 0.5
    beta_m: float = 0.5
    levels: tuple | None = None  # None: the model's attention_levels
    stop_at_last_layer: bool = True  # cut the gradient pass after the last recorded layer


@dataclass
class SCSStats:
    """Alignment losses before each guided update (for tests, reports and the loss graph)."""

    loss_s_to_m: list = field(default_factory=list)
    loss_m_to_s: list = field(default_factory=list)


def latent_shape(model, settings: SampleSettings) -> tuple[int, ...]:
    s = model.vae_scale_factor
    return (1, model.unet.config.in_channels, settings.frames, settings.height // s, settings.width // s)


def initial_noise(model, settings: SampleSettings) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(settings.seed))
    return randn(latent_shape(model, settings), gen, model) * model.scheduler.init_noise_sigma


def _scheduler(model, steps: int):
    sched = copy.deepcopy(model.scheduler)
    sched.set_timesteps(steps, device=model.device)
    return sched


def _report(callback, cancel, stage, i, total, loss=0.0, parts=None, t0=None):
    if callback is not None:
        callback(StepInfo(stage, i + 1, total, float(loss), parts or {},
                          time.perf_counter() - t0 if t0 else 0.0))
    if cancel is not None and cancel():
        raise TrainingCancelled(f"{stage}: cancelled at step {i + 1}/{total}")


def _cfg_eps(model, x, t, text_pair, scale):
    """One batched [uncond, cond] UNet call and classifier-free guidance."""
    eps = predict_noise(model, torch.cat([x, x]), t, text_pair)
    uncond, cond = eps.chunk(2)
    return classifier_free_guidance(uncond, cond, scale)


@torch.no_grad()
def ddim_sample(model, prompt: str, settings: SampleSettings, adapters: list[str] | None = None,
                latents: torch.Tensor | None = None, callback=None, cancel=None,
                recorder: AttentionRecorder | None = None,
                on_maps: Callable[[int, AttentionRecorder], None] | None = None) -> torch.Tensor:
    """Plain DDIM (eta 0) with CFG, with exactly ``adapters`` active. Returns final latents.

    With ``recorder``, attention maps of each step's [uncond, cond] batch go to ``on_maps(i, recorder)``.
    """
    settings.check()
    sched = _scheduler(model, settings.steps)
    x = initial_noise(model, settings) if latents is None else latents.to(model.device, model.dtype)
    text = encode_prompts(model, [settings.negative_prompt, prompt])
    with adapters_active(model, adapters or []):
        for i, t in enumerate(sched.timesteps):
            t0 = time.perf_counter()
            if recorder is None:
                eps = _cfg_eps(model, x, t, text, settings.cfg)
            else:
                with recorder, recorder.recording((2, *x.shape[1:])):
                    eps = _cfg_eps(model, x, t, text, settings.cfg)
                on_maps(i, recorder)
            x = sched.step(eps, t, x).prev_sample
            _report(callback, cancel, "sample", i, len(sched.timesteps), t0=t0)
    return x


@torch.no_grad()
def ddim_invert(model, latents: torch.Tensor, steps: int, prompt: str = "",
                adapters: list[str] | None = None) -> torch.Tensor:
    """DDIM inversion (x_0 -> x_T) with the deterministic DDIM update run backwards, no CFG."""
    require(model.scheduler.config.prediction_type == "epsilon", "model",
            "DDIM inversion supports epsilon-prediction schedulers only")
    sched = _scheduler(model, steps)
    abar = sched.alphas_cumprod.to(model.device, torch.float32)
    text = encode_prompts(model, [prompt])
    x = latents.to(model.device, torch.float32)
    ts = list(reversed(sched.timesteps.tolist()))
    ratio = sched.config.num_train_timesteps // steps
    with adapters_active(model, adapters or []):
        for t in ts:
            prev = t - ratio
            a_prev = abar[prev] if prev >= 0 else torch.tensor(float(sched.final_alpha_cumprod))
            a_t = abar[t]
            eps = predict_noise(model, x.to(model.dtype), torch.tensor(t, device=model.device), text).float()
            x0 = (x - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
            x = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
    return x.to(model.dtype)


def noise_prior_latents(model, settings: SampleSettings, reference_latents: torch.Tensor | None,
                        beta: float = 0.3, inversion_steps: int | None = None) -> torch.Tensor:
    """Initial noise ``sqrt(beta) eps_m + sqrt(1-beta) eps`` with ``eps_m`` the DDIM-inverted
    reference clip (resized to the requested frames and size); plain noise when no reference."""
    eps = initial_noise(model, settings)
    if reference_latents is None or beta <= 0:
        return eps
    require(0 <= beta <= 1, "noise_prior_beta", f"expected 0..1, got {beta}")
    ref = reference_latents.to(model.device, torch.float32)
    target = eps.shape[2:]
    if tuple(ref.shape[2:]) != tuple(target):
        ref = F.interpolate(ref, size=target, mode="trilinear", align_corners=False)
    eps_m = inverted_reference(model, ref.to(model.dtype), inversion_steps or settings.steps)
    return noise_prior(eps_m, eps, beta)


INVERSION_CACHE_SIZE = 4


def inverted_reference(model, reference: torch.Tensor, steps: int) -> torch.Tensor:
    """``ddim_invert`` of a reference clip, remembered on the model (the last few clips).

    The inversion runs the frozen base model with no prompt and no seed, so it depends only on the
    clip, the step count and the base weights (their in-place version counters are part of the
    key): every video sampled from one motion reuses the same ``eps_m``.
    """
    from .cache import tensors_digest

    cache = model.__dict__.setdefault("_inversion_cache", {})
    base_version = sum(p._version for n, p in model.unet.named_parameters() if "lora_" not in n)
    key = (tensors_digest({"ref": reference}), tuple(reference.shape), int(steps), str(model.dtype),
           str(model.device), base_version)
    if key not in cache:
        while len(cache) >= INVERSION_CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[key] = ddim_invert(model, reference, steps)
    return cache[key].clone()


class _Branch:
    """One SCS branch: an adapter, a prompt pair and the columns of the subjects' words."""

    def __init__(self, model, adapter: str, prompt: str, words: list[str], negative: str):
        self.adapter = adapter
        self.text = encode_prompts(model, [negative, prompt])
        self.columns = word_positions(model.tokenizer, prompt, words)

    def sca(self, recorder: AttentionRecorder) -> torch.Tensor:
        """The subjects' SCA maps ``(B, F, N, h, w)`` (multi-piece words averaged)."""
        maps = recorder.spatial_maps()
        return torch.stack([maps[:, :, cols].mean(2) for cols in self.columns], 2)


def collaborative_guidance(model, recorder: AttentionRecorder, sub: _Branch, mot: _Branch,
                           x_sub: torch.Tensor, x_mot: torch.Tensor, t, alpha: float,
                           stop_early: bool) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Algorithm 1 lines 7-10: one gradient step on each branch's latent.

    ``L_s->m`` (SCA, subject maps as target) moves ``x_mot``; ``L_m->s`` (TSA, motion maps as
    target) moves ``x_sub``. Gradients come from the conditional passes only.
    """
    maps = {}
    # works inside ComfyUI's inference_mode too: fresh (non-inference) copies of what autograd sees
    with recorder, torch.inference_mode(False), torch.enable_grad():
        leaves = {}
        for name, branch, x in (("sub", sub, x_sub), ("mot", mot, x_mot)):
            leaf = x.detach().clone().requires_grad_(True)
            leaves[name] = leaf
            with adapters_active(model, [branch.adapter]):
                with recorder.recording(leaf.shape, stop_after_last=stop_early):
                    predict_noise(model, leaf, t.clone(), branch.text[1:].clone())
            maps[name] = (branch.sca(recorder), recorder.temporal_maps())
        loss_s_to_m = spatial_alignment_loss(maps["sub"][0], maps["mot"][0])
        loss_m_to_s = temporal_alignment_loss(maps["sub"][1], maps["mot"][1])
        g_sub, g_mot = torch.autograd.grad(loss_m_to_s + loss_s_to_m, [leaves["sub"], leaves["mot"]],
                                           allow_unused=True)
    g_sub = torch.zeros_like(x_sub) if g_sub is None else g_sub
    g_mot = torch.zeros_like(x_mot) if g_mot is None else g_mot
    new_sub = (x_sub.float() - alpha * g_sub.float()).to(x_sub.dtype)
    new_mot = (x_mot.float() - alpha * g_mot.float()).to(x_mot.dtype)
    return new_sub, new_mot, float(loss_s_to_m.detach()), float(loss_m_to_s.detach())


@torch.no_grad()
def scs_sample(model, prompt: str, superclasses: dict[str, str], subject_adapter: str,
               motion_adapter: str, settings: SampleSettings, scs: SCSSettings | None = None,
               latents: torch.Tensor | None = None, callback=None, cancel=None,
               stats: SCSStats | None = None) -> torch.Tensor:
    """Spatial-Temporal Collaborative Sampling (Algorithm 1). Returns final latents.

    The subject branch (fused subject LoRA, prompt with tokens) and the motion branch (motion LoRA,
    superclass twin prompt) each predict CFG noise; during the first ``tau`` steps their latents
    are first moved by the collaborative guidance. The DDIM step uses
    ``beta_s * eps_sub + beta_m * eps_mot`` from the same weighting of the branch latents (which
    is ``x_t`` itself on unguided steps).
    """
    settings.check()
    scs = scs or SCSSettings()
    tokens = list(superclasses)
    check_prompt_tokens(prompt, tokens)
    twin = superclass_prompt(prompt, superclasses)
    present = [t for t in tokens if t in prompt]
    sub = _Branch(model, subject_adapter, prompt, present, settings.negative_prompt)
    mot = _Branch(model, motion_adapter, twin, [superclasses[t] for t in present], settings.negative_prompt)
    sched = _scheduler(model, settings.steps)
    steps = len(sched.timesteps)
    alphas = guidance_step_sizes(scs.alpha0 if scs.alpha0 is not None else model.default("scs_alpha", 1e4), steps)
    x = initial_noise(model, settings) if latents is None else latents.to(model.device, model.dtype)
    wsum = scs.beta_s + scs.beta_m
    recorder = AttentionRecorder(model.unet, levels=scs.levels or model.attention_levels)
    for i, t in enumerate(sched.timesteps):
        t0 = time.perf_counter()
        x_sub, x_mot = x, x
        loss = 0.0
        if i < scs.tau:
            x_sub, x_mot, l_sm, l_ms = collaborative_guidance(
                model, recorder, sub, mot, x_sub, x_mot, t, alphas[i], scs.stop_at_last_layer)
            loss = l_sm + l_ms
            if stats is not None:
                stats.loss_s_to_m.append(l_sm)
                stats.loss_m_to_s.append(l_ms)
        with adapters_active(model, [subject_adapter]):
            eps_sub = _cfg_eps(model, x_sub, t, sub.text, settings.cfg)
        with adapters_active(model, [motion_adapter]):
            eps_mot = _cfg_eps(model, x_mot, t, mot.text, settings.cfg)
        eps = combine_branches(eps_sub, eps_mot, scs.beta_s, scs.beta_m)
        x_base = x if i >= scs.tau else (scs.beta_s * x_sub + scs.beta_m * x_mot) / wsum
        x = sched.step(eps, t, x_base).prev_sample
        _report(callback, cancel, "scs", i, steps, loss, t0=t0)
    return x
