"""``make bench``'s AnimateDiff section: the sampler ratios on a tiny AnimateDiff model, and the cost of
each stage at AnimateDiff's usual size (16 x 512 x 512, SD1.5 + mm_sd_v15_v2) on a fake twin.

``python -m bench.run --animatediff-only`` reruns this section alone, merged into results.json.
"""
from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import torch

from .real_size import GIB, _needs_gib

FRAMES, HEIGHT, WIDTH = 16, 512, 512
# (stage, frames, images, rank): subject = 4 images + one 8-frame prior video (SubjectSettings'
# prior_frames), fusion = FusionSettings' 8-frame videos at the fused rank 8, SCS and decode 16 frames
TABLE = (("subject", 8, 4, 4), ("motion", FRAMES, 1, 4), ("fusion", 8, 1, 8), ("scs_guided", FRAMES, 1, 8),
         ("scs_unguided", FRAMES, 1, 8), ("vae_decode", FRAMES, 1, 8))
TRAINING = ("subject", "motion", "fusion", "scs_guided")
GOALS_GB = {"training": 14.0, "scs": 20.0}  # issue 16 (ADMotionDirector's 13.5 GB), decimal GB


def ratios(device: torch.device, repeats: int, size: int, frames: int) -> dict:
    from diffusers import AnimateDiffPipeline

    from videomage_core.tiny import build_tiny_model

    from .cases import Setup
    from .run import compare

    with tempfile.TemporaryDirectory() as tmp:
        s = Setup(build_tiny_model(Path(tmp) / "tiny_ad", base="animatediff"), device, size, frames)
        m = s.model
        pipe = AnimateDiffPipeline(vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=m.unet,
                                   motion_adapter=None, scheduler=copy.deepcopy(m.scheduler))
        pipe.set_progress_bar_config(disable=True)
        out = {}
        print("AnimateDiff: plain sampler vs AnimateDiffPipeline", flush=True)
        out["animatediff_plain_vs_diffusers_time_ratio"] = compare(
            "plain sampling", s.sample_plain_base, lambda: s.sample_diffusers(pipe), repeats,
            device)
        print("AnimateDiff: SCS vs plain CFG DDIM", flush=True)
        out["animatediff_scs_vs_plain_time_ratio"] = compare("SCS", s.sample_scs, s.sample_wo_scs, repeats, device)
        out["setup"] = {"size": size, "frames": frames, "sampling_steps": s.sampling_steps, "tau": s.tau,
                        "model": s.describe()}
    return out


def real_size(log=print) -> dict:
    from videomage_core.cost import StageSpec, real_size_twin, run_stage

    t0 = time.perf_counter()
    twin = real_size_twin("animatediff", torch.bfloat16)
    rows = []
    for stage, frames, images, rank in TABLE:
        for ckpt in ((False, True) if stage in TRAINING else (False,)):
            spec = StageSpec(stage, frames=frames, height=HEIGHT, width=WIDTH, checkpointing=ckpt, images=images,
                             rank=rank)
            row = run_stage(twin, spec).as_dict()
            row["needs_gib"] = _needs_gib(row)
            rows.append(row)
            log(f"  {stage:13s} bf16 ckpt={ckpt!s:5s} {row['tflops']:8.2f} TFLOP  needs {row['needs_gib']:6.2f} GiB")

    def best(stages):
        return max(min(r["needs_gib"] for r in rows if r["stage"] == s) for s in stages)

    training, scs = best(("subject", "motion", "fusion")), best(("scs_guided", "scs_unguided", "vae_decode"))
    gb = GIB / 1e9
    goals = {"training_le_14gb": {"value_gb": round(training * gb, 2), "met": training * gb <= GOALS_GB["training"]},
             "scs_le_20gb": {"value_gb": round(scs * gb, 2), "met": scs * gb <= GOALS_GB["scs"]}}
    return {"rows": rows, "goals": goals, "model": twin_title(), "seconds": round(time.perf_counter() - t0, 1)}


def twin_title() -> str:
    from videomage_core.bases import family

    return family("animatediff").real_size()["title"]


def run(device: torch.device, repeats: int, size: int, frames: int) -> dict:
    return {"small": ratios(device, repeats, size, frames), "real_size": real_size()}


def markdown(section: dict | None) -> list[str]:
    lines = ["", "## AnimateDiff", ""]
    if not section:
        return lines + ["Not measured: run `python -m bench.run --animatediff-only`."]
    small = section["small"]
    lines += ["| ratio | value | goal | A (s) | B (s) |", "|---|---|---|---|---|"]
    for name, goal in (("animatediff_plain_vs_diffusers_time_ratio", 1.05), ("animatediff_scs_vs_plain_time_ratio", 2.6)):
        r = small[name]
        lines.append(f"| `{name}` | **{r['ratio']:.3f}** | <= {goal} ({'met' if r['ratio'] <= goal else 'MISSED'}) | "
                     f"{r['a_seconds']:.4f} | {r['b_seconds']:.4f} |")
    st = small["setup"]
    lines += ["", f"Model: {st['model']}; videos {st['frames']} x {st['size']} x {st['size']}, {st['sampling_steps']} "
              f"DDIM steps (SCS tau {st['tau']}). plain = our DDIM+CFG sampler / diffusers' AnimateDiffPipeline on "
              "the same modules; SCS = Algorithm 1 / plain CFG DDIM with both LoRAs.", "",
              f"At AnimateDiff's usual size ({FRAMES} x {HEIGHT} x {WIDTH}), estimated on a fake twin of "
              f"{section['real_size']['model']} (no GPU here; the same estimator as ZeroScope's section, bf16):", "",
              "| stage | frames | checkpointing | TFLOP | peak GiB | needs GiB |", "|---|---|---|---|---|---|"]
    for r in section["real_size"]["rows"]:
        lines.append(f"| {r['stage']} | {r['frames']} | {'on' if r['checkpointing'] else 'off'} | {r['tflops']:.2f} | "
                     f"{r['peak_gib']:.2f} | {r['needs_gib']:.2f} |")
    g = section["real_size"]["goals"]
    lines += ["", f"Goals (the most any stage needs, checkpointing where it helps, in GB): training "
              f"{g['training_le_14gb']['value_gb']} GB <= 14 ({'met' if g['training_le_14gb']['met'] else 'MISSED'}), "
              f"SCS {g['scs_le_20gb']['value_gb']} GB <= 20 ({'met' if g['scs_le_20gb']['met'] else 'MISSED'})."]
    return lines
