"""Samplers: DDIM with classifier-free guidance, DDIM inversion, the noise prior, and
Spatial-Temporal Collaborative Sampling (SCS, ``method.md`` section 4, the paper's Algorithm 1).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from .attention import AttentionRecorder
from .data import check_size
from .diffusion import check_frames, encode_prompts, is_flow, latent_frames, predict_noise, randn
from .errors import TrainingCancelled, require
from .lora import adapter_scales, adapters_active
from .model import text_encoder_parked
from .losses import (classifier_free_guidance, combine_branches, combine_branches_by_region, guidance_step_sizes,
                     noise_prior, spatial_alignment_loss, temporal_alignment_loss)
from .checkpointing import set_gradient_checkpointing
from .scs_regions import subject_region_weights
from .tokens import aligned_subject_columns, check_prompt_tokens
from .training import StepInfo


@dataclass
class SampleSettings:
    """The paper's sampling settings: 50 DDIM steps, CFG 9.0, 24 frames at 320x576.

    ``subject_early_scale`` / ``subject_early_steps`` (beyond the paper; off by default): CustomCrafter's
    "dynamic weighted video sampling". During the first ``subject_early_steps`` sampling steps, where the
    motion and layout form, the subject LoRA adds ``subject_early_scale`` (0..1) times its delta; from then
    on, where the appearance forms, its full delta. Only the LoRA is scaled (the subject tokens stay).
    Either a scale of 1.0 or 0 early steps turns it off (results bit-identical to not having it). The
    samplers take the subject adapter's name: ``scs_sample``'s subject branch, guided passes included, and
    ``ddim_sample(subject_adapter=...)`` (w/o SCS).
    """

    frames: int = 24
    height: int = 320
    width: int = 576
    steps: int = 50
    cfg: float = 9.0
    seed: int = 0
    negative_prompt: str = ""
    subject_early_scale: float = 1.0  # the subject LoRA's scale during the first subject_early_steps
    subject_early_steps: int = 0  # 0: off

    def check(self) -> None:
        require(self.frames >= 2, "frames", f"a video needs at least 2 frames, got {self.frames}")
        check_size(self.width, self.height)
        require(self.steps >= 1, "steps", f"expected at least 1 step, got {self.steps}")
        scale = self.subject_early_scale
        require(isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale)
                and 0.0 <= scale <= 1.0, "subject_early_scale",
                f"expected the subject LoRA's early scale in 0..1 (1 = off), got {scale!r}")
        n = self.subject_early_steps
        require(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= self.steps,
                "subject_early_steps",
                f"expected a whole number of steps in 0..{self.steps} (the sampling steps; 0 = off), "
                f"got {n!r}")

    @property
    def dynamic_subject(self) -> bool:
        """Whether the subject LoRA's scale changes during sampling (``subject_early_*``)."""
        return self.subject_early_steps > 0 and float(self.subject_early_scale) != 1.0

    def subject_scale(self, step: int) -> float:
        """The subject LoRA's scale at sampling step ``step`` (0 = the first, noisiest)."""
        return float(self.subject_early_scale) if step < self.subject_early_steps else 1.0


STEP_MODES = ("paper", "normalized")
#: what the motion branch is prompted with: the paper's superclass twin ("a toy orbits a dog"), or, beyond
#: the paper, the target prompt itself with the subjects' learned tokens (so their embeddings, not the
#: subject LoRA, reach the motion branch's objects)
MOTION_PROMPTS = ("superclass", "tokens")
RELATIVE_STEP = 0.02  # normalized mode's alpha0 when neither settings nor videomage.json give one


@dataclass
class SCSSettings:
    """Algorithm 1's knobs: tau guided steps, alpha_t from ``alpha0``, branch weights.

    ``step_mode`` says what alpha means. "paper" (default): Algorithm 1 exactly, ``x -= alpha_t *
    grad`` of the summed alignment losses; the step then grows with the frame count, size and
    recorded level (sums over F*h*w and h*w*F^2 map entries), so alpha0 is per model and size
    (1e4 ZeroScope at 24x320x576, 10 the built-in model: its ``scs_alpha``). "normalized": the
    gradient is rescaled to ``||x||``, so ``alpha_t`` *is* the relative step ``||step|| / ||x||``
    (alpha0 from the model's ``scs_relative_step``, else ``RELATIVE_STEP``): one alpha, the same
    step at any frame count, size and level. ``SCSStats`` logs the relative step in both modes.
    """

    tau: int = 15
    alpha0: float | None = None  # None: the model's scs_alpha (paper) / scs_relative_step (normalized)
    beta_s: float = 0.5
    beta_m: float = 0.5
    levels: tuple | None = None  # None: the model's attention_levels
    stop_at_last_layer: bool = True  # cut the gradient pass after the last recorded layer
    step_mode: str = "paper"  # "paper" | "normalized" (see above)
    gradient_checkpointing: bool = False  # recompute the guided pass's activations in its backward
    motion_prompt: str = "superclass"  # MOTION_PROMPTS: the paper's twin prompt, or "tokens" (beyond it)
    # beyond the paper: the subject branch's own prompt, with the same subject tokens, where the target
    # prompt holds a word the base model never learned (ShapesWorld's held-out verbs); "": the target prompt
    subject_prompt: str = ""
    # beyond the paper: (outside, inside), the subject branch's share of the DDIM step's noise per latent pixel,
    # from where its tokens are not attended to where they are most (scs_regions); None: beta_s / beta_m
    # everywhere (the paper). (0.2, 0.9) on the built-in model: docs/shapesworld.md, session 20
    region_weights: tuple[float, float] | None = None

    def check(self) -> None:
        require(self.motion_prompt in MOTION_PROMPTS, "motion_prompt",
                f"expected one of {MOTION_PROMPTS}, got {self.motion_prompt!r}")
        require(self.step_mode in STEP_MODES, "step_mode",
                f"expected one of {STEP_MODES}, got {self.step_mode!r}")
        require(self.tau >= 0, "tau", f"expected 0 or more guided steps, got {self.tau}")
        if self.region_weights is not None:
            w = tuple(self.region_weights) if isinstance(self.region_weights, (tuple, list)) else ()
            require(len(w) == 2 and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in w), "region_weights",
                    f"expected (outside, inside), two shares between 0 and 1, got {self.region_weights!r}")
        require(self.alpha0 is None or (math.isfinite(self.alpha0) and self.alpha0 >= 0), "alpha",
                f"expected a finite step size >= 0, got {self.alpha0}")

    def alpha(self, model) -> float:
        if self.alpha0 is not None:
            return float(self.alpha0)
        if self.step_mode == "normalized":
            return float(model.default("scs_relative_step", RELATIVE_STEP))
        return float(model.default("scs_alpha", 1e4))


@dataclass
class SCSStats:
    """Per guided step: the alignment losses before the update and each branch's relative step
    ``||alpha_t grad|| / ||x||`` (subject branch: ``L_m->s``, motion branch: ``L_s->m``).
    ``skipped`` counts branch updates dropped for a non-finite gradient."""

    loss_s_to_m: list = field(default_factory=list)
    loss_m_to_s: list = field(default_factory=list)
    relative_step_sub: list = field(default_factory=list)
    relative_step_mot: list = field(default_factory=list)
    skipped: int = 0


def latent_shape(model, settings: SampleSettings) -> tuple[int, ...]:
    check_frames(model, settings.frames)
    s = model.vae_scale_factor
    return (1, model.unet.config.in_channels, latent_frames(model, settings.frames), settings.height // s,
            settings.width // s)


def initial_noise(model, settings: SampleSettings) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(settings.seed))
    return randn(latent_shape(model, settings), gen, model) * model.scheduler.init_noise_sigma


def _scheduler(model, steps: int):
    sched = copy.deepcopy(model.scheduler)
    sched.set_timesteps(steps, device=model.device)
    if hasattr(sched, "set_begin_index"):  # multistep samplers (Wan's UniPC): start at step 0, as WanPipeline
        sched.set_begin_index(0)
    return sched


def _report(callback, cancel, stage, i, total, loss=None, parts=None, t0=None):
    if callback is not None:
        callback(StepInfo(stage, i + 1, total, float(loss or 0.0), parts or {},
                          time.perf_counter() - t0 if t0 else 0.0, has_loss=loss is not None))
    if cancel is not None and cancel():
        raise TrainingCancelled(f"{stage}: cancelled at step {i + 1}/{total}")


def _cfg_eps(model, x, t, text_pair, scale):
    """One batched [uncond, cond] UNet call and classifier-free guidance."""
    eps = predict_noise(model, torch.cat([x, x]), t, text_pair)
    uncond, cond = eps.chunk(2)
    return classifier_free_guidance(uncond, cond, scale)


def _subject_scale(model, settings: SampleSettings, subject_adapter: str | None, step: int):
    """The context of one sampling step: the subject adapter at ``settings.subject_scale(step)``."""
    if subject_adapter is None or not settings.dynamic_subject:
        return adapter_scales(model, {})
    return adapter_scales(model, {subject_adapter: settings.subject_scale(step)})


@torch.no_grad()
def ddim_sample(model, prompt: str, settings: SampleSettings, adapters: list[str] | None = None,
                latents: torch.Tensor | None = None, callback=None, cancel=None,
                recorder: AttentionRecorder | None = None,
                on_maps: Callable[[int, AttentionRecorder], None] | None = None,
                subject_adapter: str | None = None) -> torch.Tensor:
    """Plain DDIM (eta 0) with CFG, with exactly ``adapters`` active. Returns final latents.

    With ``recorder``, attention maps of each step's [uncond, cond] batch go to ``on_maps(i, recorder)``.
    ``subject_adapter`` (one of ``adapters``) is the one ``settings.subject_early_*`` scales in the early
    steps; it must be named when those settings are on.
    """
    settings.check()
    require(not settings.dynamic_subject or subject_adapter in (adapters or []), "subject_adapter",
            f"subject_early_scale needs the subject adapter among the active ones {adapters or []}, "
            f"got {subject_adapter!r}")
    sched = _scheduler(model, settings.steps)
    x = initial_noise(model, settings) if latents is None else latents.to(model.device, model.dtype)
    text = encode_prompts(model, [settings.negative_prompt, prompt])
    with adapters_active(model, adapters or []), text_encoder_parked(model):
        for i, t in enumerate(sched.timesteps):
            t0 = time.perf_counter()
            with _subject_scale(model, settings, subject_adapter, i):
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
    """DDIM inversion (x_0 -> x_T) with the deterministic DDIM update run backwards, no CFG (on a
    flow base: :func:`flow_invert`)."""
    if is_flow(model):
        return flow_invert(model, latents, steps, prompt, adapters)
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


@torch.no_grad()
def flow_invert(model, latents: torch.Tensor, steps: int, prompt: str = "",
                adapters: list[str] | None = None) -> torch.Tensor:
    """The flow ODE integrated backwards (x_0 at sigma 0 -> x_1 at sigma 1), Euler on the sampler's
    own sigmas, the velocity taken where each step starts (as DDIM inversion takes eps): the flow
    base's counterpart of :func:`ddim_invert`, no CFG."""
    from .diffusion import FLOW_TRAIN_TIMESTEPS

    sigmas = _scheduler(model, steps).sigmas.to(torch.float64).flip(0).tolist()  # 0 ... 1
    text = encode_prompts(model, [prompt])
    x = latents.to(model.device, torch.float32)
    with adapters_active(model, adapters or []):
        for low, high in zip(sigmas[:-1], sigmas[1:]):
            t = torch.tensor(low * FLOW_TRAIN_TIMESTEPS, device=model.device, dtype=torch.float32)
            v = predict_noise(model, x.to(model.dtype), t, text).float()
            x = x + (high - low) * v
    return x.to(model.dtype)


def noise_prior_latents(model, settings: SampleSettings, reference_latents: torch.Tensor | None,
                        beta: float = 0.3, inversion_steps: int | None = None) -> torch.Tensor:
    """Initial noise ``sqrt(beta) eps_m + sqrt(1-beta) eps`` with ``eps_m`` the DDIM-inverted
    reference clip; plain noise when no reference.

    Time is never stretched: the reference's frames are selected (``data.prior_frame_indices``: the
    first ``frames`` when fewer are sampled than the motion has, uniform repeats when more), so at
    the motion's own frame count the prior has exactly its training timing. Only the spatial size is
    resized (bilinear, per frame) when the sample's size differs."""
    from .data import prior_frame_indices

    eps = initial_noise(model, settings)
    if reference_latents is None or beta <= 0:
        return eps
    require(0 <= beta <= 1, "noise_prior_beta", f"expected 0..1, got {beta}")
    ref = reference_latents.to(model.device, torch.float32)
    frames, size = eps.shape[2], tuple(eps.shape[3:])
    if ref.shape[2] != frames:
        ref = ref[:, :, prior_frame_indices(ref.shape[2], frames)[0]]
    if tuple(ref.shape[3:]) != size:
        ref = F.interpolate(ref, size=(frames, *size), mode="trilinear", align_corners=False)
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
    """One SCS branch: its adapter(s), a prompt pair and each subject's columns in that prompt."""

    def __init__(self, model, adapter: str | list[str], prompt: str, columns: list[list[int]], negative: str):
        self.adapter = adapter
        self.adapters = [adapter] if isinstance(adapter, str) else list(adapter)  # active together
        self.text = encode_prompts(model, [negative, prompt])
        self.columns = columns

    def sca(self, recorder: AttentionRecorder) -> torch.Tensor:
        """The subjects' SCA maps ``(B, F, N, h, w)`` (multi-piece words averaged)."""
        maps = recorder.spatial_maps()
        return torch.stack([maps[:, :, cols].mean(2) for cols in self.columns], 2)


FP16_LOSS_SCALE = 2.0 ** 16  # torch.amp.GradScaler's init_scale
MAX_SCALE_HALVINGS = 32


class GuidedStep(NamedTuple):
    """One collaborative-guidance update (Algorithm 1 lines 7-10) and what ``SCSStats`` logs."""

    x_sub: torch.Tensor
    x_mot: torch.Tensor
    loss_s_to_m: float
    loss_m_to_s: float
    step_sub: float  # ||alpha_t grad_{x_sub} L_m->s|| / ||x_sub||
    step_mot: float  # ||alpha_t grad_{x_mot} L_s->m|| / ||x_mot||
    skipped: int  # branch updates dropped for a non-finite gradient


def _branch_gradient(model, recorder: AttentionRecorder, branch: _Branch, x: torch.Tensor, t, loss_fn,
                     stop_early: bool, kinds=None) -> tuple[torch.Tensor | None, float, torch.Tensor | None]:
    """One branch's conditional pass with a graph, ``loss_fn(sca, tsa)`` and its latent gradient.

    ``kinds``: the maps ``loss_fn`` and the caller need (:meth:`AttentionRecorder.recording`); the others
    are not computed (``None`` to ``loss_fn``).
    Returns ``(gradient in fp32 or None if not finite, loss, the branch's detached TSA maps or None)``; the
    graph is freed on return. The backward runs under the branch's adapter and the attached recorder
    (not recording), so gradient checkpointing recomputes exactly the forward that ran. In fp16 the
    loss is scaled (``FP16_LOSS_SCALE``) before the backward and the gradient unscaled in fp32: the
    gradient alpha 1e4 is sized for (about 1e-5 per element) is subnormal in fp16 (below 6.1e-5) on
    its way through the UNet. A non-finite scaled gradient halves the scale and reruns the backward
    on the same graph, as ``torch.amp.GradScaler`` backs off.
    """
    leaf = x.detach().clone().requires_grad_(True)
    fp16 = model.dtype == torch.float16
    with adapters_active(model, branch.adapters):
        with recorder.recording(leaf.shape, stop_after_last=stop_early, kinds=kinds):
            predict_noise(model, leaf, t.clone(), branch.text[1:].clone())
        sca = branch.sca(recorder) if recorder.wants("spatial") else None
        tsa = recorder.temporal_maps() if recorder.wants("temporal") else None
        recorder.maps = {}
        loss = loss_fn(sca, tsa)
        scale, grad = FP16_LOSS_SCALE if fp16 else 1.0, None
        for _ in range(MAX_SCALE_HALVINGS if fp16 else 1):
            (g,) = torch.autograd.grad(loss * scale if fp16 else loss, [leaf], allow_unused=True,
                                       retain_graph=fp16)
            g = torch.zeros_like(leaf, dtype=torch.float32) if g is None else g.float() / scale
            if bool(torch.isfinite(g).all()):
                grad = g
                break
            scale /= 2
    return grad, float(loss.detach()), None if tsa is None else tsa.detach()


def guided_update(x: torch.Tensor, grad: torch.Tensor, alpha: float, step_mode: str = "paper"
                  ) -> tuple[torch.Tensor, float]:
    """``x - step`` (computed in fp32) and the relative step ``||step|| / ||x||``.

    "paper": ``step = alpha_t * grad`` (Algorithm 1). "normalized": ``step = alpha_t * ||x|| *
    grad / ||grad||``, so the relative step is ``alpha_t`` whatever the frame count, size or
    recorded level (the summed losses' gradient norm grows with each); a zero gradient, no step.
    """
    xf = x.float()
    x_norm = xf.norm()
    if step_mode == "normalized":
        g_norm = grad.norm()
        step = grad * (alpha * x_norm / g_norm) if float(g_norm) > 0 else torch.zeros_like(grad)
    else:
        step = alpha * grad
    return (xf - step).to(x.dtype), float(step.norm() / x_norm.clamp_min(torch.finfo(torch.float32).tiny))


def collaborative_guidance(model, recorder: AttentionRecorder, sub: _Branch, mot: _Branch,
                           x_sub: torch.Tensor, x_mot: torch.Tensor, t, alpha: float,
                           stop_early: bool = True, step_mode: str = "paper") -> GuidedStep:
    """Algorithm 1 lines 7-10: one gradient step on each branch's latent.

    ``L_s->m`` (SCA, subject maps as target) moves ``x_mot``; ``L_m->s`` (TSA, motion maps as
    target) moves ``x_sub``. Gradients come from the conditional passes only. One graph at a time:
    the subject's SCA maps at ``x_sub`` are computed without a graph (the target of ``L_s->m``);
    then the motion branch's forward and backward, whose detached TSA maps are the target of
    ``L_m->s``; then, with that graph freed, the subject branch's forward and backward. The same
    update as building both graphs before one backward, at one graph's peak memory and one extra
    forward without a graph (up to the last recorded layer).
    """
    # works inside ComfyUI's inference_mode too: fresh (non-inference) copies of what autograd sees
    with recorder, torch.inference_mode(False):
        with torch.no_grad(), adapters_active(model, sub.adapters):
            with recorder.recording(x_sub.shape, stop_after_last=True, kinds=("spatial",)):
                predict_noise(model, x_sub, t, sub.text[1:])
            target_sca = sub.sca(recorder)
        recorder.maps = {}
        with torch.enable_grad():
            g_mot, l_sm, target_tsa = _branch_gradient(
                model, recorder, mot, x_mot, t, lambda sca, tsa: spatial_alignment_loss(target_sca, sca),
                stop_early)
            g_sub, l_ms, _ = _branch_gradient(
                model, recorder, sub, x_sub, t, lambda sca, tsa: temporal_alignment_loss(tsa, target_tsa),
                stop_early, kinds=("temporal",))
    new_sub, step_sub = guided_update(x_sub, g_sub, alpha, step_mode) if g_sub is not None else (x_sub, 0.0)
    new_mot, step_mot = guided_update(x_mot, g_mot, alpha, step_mode) if g_mot is not None else (x_mot, 0.0)
    return GuidedStep(new_sub, new_mot, l_sm, l_ms, step_sub, step_mot, (g_sub is None) + (g_mot is None))


@torch.no_grad()
def scs_sample(model, prompt: str, superclasses: dict[str, str], subject_adapter: str,
               motion_adapter: str | list[str], settings: SampleSettings, scs: SCSSettings | None = None,
               latents: torch.Tensor | None = None, callback=None, cancel=None,
               stats: SCSStats | None = None) -> torch.Tensor:
    """Spatial-Temporal Collaborative Sampling (Algorithm 1). Returns final latents.

    The subject branch (fused subject LoRA, prompt with tokens) and the motion branch (motion LoRA,
    superclass twin prompt) each predict CFG noise; during the first ``tau`` steps their latents
    are first moved by the collaborative guidance. The DDIM step uses
    ``beta_s * eps_sub + beta_m * eps_mot`` from the same weighting of the branch latents (which
    is ``x_t`` itself on unguided steps); the latents stay in fp32. Each subject's maps are
    aligned by position: its token's columns in the prompt against the columns of the very
    superclass word that replaced it in the twin prompt (``tokens.aligned_subject_columns``);
    ``scs.motion_prompt="tokens"`` (beyond the paper) gives the motion branch the target prompt itself;
    ``scs.subject_prompt`` (beyond the paper) gives the subject branch a prompt of its own.

    ``motion_adapter``: one name, or several motion adapters active together in the motion branch (each
    adds its delta; weight them with :func:`lora.adapter_scales`). ``settings.subject_early_*`` scale
    the subject adapter during the first steps, in its guided passes too.
    """
    settings.check()
    scs = scs or SCSSettings()
    scs.check()
    check_prompt_tokens(prompt, list(superclasses))
    twin, order, cols_target, cols_twin = aligned_subject_columns(model.tokenizer, prompt, superclasses)
    sub_prompt, cols_sub = prompt, cols_target
    if scs.subject_prompt:  # beyond the paper: the subject branch prompted apart from the target prompt
        check_prompt_tokens(scs.subject_prompt, list(superclasses), "subject_prompt")
        sub_prompt = scs.subject_prompt
        _, own_order, own_cols, _ = aligned_subject_columns(model.tokenizer, sub_prompt, superclasses)
        cols_sub = [own_cols[own_order.index(token)] for token in order]  # each subject against its own
    sub = _Branch(model, subject_adapter, sub_prompt, cols_sub, settings.negative_prompt)
    # the paper's twin prompt, or (beyond the paper, "tokens") the target prompt itself, with its columns
    mot_prompt, mot_cols = (prompt, cols_target) if scs.motion_prompt == "tokens" else (twin, cols_twin)
    mot = _Branch(model, motion_adapter, mot_prompt, mot_cols, settings.negative_prompt)
    sched = _scheduler(model, settings.steps)
    steps = len(sched.timesteps)
    alphas = guidance_step_sizes(scs.alpha(model), steps)
    # fp32 latents whatever the model's dtype (the UNet gets them cast): a guided step of 1e-4 of
    # ||x|| is below fp16's and bf16's resolution at |x| ~ 1 and would be rounded away
    x = (initial_noise(model, settings) if latents is None else latents).to(model.device, torch.float32)
    wsum = scs.beta_s + scs.beta_m
    recorder = AttentionRecorder(model.unet, levels=scs.levels or model.attention_levels)
    checkpointing = scs.gradient_checkpointing and scs.tau > 0
    if checkpointing:  # only passes with grad enabled are checkpointed: the guided ones
        set_gradient_checkpointing(model.unet, True)
    try:
        with text_encoder_parked(model):  # both branches' text is encoded above
            for i, t in enumerate(sched.timesteps):
                t0 = time.perf_counter()
                x_sub, x_mot = x, x
                loss, parts = 0.0, None
                with _subject_scale(model, settings, subject_adapter, i):
                    if i < scs.tau:
                        g = collaborative_guidance(model, recorder, sub, mot, x_sub, x_mot, t, alphas[i],
                                                   scs.stop_at_last_layer, scs.step_mode)
                        x_sub, x_mot, loss = g.x_sub, g.x_mot, g.loss_s_to_m + g.loss_m_to_s
                        parts = {"L_s->m": g.loss_s_to_m, "L_m->s": g.loss_m_to_s, "step_sub": g.step_sub,
                                 "step_mot": g.step_mot}
                        if stats is not None:
                            stats.loss_s_to_m.append(g.loss_s_to_m)
                            stats.loss_m_to_s.append(g.loss_m_to_s)
                            stats.relative_step_sub.append(g.step_sub)
                            stats.relative_step_mot.append(g.step_mot)
                            stats.skipped += g.skipped
                    with adapters_active(model, sub.adapters):
                        eps_sub = _cfg_eps(model, x_sub, t, sub.text, settings.cfg)
                    with adapters_active(model, mot.adapters):
                        eps_mot = _cfg_eps(model, x_mot, t, mot.text, settings.cfg)
                if scs.region_weights is None:
                    eps = combine_branches(eps_sub, eps_mot, scs.beta_s, scs.beta_m)
                else:  # beyond the paper: the subject branch's share where its tokens are attended
                    weight = subject_region_weights(model, recorder, sub, x_sub, t, *scs.region_weights)
                    eps = combine_branches_by_region(eps_sub, eps_mot, weight.to(eps_sub.dtype))
                x_base = x if i >= scs.tau else (scs.beta_s * x_sub + scs.beta_m * x_mot) / wsum
                x = sched.step(eps, t, x_base).prev_sample
                _report(callback, cancel, "scs", i, steps, loss, parts, t0=t0)
    finally:
        if checkpointing:
            set_gradient_checkpointing(model.unet, False)
    return x.to(model.dtype)
