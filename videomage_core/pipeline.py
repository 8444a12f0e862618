"""One call from trained artifacts to a video: what the CLI, the demo and the nodes use."""
from __future__ import annotations

import math

import torch

from .artifacts import LoraArtifact, apply_artifact, check_compatible
from .data import check_video, fit_to_size, motion_frame_indices, prior_frame_indices
from .diffusion import decode_latents, encode_video
from .errors import require
from .lora import adapter_scales, delete_lora
from .sampling import SampleSettings, SCSSettings, ddim_sample, noise_prior_latents, scs_sample
from .tokens import check_prompt_tokens

MODES = ("scs", "wo_scs")
MOTION_WEIGHTS = (0.0, 2.0)  # the range a motion LoRA's weight may take (1 = as trained)


def check_motion_weight(weight, input_name: str) -> float:
    """A motion LoRA's weight: a finite number in ``MOTION_WEIGHTS``."""
    low, high = MOTION_WEIGHTS
    ok = isinstance(weight, (int, float)) and not isinstance(weight, bool) and math.isfinite(weight)
    require(ok and low <= weight <= high, input_name,
            f"expected the motion LoRA's weight in {low:g}..{high:g} (1 = as trained), got {weight!r}")
    return float(weight)


def motion_frames(motion: LoraArtifact | None) -> int | None:
    """The frame count a motion was trained on (its reference clip's), None without one."""
    if motion is None or motion.reference_latents is None:
        return None
    return int(motion.reference_latents.shape[2])


def generate_video(model, subject: LoraArtifact, motion: LoraArtifact | None, prompt: str,
                   settings: SampleSettings, mode: str = "scs", scs: SCSSettings | None = None,
                   noise_prior_beta: float = 0.3, reference_frames: torch.Tensor | None = None,
                   callback=None, cancel=None, stats=None, notes: list | None = None,
                   motion_2: LoraArtifact | None = None, motion_weight: float = 1.0,
                   motion_2_weight: float = 1.0) -> torch.Tensor:
    """Sample a customized video; returns frames ``[F, H, W, 3]`` in 0..1.

    ``mode``: "scs" (the paper's sampler) or "wo_scs" (both LoRAs in one model, plain sampling,
    the ablation). The noise prior inverts ``reference_frames`` if given (sampled uniformly to
    ``settings.frames`` as training samples its clip), else the motion's
    stored reference clip; ``noise_prior_beta = 0`` turns it off. The motion's clip has the frame
    count it was trained on: sampling that many frames (:func:`motion_frames`) keeps its timing; with
    another count a note on how the prior selects frames is appended to ``notes``.

    Beyond the paper (both off by default, and then bit-identical to not having them):

    - ``settings.subject_early_scale`` / ``subject_early_steps``: CustomCrafter's dynamic weighted
      sampling, the subject LoRA scaled down during the first steps (:class:`SampleSettings`); in
      "scs" the subject branch (its guided passes too), in "wo_scs" the subject adapter.
    - ``motion_2``: a second motion combined with the first, as Customize-A-Video combines temporal
      LoRAs: both motion adapters are active together, in the motion branch ("scs") or next to the
      subject ("wo_scs"), each adding its delta times its weight (``motion_weight``,
      ``motion_2_weight``, 0..2, 1 = as trained). It must be a motion trained on this same base model.
      The noise prior still comes from the first motion's reference clip (or ``reference_frames``).
    """
    require(mode in MODES, "mode", f"expected one of {MODES}, got '{mode}'")
    require(subject is not None and subject.kind == "subject", "subject", "expected a trained subject")
    require(motion is None or motion.kind == "motion", "motion", "expected a trained motion")
    require(mode == "wo_scs" or motion is not None, "motion", "SCS needs a motion")
    kind_2 = getattr(motion_2, "kind", type(motion_2).__name__)
    require(motion_2 is None or kind_2 == "motion", "motion_2", f"expected a trained motion, got a {kind_2}")
    require(motion_2 is None or motion is not None, "motion_2",
            "a second motion is combined with the first: give motion too")
    weights = {"gen_motion": check_motion_weight(motion_weight, "motion_weight"),
               "gen_motion_2": check_motion_weight(motion_2_weight, "motion_2_weight")}
    settings.check()
    check_prompt_tokens(prompt, list(subject.tokens))
    if motion_2 is not None:
        check_compatible(model, motion_2, "motion_2")  # before anything is installed
    if notes is not None:
        notes.extend(_option_notes(settings, motion, motion_2, weights))
    try:
        apply_artifact(model, subject, "gen_subject", "subject")
        adapters = ["gen_subject"]
        if motion is not None:
            apply_artifact(model, motion, "gen_motion", "motion")
            adapters.append("gen_motion")
        if motion_2 is not None:
            apply_artifact(model, motion_2, "gen_motion_2", "motion_2")
            adapters.append("gen_motion_2")
        motions = [a for a in adapters if a != "gen_subject"]
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
        with adapter_scales(model, {a: weights[a] for a in motions}):  # 1.0: untouched
            if mode == "scs":
                latents = scs_sample(model, prompt, subject.superclasses, "gen_subject", motions,
                                     settings, scs, latents=x_t, callback=callback, cancel=cancel,
                                     stats=stats)
            else:
                latents = ddim_sample(model, prompt, settings, adapters=adapters, latents=x_t,
                                      callback=callback, cancel=cancel, subject_adapter="gen_subject")
        return decode_latents(model, latents)
    finally:
        for name in ("gen_subject", "gen_motion", "gen_motion_2"):
            if name in model.adapters:
                delete_lora(model, name)


def _option_notes(settings: SampleSettings, motion, motion_2, weights: dict) -> list[str]:
    """What the options beyond the paper did, for the node's info and the CLI's log."""
    out = []
    if settings.dynamic_subject:
        out.append(f"dynamic weighted sampling: subject LoRA at {settings.subject_early_scale:g} for the "
                   f"first {settings.subject_early_steps} of {settings.steps} steps, then 1")
    if motion_2 is not None:
        out.append(f"two motions combined: weights {weights['gen_motion']:g} and "
                   f"{weights['gen_motion_2']:g}; the noise prior comes from the first motion's reference")
    elif motion is not None and weights["gen_motion"] != 1.0:
        out.append(f"motion LoRA at weight {weights['gen_motion']:g}")
    if motion_2 is None and weights["gen_motion_2"] != 1.0:
        out.append("motion_2_weight has no effect without motion_2")
    return out
