"""One call from trained artifacts to a video: what the CLI, the demo and the nodes use."""
from __future__ import annotations

import torch

from .artifacts import LoraArtifact, apply_artifact
from .data import check_video, fit_to_size, motion_frame_indices, prior_frame_indices
from .diffusion import decode_latents, encode_video
from .errors import require
from .lora import delete_lora
from .sampling import SampleSettings, SCSSettings, ddim_sample, noise_prior_latents, scs_sample
from .tokens import check_prompt_tokens

MODES = ("scs", "wo_scs")


def motion_frames(motion: LoraArtifact | None) -> int | None:
    """The frame count a motion was trained on (its reference clip's), None without one."""
    if motion is None or motion.reference_latents is None:
        return None
    return int(motion.reference_latents.shape[2])


def generate_video(model, subject: LoraArtifact, motion: LoraArtifact | None, prompt: str,
                   settings: SampleSettings, mode: str = "scs", scs: SCSSettings | None = None,
                   noise_prior_beta: float = 0.3, reference_frames: torch.Tensor | None = None,
                   callback=None, cancel=None, stats=None, notes: list | None = None) -> torch.Tensor:
    """Sample a customized video; returns frames ``[F, H, W, 3]`` in 0..1.

    ``mode``: "scs" (the paper's sampler) or "wo_scs" (both LoRAs in one model, plain sampling,
    the ablation). The noise prior inverts ``reference_frames`` if given (sampled uniformly to
    ``settings.frames`` as training samples its clip), else the motion's
    stored reference clip; ``noise_prior_beta = 0`` turns it off. The motion's clip has the frame
    count it was trained on: sampling that many frames (:func:`motion_frames`) keeps its timing; with
    another count a note on how the prior selects frames is appended to ``notes``.
    """
    require(mode in MODES, "mode", f"expected one of {MODES}, got '{mode}'")
    require(subject is not None and subject.kind == "subject", "subject", "expected a trained subject")
    require(motion is None or motion.kind == "motion", "motion", "expected a trained motion")
    require(mode == "wo_scs" or motion is not None, "motion", "SCS needs a motion")
    settings.check()
    check_prompt_tokens(prompt, list(subject.tokens))
    try:
        apply_artifact(model, subject, "gen_subject", "subject")
        adapters = ["gen_subject"]
        if motion is not None:
            apply_artifact(model, motion, "gen_motion", "motion")
            adapters.append("gen_motion")
        reference = None
        if reference_frames is not None:
            frames = check_video(reference_frames, "reference_frames")  # sampled as training samples a clip
            frames = frames[motion_frame_indices(frames.shape[0], settings.frames)]
            reference = encode_video(model, fit_to_size(frames, settings.height, settings.width)[0])
        elif motion is not None:
            reference = motion.reference_latents
            if reference is not None and noise_prior_beta > 0 and notes is not None:
                note = prior_frame_indices(reference.shape[2], settings.frames)[1]
                notes.extend([note] if note else [])
        x_t = noise_prior_latents(model, settings, reference, noise_prior_beta)
        if mode == "scs":
            latents = scs_sample(model, prompt, subject.superclasses, "gen_subject", "gen_motion", settings,
                                 scs, latents=x_t, callback=callback, cancel=cancel, stats=stats)
        else:
            latents = ddim_sample(model, prompt, settings, adapters=adapters, latents=x_t,
                                  callback=callback, cancel=cancel)
        return decode_latents(model, latents)
    finally:
        for name in ("gen_subject", "gen_motion"):
            if name in model.adapters:
                delete_lora(model, name)
