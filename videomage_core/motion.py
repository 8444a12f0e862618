"""Appearance-agnostic motion learning (``method.md`` section 2).

Step 1: textual inversion of the reference subjects on one frame (one token each, cropped with the
user's masks, or the whole frame when none). Step 2: a temporal LoRA trained towards
``eps_apfree = (1 + omega) eps - omega eps_theta(x_t, c_ap, t)`` with the frozen base model and
``c_ap = "A static video of <ref1> and <ref2>."``; ``omega = 0`` is the plain loss (w/o L_mot).
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace

import torch

from .artifacts import LoraArtifact
from .checkpointing import set_gradient_checkpointing
from .preflight import resolve_checkpointing
from .data import (check_masks, check_size, check_video, crop_to_mask, fit_to_size, mask_to_latent,
                   motion_frame_indices)
from .diffusion import (add_noise, check_frames, encode_prompts, encode_video, predict_noise, randn,
                        sample_timesteps, training_target, valid_frames_at_most)
from .errors import require
from .lora import (adapters_active, delete_lora, inject_lora, lora_state_dict, lora_targets,
                   trainable_lora_parameters)
from .losses import appearance_free_target, motion_loss, subject_loss
from .model import text_encoder_parked
from .tokens import add_token, get_token_embedding, token_parameters
from .training import LossScale, ParamGroup, run_key, run_training

APPEARANCE_TEMPLATE = "A static video of {subjects}."


@dataclass
class MotionSettings:
    """Paper defaults: rank 4, 300 steps, lr 1e-4 (LoRA) / 1e-3 (tokens), omega 0.5."""

    motion_prompt: str = ""
    reference_words: tuple = ()
    omega: float = 0.5
    steps: int = 300
    inversion_steps: int = 300
    rank: int = 4
    alpha: float | None = None
    lr_lora: float = 1e-4
    lr_token: float = 1e-3
    seed: int = 0
    height: int = 320
    width: int = 576
    frames: int | None = None  # sampled uniformly over the clip; None/0: the model's (24 for ZeroScope)
    frame_index: int | None = None  # frame for the textual inversion; None: the middle one
    appearance_template: str | None = None  # None: the model's, else APPEARANCE_TEMPLATE
    gradient_checkpointing: bool | str = "auto"  # "auto": on when the step would not fit the GPU (preflight)
    coverage: str = "attention"  # the LoRA's layers: the temporal attention projections (the paper), or
    # "all_linear": every Linear of the temporal transformers (MotionDirector; ZeroScope only)
    # beyond the paper: the latents the noise prior inverts ("reference": the reference clip's, the paper;
    # "looks": the mean of the reference's and its renderings' latents, the same paths with their looks averaged)
    noise_prior_from: str = "reference"


NOISE_PRIOR_SOURCES = ("reference", "looks")


def prior_latents(x_videos: list[torch.Tensor], source: str = "reference") -> torch.Tensor:
    """The latents a motion's noise prior inverts: the reference's (``x_videos[0]``, the paper), or with
    "looks" (beyond the paper) their mean over the reference and its renderings, whose paths are the same
    and whose looks differ, so what the mean keeps is mostly where things are."""
    x = x_videos[0] if source == "reference" else torch.stack(x_videos).mean(0)
    return x.detach().float().cpu()


def appearance_prompt(tokens: list[str], template: str = APPEARANCE_TEMPLATE) -> str:
    """``c_ap``: "A static video of <ref1> and <ref2>." (the paper's best template, Table 3c)."""
    subjects = tokens[0] if len(tokens) == 1 else ", ".join(tokens[:-1]) + " and " + tokens[-1]
    return template.format(subjects=subjects)


def reference_tokens(video: torch.Tensor, words, seed: int) -> list[str]:
    """Unique tokens for the reference subjects of this video (e.g. ``<ref1_3fa2c1>``)."""
    pixels = video.detach().to("cpu", torch.float32).mul(255).round().to(torch.uint8)
    digest = hashlib.sha256(pixels.numpy().tobytes()
                            + f"{list(words)}{seed}".encode()).hexdigest()[:6]
    return [f"<ref{i + 1}_{digest}>" for i in range(len(words))]


def _reference_crops(frame, masks, n, height, width):
    """One (image, loss mask) per reference subject: a crop around its mask, or the whole frame."""
    crops, weights = [], []
    for i in range(n):
        if masks is None:
            img, _ = fit_to_size(frame[None], height, width)
            crops.append(img[0])
            weights.append(torch.ones(height, width))
        else:
            img, m = crop_to_mask(frame, masks[i], height, width)
            crops.append(img)
            weights.append(m)
    return torch.stack(crops), torch.stack(weights)


def reference_clip_latents(model, video: torch.Tensor, frames: int, height: int, width: int
                           ) -> tuple[torch.Tensor, list[int]]:
    """The latents ``[1, C, F, h, w]`` of the ``frames`` evenly spaced frames of a reference ``video``
    that a motion trains on (fewer where the base needs another count), and those frames' indices."""
    require(frames >= 2, "frames", f"a motion needs at least 2 frames, got {frames}")
    check_frames(model, frames)
    indices = motion_frame_indices(video.shape[0], frames)
    if len(indices) != valid_frames_at_most(model, len(indices)):  # a short clip on Wan: 8 frames -> 5
        indices = motion_frame_indices(video.shape[0], valid_frames_at_most(model, len(indices)))
    clip, _ = fit_to_size(video[indices], height, width)
    return encode_video(model, clip), indices


def train_motion(model, video: torch.Tensor, settings: MotionSettings, masks: torch.Tensor | None = None,
                 callback=None, cancel=None, checkpoint_path=None, stop_after: int | None = None,
                 renderings: list[torch.Tensor] | None = None) -> LoraArtifact:
    """Learn a motion from one reference video. ``masks``: one mask per reference subject for the
    chosen frame (``[N, H, W]``), optional. Returns the artifact; the model is left as it was.
    ``stop_after`` interrupts the LoRA stage after that many steps (resumable from the checkpoint).
    ``renderings`` (beyond the paper): other videos of the very same motion, of the reference's shape, in
    other looks; each LoRA step then trains on the reference or one of them, drawn uniformly, so the LoRA
    cannot keep the reference's appearance. The textual inversion and ``c_ap`` stay the reference's; the noise
    prior's latents too, unless ``settings.noise_prior_from`` is "looks" (their mean over all the videos).
    """
    video = check_video(video, "video")
    renderings = [check_video(r, "renderings") for r in renderings or []]
    require(all(r.shape == video.shape for r in renderings), "renderings",
            f"expected videos of the reference's shape {tuple(video.shape)}, got "
            f"{[tuple(r.shape) for r in renderings if r.shape != video.shape]}")
    check_size(settings.width, settings.height)
    words = [w.strip() for w in settings.reference_words if w and w.strip()]
    require(len(words) >= 1, "reference_words", "name the reference video's subjects (e.g. 'person, horse')")
    require(bool(settings.motion_prompt and settings.motion_prompt.strip()), "motion_prompt",
            "describe the motion, e.g. 'a person riding a horse'")
    require(settings.steps >= 1 and settings.inversion_steps >= 0, "steps", "expected steps >= 1")
    require(settings.noise_prior_from in NOISE_PRIOR_SOURCES, "noise_prior_from",
            f"expected one of {NOISE_PRIOR_SOURCES}, got {settings.noise_prior_from!r}")
    require(settings.noise_prior_from == "reference" or renderings, "noise_prior_from",
            "'looks' averages the reference with its renderings: give renderings")
    lora_targets(model, "temporal", settings.coverage)  # an unknown coverage is refused before any work
    index = video.shape[0] // 2 if settings.frame_index is None else settings.frame_index
    require(0 <= index < video.shape[0], "frame_index", f"expected 0..{video.shape[0] - 1}, got {index}")
    frame = video[index]
    if masks is not None:
        masks = check_masks(masks, frame[None].expand(len(words), -1, -1, -1), "masks", "reference frame")
    settings = replace(settings, frames=int(settings.frames or model.default("frames", 24)))
    x_video, indices = reference_clip_latents(model, video, settings.frames, settings.height, settings.width)
    x_videos = [x_video] + [reference_clip_latents(model, r, settings.frames, settings.height, settings.width)[0]
                            for r in renderings]
    gen = torch.Generator().manual_seed(int(settings.seed))
    inputs = {"video": video, "masks": masks, **{f"rendering{i}": r for i, r in enumerate(renderings)}}
    run = run_key(model, settings, inputs) if checkpoint_path else ""

    # Step 1: textual inversion of the reference subjects on one frame.
    tokens = reference_tokens(video, words, settings.seed)
    for tok, word in zip(tokens, words):
        add_token(model, tok, init_word=word)
    crops, weights = _reference_crops(frame, masks, len(words), settings.height, settings.width)
    x_crops = torch.cat([encode_video(model, crops[i:i + 1]) for i in range(len(words))])
    w_lat = mask_to_latent(weights, x_crops.shape[-2:]).to(model.device)
    ti_prompts = [f"A {t}" for t in tokens]
    ti_losses = []
    # one decision for both steps (the pre-flight estimate covers the inversion and the LoRA step)
    checkpointing = resolve_checkpointing(model, "motion", settings, images=len(words), video_frames=video.shape[0])
    if settings.inversion_steps > 0:
        def ti_step(step):
            noise = randn(x_crops.shape, gen, model)
            t = sample_timesteps(model, x_crops.shape[0], gen)
            pred = predict_noise(model, add_noise(model, x_crops, noise, t), t, encode_prompts(model, ti_prompts))
            loss = subject_loss(pred, training_target(model, x_crops, noise), w_lat)
            return loss, {"L_ti": loss.detach()}

        set_gradient_checkpointing(model.unet, checkpointing)
        try:
            with adapters_active(model, []):
                ti = run_training("motion_inversion", settings.inversion_steps,
                                  [ParamGroup("token", token_parameters(model, tokens), settings.lr_token)],
                                  ti_step, gen, callback, cancel,
                                  checkpoint_path and f"{checkpoint_path}.inversion", run=run,
                                  loss_scale=LossScale.for_model(model))
        finally:
            set_gradient_checkpointing(model.unet, False)
        ti_losses = ti.losses

    # Step 2: the temporal LoRA with the appearance-free target.
    c_ap = appearance_prompt(tokens, settings.appearance_template
                             or model.default("appearance_template", APPEARANCE_TEMPLATE))
    text_m = encode_prompts(model, [settings.motion_prompt])
    with torch.no_grad():
        text_ap = encode_prompts(model, [c_ap])
    adapter = "train_motion"
    inject_lora(model, adapter, "temporal", settings.rank, settings.alpha, seed=settings.seed,
                coverage=settings.coverage)
    set_gradient_checkpointing(model.unet, checkpointing)
    try:
        loss_scale = LossScale.for_model(model)  # fp16: scaled backward, unscaled by the loop

        def step_fn(step):
            # the reference, or (with renderings) one of its looks; no draw without them, so the paper's
            # path consumes the generator exactly as before
            x0 = x_videos[int(torch.randint(len(x_videos), (1,), generator=gen))] if renderings else x_video
            noise = randn(x0.shape, gen, model)
            t = sample_timesteps(model, 1, gen)
            x_t = add_noise(model, x0, noise, t)
            eps_ap = None
            if settings.omega != 0:
                with torch.no_grad(), adapters_active(model, []):
                    eps_ap = predict_noise(model, x_t, t, text_ap)
            target = appearance_free_target(training_target(model, x0, noise), eps_ap, settings.omega)
            with adapters_active(model, [adapter]):  # backward too: checkpointing recomputes
                loss = motion_loss(predict_noise(model, x_t, t, text_m), target)
                loss_scale.backward(loss)
            return loss.detach(), {"L_mot": loss.detach()}

        params = trainable_lora_parameters(model, adapter)
        with text_encoder_parked(model):  # the LoRA trains on cached text (text_m, text_ap)
            result = run_training("motion", settings.steps, [ParamGroup("lora", params, settings.lr_lora, 1e-2)],
                                  step_fn, gen, callback, cancel, checkpoint_path, stop_after=stop_after, run=run,
                                  loss_scale=loss_scale)
        artifact = LoraArtifact(
            kind="motion", scope="temporal", rank=settings.rank, alpha=model.adapters[adapter]["alpha"],
            lora=lora_state_dict(model, adapter),
            tokens={t: get_token_embedding(model, t) for t in tokens},
            superclasses=dict(zip(tokens, words)), base_fingerprint=model.fingerprint, base=model.family.NAME,
            train_args={**asdict(settings), "reference_frames": int(video.shape[0]),
                        "motion_frames": len(indices), "frame_indices": indices,
                        "masks": masks is not None, "renderings": len(renderings), "resumed_from": result.resumed_from,
                        "seconds": round(result.seconds, 3)},
            losses=result.losses,
            info={"motion_prompt": settings.motion_prompt, "appearance_prompt": c_ap,
                  "inversion_losses": [round(x, 6) for x in ti_losses],
                  "whole_frame_inversion": masks is None, "motion_frames": len(indices),
                  "frame_indices": indices},
            reference_latents=prior_latents(x_videos, settings.noise_prior_from), coverage=settings.coverage)
    finally:
        set_gradient_checkpointing(model.unet, False)
        delete_lora(model, adapter)
    return artifact
