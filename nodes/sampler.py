"""Collaborative Sampler: fused subject + motion -> video frames with SCS (method section 4)."""

from __future__ import annotations

import re
import time

from .common import (
    FLOAT,
    INT,
    SEED,
    SIZE,
    STR,
    clone,
    first_error,
    raise_first,
    run_engine,
    size_error,
    text_image,
    ui_result,
)
from .types import CATEGORY, IMAGE, MODEL, MOTION, STRING, SUBJECT

MODES = {"SCS": "scs", "w/o SCS": "wo_scs"}


def prompt_error(prompt) -> str | None:
    if prompt is None:
        return None
    if not str(prompt).strip():
        return (
            "prompt: write the target prompt with the subjects' tokens, e.g. 'A <my_toy> riding a <my_dog>'"
        )
    if not re.search(r"<[A-Za-z0-9_\-]+>", str(prompt)):
        return (
            f"prompt: {prompt!r} has no subject token in angle brackets; use the trained tokens, "
            "e.g. 'A <my_toy> riding a <my_dog>'"
        )
    return None


def _span(values) -> str:
    """First -> last value of a per-step series, e.g. '0.012 -> 0.0031'."""
    return f"{values[0]:.2g} -> {values[-1]:.2g}" if values else "-"


class VideoMageCollaborativeSampler:
    DESCRIPTION = (
        "Generates a video of the customized subjects performing the learned motion with "
        "Spatial-Temporal Collaborative Sampling (VideoMage, Algorithm 1): a subject branch and "
        "a motion branch guide each other's attention for the first tau steps, then their noise "
        "predictions are mixed. 'w/o SCS' applies both LoRAs at once (the ablation). Outputs "
        "frames for Create Video / Save Video / Save Animated WEBP."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (IMAGE, IMAGE, STRING)
    RETURN_NAMES = ("frames", "guidance_curve", "info")
    OUTPUT_TOOLTIPS = (
        "The video frames [F, H, W, 3].",
        "The attention-alignment losses of the guided steps (SCS only).",
        "What was done.",
    )
    FUNCTION = "sample"
    HAS_INTERMEDIATE_OUTPUT = True  # keep the preview in the history when cached (common.ui_result)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The base model the subject and motion were trained on."}),
                "subject": (SUBJECT, {"tooltip": "A fused subject (several tokens) or a single subject."}),
                "prompt": STR(
                    "A <my_toy> is riding a <my_dog>",
                    "The target prompt with every token of the "
                    "subject; the motion branch gets it with each token replaced by its "
                    "superclass word.",
                    multiline=True,
                ),
                "mode": (
                    list(MODES),
                    {
                        "default": "SCS",
                        "tooltip": "SCS: the paper's sampler (needs a "
                        "motion). w/o SCS: both LoRAs in one model, plain DDIM (comparison).",
                    },
                ),
                "frames": INT(
                    24,
                    2,
                    1024,
                    "Frames to generate (the paper: 24 at 8 fps). Use the motion's frame count to keep its "
                    "timing; with another count the noise prior selects reference frames (see info).",
                ),
                "width": SIZE(576, "Video width"),
                "height": SIZE(320, "Video height"),
                "steps": INT(50, 1, 1000, "DDIM steps (the paper: 50)."),
                "cfg": FLOAT(9.0, 0.0, 100.0, 0.1, "Classifier-free guidance scale (the paper: 9.0)."),
                "seed": SEED("Seed of the initial noise."),
                "tau": INT(15, 0, 1000, "Collaborative guidance during the first tau steps (the paper: 15)."),
                "alpha": FLOAT(
                    10000.0,
                    0.0,
                    1e8,
                    1.0,
                    "Guidance step size alpha_0; alpha_t = alpha_0 * sqrt(1 -> 0.5) over the steps (the "
                    "paper: 1e4 for ZeroScope; the built-in shapesworld_builtin needs 10: 1e4 saturates it).",
                ),
                "beta_s": FLOAT(
                    0.5, 0.0, 1.0, 0.01, "Weight of the subject branch's noise (the paper: 0.5)."
                ),
                "beta_m": FLOAT(0.5, 0.0, 1.0, 0.01, "Weight of the motion branch's noise (the paper: 0.5)."),
                "noise_prior_beta": FLOAT(
                    0.3,
                    0.0,
                    1.0,
                    0.01,
                    "Share of the DDIM-inverted reference clip in "
                    "the initial noise (the paper: 0.3); 0 = plain noise.",
                ),
            },
            "optional": {
                "motion": (MOTION, {"tooltip": "The trained motion (required for SCS)."}),
                "reference_frames": (
                    IMAGE,
                    {
                        "tooltip": "Optional frames to invert for the noise prior "
                        "instead of the motion's own reference clip."
                    },
                ),
                "negative_prompt": STR("", "Optional negative prompt for classifier-free guidance."),
                # beyond the paper, off by default (old workflows without them sample exactly as before)
                "motion_2": (
                    MOTION,
                    {
                        "tooltip": "Optional second trained motion (same base model), combined with the "
                        "first as Customize-A-Video combines temporal LoRAs: both are active together, each "
                        "at its weight. The noise prior still comes from the first motion's reference clip."
                    },
                ),
                "motion_2_weight": FLOAT(
                    1.0,
                    0.0,
                    2.0,
                    0.05,
                    "Weight of motion_2's LoRA (1 = as trained, 0 = no effect); the first motion stays at 1. "
                    "Used only with motion_2.",
                ),
                "subject_early_scale": FLOAT(
                    1.0,
                    0.0,
                    1.0,
                    0.05,
                    "CustomCrafter's dynamic weighted sampling: the subject LoRA's scale during the first "
                    "subject_early_steps steps, where motion and layout form (full scale afterwards, where "
                    "appearance forms). 1 = off.",
                ),
                "subject_early_steps": INT(
                    0,
                    0,
                    1000,
                    "How many of the first sampling steps use subject_early_scale (0 = off; at most steps).",
                ),
                "region_weighting": (["off", "on"], {"default": "off", "tooltip": (
                    "Beyond the paper, SCS only: on = the DDIM step takes the subject branch's prediction where "
                    "the subject tokens are attended (its own cross-attention maps) and the motion branch's "
                    "elsewhere, instead of beta_s / beta_m everywhere. One extra partial UNet pass per step. "
                    "off = the paper.")}),
                "region_outside": FLOAT(
                    0.2, 0.0, 1.0, 0.05,
                    "With region_weighting on: the subject branch's share where its tokens are not attended "
                    "(the motion branch gets the rest).",
                ),
                "region_inside": FLOAT(
                    0.9, 0.0, 1.0, 0.05,
                    "With region_weighting on: the subject branch's share where its tokens are attended most.",
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width, height):
        return first_error(size_error(width, height))

    def sample(
        self,
        model,
        subject,
        prompt,
        mode,
        frames,
        width,
        height,
        steps,
        cfg,
        seed,
        tau,
        alpha,
        beta_s,
        beta_m,
        noise_prior_beta,
        motion=None,
        reference_frames=None,
        negative_prompt="",
        motion_2=None,
        motion_2_weight=1.0,
        subject_early_scale=1.0,
        subject_early_steps=0,
        region_weighting="off",
        region_outside=0.2,
        region_inside=0.9,
    ):
        import torch

        from videomage_core.pipeline import generate_video
        from videomage_core.plots import render_loss_curve
        from videomage_core.preflight import check_memory
        from videomage_core.sampling import SampleSettings, SCSSettings, SCSStats

        raise_first(prompt_error(prompt))

        settings = SampleSettings(
            frames=frames,
            height=height,
            width=width,
            steps=steps,
            cfg=cfg,
            seed=seed,
            negative_prompt=negative_prompt or "",
            subject_early_scale=subject_early_scale,
            subject_early_steps=subject_early_steps,
        )
        scs = SCSSettings(tau=tau, alpha0=alpha, beta_s=beta_s, beta_m=beta_m,
                          region_weights=(region_outside, region_inside) if region_weighting == "on" else None)
        engine_mode = MODES.get(mode, mode)
        stats = SCSStats()
        notes = []
        t0 = time.perf_counter()

        def fn(callback, cancel):
            with torch.inference_mode(False):
                ref = clone(reference_frames)
            check_memory(  # before any GPU work: a clear error instead of out-of-memory halfway
                model, "sample", settings, "frames", mode=engine_mode, tau=scs.tau, ranks=subject.rank,
                checkpointing=bool(getattr(scs, "gradient_checkpointing", False)),
            )
            return generate_video(
                model,
                subject,
                motion,
                prompt,
                settings,
                mode=engine_mode,
                scs=scs,
                noise_prior_beta=noise_prior_beta,
                reference_frames=ref,
                callback=callback,
                cancel=cancel,
                stats=stats,
                notes=notes,
                motion_2=motion_2,
                motion_2_weight=motion_2_weight,
            )

        video = run_engine(fn, f"Sample ({mode})", {"scs" if engine_mode == "scs" else "sample": steps}, model)
        video = video.detach().float().cpu().clamp(0, 1)
        seconds = time.perf_counter() - t0
        if stats.loss_s_to_m:
            total = [a + b for a, b in zip(stats.loss_s_to_m, stats.loss_m_to_s)]
            parts = [{"L_s->m": a, "L_m->s": b} for a, b in zip(stats.loss_s_to_m, stats.loss_m_to_s)]
            curve = render_loss_curve(
                total,
                f"SCS guidance, {len(total)} guided steps",
                parts,
                notes=[
                    f"alpha {alpha:g}, tau {tau}",
                    "relative step ||alpha grad||/||x||: subject "
                    f"{_span(stats.relative_step_sub)}, motion {_span(stats.relative_step_mot)}",
                ],
            )
        else:
            curve = text_image(["no collaborative guidance", f"(mode {mode}, tau {tau})"])
        info = (
            f"{mode}: {video.shape[0]} frames {width}x{height}, {steps} steps, seed {seed}, "
            f"{seconds:.1f} s\nsubject {subject!r}\nmotion {motion!r}"
            + (f"\nmotion_2 {motion_2!r}" if motion_2 is not None else "")
            + "".join(f"\n{n}" for n in notes)
        )
        return ui_result((video, curve, info), info)


NODE_CLASS_MAPPINGS = {"VideoMageCollaborativeSampler": VideoMageCollaborativeSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoMageCollaborativeSampler": "VideoMage Collaborative Sampler (SCS)"}
