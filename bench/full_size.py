"""ZeroScope v2 576w at its real size with random weights (GPU only): seconds and peak memory.

The UNet3D, VAE and CLIP text encoder use ZeroScope's configs (1.41 B UNet parameters); the tokenizer
is the tiny one (ids fit the 49408-row table): the estimator's fake twin has the same configs
(``videomage_core.cost.zeroscope_twin``). Cases: one subject step, one motion step, one fusion
step (each with and without gradient checkpointing), a plain 50-step sampling run and an SCS run
(tau 15) at 24 x 320 x 576, then the estimated time of the whole customization.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

FRAMES, HEIGHT, WIDTH = 24, 320, 576


def zeroscope_model(device: torch.device, dtype: torch.dtype):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from videomage_core.bases import family
    from videomage_core.model import VideoMageModel, model_fingerprint
    from videomage_core.tiny import build_tiny_tokenizer

    tok_dir = Path(tempfile.mkdtemp())
    build_tiny_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    zeroscope = family("zeroscope")
    real = zeroscope.real_size()
    with torch.device(device):
        unet = zeroscope.unet_from_config(real["unet"])  # the UNet3D defaults are ModelScope / ZeroScope's
        vae = AutoencoderKL.from_config(real["vae"])
        text = CLIPTextModel(CLIPTextConfig(**real["text"]))  # OpenCLIP-H's 49408 rows; tiny ids fit
    unet.to(dtype)
    text.to(dtype)
    for m in (unet, vae, text):
        m.requires_grad_(False).eval()
    sched = real["scheduler"]
    return VideoMageModel(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer, scheduler=sched,
                          path="zeroscope_v2_576w (random weights)", fingerprint=model_fingerprint(unet, text),
                          device=device, dtype=dtype)


def _measure(fn, device):
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return {"seconds": time.perf_counter() - t0, "peak_gib": peak}


def run_full_size(device: torch.device, dtype: torch.dtype = torch.float16, steps: int = 3,
                  frames: int = FRAMES, height: int = HEIGHT, width: int = WIDTH, sampling_steps: int = 50) -> dict:
    """Time the real-size stages. The size arguments exist for a CPU smoke run of this code path."""
    from videomage_core.fusion import FusionSettings, fuse_subjects
    from videomage_core.motion import MotionSettings, train_motion
    from videomage_core.pipeline import generate_video
    from videomage_core.sampling import SampleSettings, SCSSettings
    from videomage_core.subject import SubjectSettings, train_subject

    model = zeroscope_model(device, dtype)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, height, width, 3, generator=gen)
    video = torch.rand(frames, height, width, 3, generator=gen)
    size = {"height": height, "width": width}
    cache = tempfile.mkdtemp()
    cases, arts = {}, {}
    for ckpt in (False, True):
        tag = "checkpointing" if ckpt else "no checkpointing"
        for n, tok in enumerate(("<a>", "<b>")):
            st = SubjectSettings(token=tok, superclass="toy", steps=steps, prior_videos=1, prior_steps=2,
                                 prior_frames=min(8, frames), gradient_checkpointing=ckpt, **size)
            art = None

            def run_subject():
                nonlocal art
                art = train_subject(model, images, st, cache_dir=cache)
            warm = _measure(run_subject, device)  # includes the one-off prior video
            arts[tok] = art
            if n == 0:
                cases[f"subject step ({tag})"] = {"seconds": art.train_args["seconds"] / steps,
                                                  "peak_gib": warm["peak_gib"]}
        ms = MotionSettings(motion_prompt="a toy riding a dog", reference_words=("toy", "dog"), steps=steps,
                            inversion_steps=steps, gradient_checkpointing=ckpt, **size)
        motion = None

        def run_motion():
            nonlocal motion
            motion = train_motion(model, video, ms)
        peak = _measure(run_motion, device)["peak_gib"]
        cases[f"motion step, {frames} frames ({tag})"] = {"seconds": motion.train_args["seconds"] / steps, "peak_gib": peak}
        fs = FusionSettings(steps=steps, frames=min(8, frames), generation_steps=2, videos_per_subject=1,
                            cutmix_videos=1, gradient_checkpointing=ckpt, **size)
        fused = None

        def run_fusion():
            nonlocal fused
            fused = fuse_subjects(model, [arts["<a>"], arts["<b>"]], fs, cache_dir=cache)
        peak = _measure(run_fusion, device)["peak_gib"]
        cases[f"fusion step ({tag})"] = {"seconds": fused.train_args["seconds"] / steps, "peak_gib": peak}
    sample = SampleSettings(frames=frames, height=height, width=width, steps=sampling_steps, cfg=9.0)
    for mode in ("wo_scs", "scs"):
        cases[f"sampling {sampling_steps} steps, {mode}"] = _measure(
            lambda: generate_video(model, fused, motion, "A <a> rides a <b>", sample, mode=mode,
                                   scs=SCSSettings(tau=min(15, sampling_steps))), device)
    per = {k.split(" (")[0]: v["seconds"] for k, v in cases.items() if "checkpointing)" in k and "no " not in k}
    total = (2 * 300 * per["subject step"] + 600 * per[f"motion step, {frames} frames"]
             + 300 * per["fusion step"] + cases[f"sampling {sampling_steps} steps, scs"]["seconds"])
    return {"cases": cases, "estimated_customization_minutes": round(total / 60, 1),
            "note": "estimate = 2 x 300 subject steps + 300 inversion + 300 motion steps + 300 fusion steps "
                    "(with checkpointing) + one SCS video; prior/fusion video generation not included"}
