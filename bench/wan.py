"""``make bench``'s Wan section: the sampler ratios on a tiny Wan model, and each stage's cost for Wan 2.1
T2V 1.3B at 480 x 832 with 33 and 81 frames on a fake twin, with the whole customization's time on an
H100 and an RTX 4090.

``python -m bench.run --wan-only`` reruns this section alone, merged into results.json.
"""
from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import torch

from .real_size import FRACTION, GIB, _needs_gib

HEIGHT, WIDTH = 480, 832
FRAME_COUNTS = (33, 81)
# (stage, frames, images, rank): subject = 4 images + one 9-frame prior video (SubjectSettings' 8 frames,
# made 4k + 1), fusion = FusionSettings' 9-frame videos at the fused rank 8; the rest at the video's frames
TRAINING = ("subject", "motion", "fusion", "scs_guided", "inversion")
GOALS_GB = {"training": 24.0, "scs": 24.0}  # issue 17: a 24 GB card, decimal GB


def table(frames: int):
    return (("subject", 9, 4, 4), ("motion", frames, 1, 4), ("fusion", 9, 1, 8), ("scs_guided", frames, 1, 8),
            ("scs_unguided", frames, 1, 8), ("vae_decode", frames, 1, 8), ("inversion", 1, 2, 4),
            ("sample", 9, 1, 8), ("ddim_invert", frames, 1, 8))


def ratios(device: torch.device, repeats: int, size: int, frames: int) -> dict:
    from diffusers import WanPipeline

    from videomage_core.tiny import build_tiny_model

    from .cases import Setup
    from .run import compare

    frames = (max(frames, 2) - 1 + 3) // 4 * 4 + 1  # a Wan video: 4k + 1 frames (8 -> 9)
    with tempfile.TemporaryDirectory() as tmp:
        s = Setup(build_tiny_model(Path(tmp) / "tiny_wan", base="wan"), device, size, frames)
        m = s.model
        pipe = WanPipeline(tokenizer=m.tokenizer, text_encoder=m.text_encoder, transformer=m.unet, vae=m.vae,
                           scheduler=copy.deepcopy(m.scheduler))
        pipe.set_progress_bar_config(disable=True)
        out = {}
        print("Wan: plain sampler vs WanPipeline", flush=True)
        out["wan_plain_vs_diffusers_time_ratio"] = compare(
            "plain sampling", s.sample_plain_base, lambda: s.sample_diffusers(pipe), repeats, device)
        print("Wan: SCS vs plain CFG sampling", flush=True)
        out["wan_scs_vs_plain_time_ratio"] = compare("SCS", s.sample_scs, s.sample_wo_scs, repeats, device)
        out["setup"] = {"size": size, "frames": frames, "sampling_steps": s.sampling_steps, "tau": s.tau,
                        "model": s.describe()}
    return out


def customization_time(rows: list[dict], frames: int) -> dict:
    """ZeroScope's count (``bench.real_size.customization_time``: 2 subjects, a motion, fusion, one 50-step
    SCS video) on the rows of the ``frames``-frame table, on an H100 and an RTX 4090."""
    from .real_size import customization_time as count

    return count([r for r in rows if r["frames_table"] == frames], TRAINING, ("H100 SXM", "RTX 4090"))


def real_size(log=print) -> dict:
    from videomage_core.cost import StageSpec, real_size_twin, run_stage

    t0 = time.perf_counter()
    twin = real_size_twin("wan", torch.bfloat16)
    rows, goals, times = [], {}, {}
    for frames in FRAME_COUNTS:
        for stage, f, images, rank in table(frames):
            if frames != FRAME_COUNTS[0] and stage in ("subject", "fusion", "inversion", "sample"):
                for ckpt in ((False, True) if stage in TRAINING else (False,)):
                    prev = next(r for r in rows if r["stage"] == stage and r["frames_table"] == FRAME_COUNTS[0]
                                and r["checkpointing"] == ckpt)
                    rows.append({**prev, "frames_table": frames})
                continue
            for ckpt in ((False, True) if stage in TRAINING else (False,)):
                spec = StageSpec(stage, frames=f, height=HEIGHT, width=WIDTH, checkpointing=ckpt, images=images,
                                 rank=rank)
                row = run_stage(twin, spec).as_dict()
                row["needs_gib"], row["frames_table"] = _needs_gib(row), frames
                rows.append(row)
                log(f"  {frames:2d} frames {stage:13s} ckpt={ckpt!s:5s} {row['tflops']:8.2f} TFLOP  needs "
                    f"{row['needs_gib']:6.2f} GiB")
        mine = [r for r in rows if r["frames_table"] == frames]

        def best(stages):
            return max(min(r["needs_gib"] for r in mine if r["stage"] == s) for s in stages)

        training, scs = best(("subject", "motion", "fusion", "inversion")), best(("scs_guided", "scs_unguided", "vae_decode"))
        gb = GIB / 1e9
        goals[f"{frames}_frames"] = {
            "training_le_24gb": {"value_gb": round(training * gb, 2), "met": training * gb <= GOALS_GB["training"]},
            "scs_le_24gb": {"value_gb": round(scs * gb, 2), "met": scs * gb <= GOALS_GB["scs"]}}
        times[f"{frames}_frames"] = customization_time(rows, frames)
    from videomage_core.bases import family

    return {"rows": rows, "goals": goals, "customization_time": times, "fraction_of_peak": FRACTION,
            "model": family("wan").real_size()["title"], "seconds": round(time.perf_counter() - t0, 1)}


def run(device: torch.device, repeats: int, size: int, frames: int) -> dict:
    return {"small": ratios(device, repeats, size, frames), "real_size": real_size(),
            "estimator_check": estimator_check()}


def markdown(section: dict | None) -> list[str]:
    lines = ["", "## Wan 2.1", ""]
    if not section:
        return lines + ["Not measured: run `python -m bench.run --wan-only`."]
    small = section["small"]
    lines += ["| ratio | value | goal | A (s) | B (s) |", "|---|---|---|---|---|"]
    for name, goal in (("wan_plain_vs_diffusers_time_ratio", 1.05), ("wan_scs_vs_plain_time_ratio", 2.6)):
        r = small[name]
        lines.append(f"| `{name}` | **{r['ratio']:.3f}** | <= {goal} ({'met' if r['ratio'] <= goal else 'MISSED'}) | "
                     f"{r['a_seconds']:.4f} | {r['b_seconds']:.4f} |")
    st, real = small["setup"], section["real_size"]
    lines += ["", f"Model: {st['model']}; videos {st['frames']} x {st['size']} x {st['size']}, {st['sampling_steps']} "
              f"steps (SCS tau {st['tau']}). plain = our UniPC flow sampler with CFG / diffusers' WanPipeline on the "
              "same modules (which runs CFG as two calls, ours as one batch); SCS = Algorithm 1 / plain sampling "
              "with both LoRAs.", "",
              f"At 480 x 832, estimated on a fake twin of {real['model']} (no GPU here; the estimator of the "
              "ZeroScope section, bf16). umT5 is on the GPU only in the stages that train a token (subject, "
              "inversion: its 10.6 GiB are in their weights); the others run on cached text with it parked on "
              "the CPU. 'frames' is the video's; subject and fusion train on 9-frame videos whatever the motion's:",
              "", "| video | stage | frames | checkpointing | TFLOP | weights GiB | peak GiB | needs GiB |",
              "|---|---|---|---|---|---|---|---|"]
    for r in real["rows"]:
        lines.append(f"| {r['frames_table']} | {r['stage']} | {r['frames']} | {'on' if r['checkpointing'] else 'off'} | "
                     f"{r['tflops']:.2f} | {r['weights_gib']:.2f} | {r['peak_gib']:.2f} | {r['needs_gib']:.2f} |")
    lines += ["", "Goals (the most any stage needs, checkpointing where it helps, in GB):", ""]
    for key, g in real["goals"].items():
        lines.append(f"- {key.replace('_', ' ')}: training {g['training_le_24gb']['value_gb']} GB <= 24 "
                     f"({'met' if g['training_le_24gb']['met'] else 'MISSED'}), SCS {g['scs_le_24gb']['value_gb']} GB "
                     f"<= 24 ({'met' if g['scs_le_24gb']['met'] else 'MISSED'})")
    lines += ["", f"Whole customization (2 subjects, a motion, fusion, one SCS video; counts in "
              f"`bench/wan.py: customization_time`) at {real['fraction_of_peak']:.0%} of each card's bf16 dense "
              "peak (an assumption, not measured), checkpointing where a stage would not fit:", "",
              "| video | card | minutes | PFLOP | fits | checkpointing |", "|---|---|---|---|---|---|"]
    for key, cards in real["customization_time"].items():
        for card, t in cards.items():
            ck = ", ".join(s for s, on in t["checkpointing"].items() if on) or "none"
            lines.append(f"| {key.replace('_', ' ')} | {card} | {t['minutes']} | {t['total_pflop']} | "
                         f"{'yes' if t['fits'] else 'NO'} | {ck} |")
    c = section.get("estimator_check")
    if c:
        lines += ["", f"The estimator on this machine: one {c['stage']} step of the real 1.3B DiT (fp32, CPU, "
                  f"{c['frames']} x {c['height']} x {c['width']}): estimated {c['estimated_gib']} GiB above what is "
                  f"resident, measured {c['measured_gib']} GiB (VmHWM of a fresh process), "
                  f"{c['relative_error']:+.1%} ({'within' if c['within_15_percent'] else 'OUTSIDE'} 15 %)."]
    return lines


# ---- the estimator checked on this machine --------------------------------------------------------
CHECK = {"stage": "motion", "frames": 5, "height": 240, "width": 416}  # 2 latent frames, 780 tokens
CHECK_TEXT = dict(vocab_size=400, d_model=4096, d_kv=64, d_ff=256, num_layers=1, num_heads=4,
                  relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", pad_token_id=0,
                  eos_token_id=1, decoder_start_token_id=0)  # 4096 wide as umT5 (the DiT reads 4096), 1 layer


def _check_parts(tokenizer_dir) -> dict:
    from transformers import AutoTokenizer

    from videomage_core.bases import init_defaults
    from videomage_core.bases.wan import REAL_TRANSFORMER, scheduler, tiny_tokenizer
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    tiny_tokenizer(tokenizer_dir)
    return {"unet": {**init_defaults(WanTransformer3DModel), **REAL_TRANSFORMER}, "text": dict(CHECK_TEXT),
            "vae": {**init_defaults(AutoencoderKLWan), "base_dim": 8}, "scheduler": scheduler(),
            "tokenizer": AutoTokenizer.from_pretrained(tokenizer_dir)}


def estimator_check(log=print) -> dict:
    """The estimate for one motion step of the real Wan 2.1 1.3B DiT (fp32, CPU, a small video; a one-layer
    4096-wide text encoder, which the step does not run) against the measured peak of a fresh process
    (VmHWM above the resident size before the step, as ``bench.real_size.estimator_check``)."""
    import json
    import os
    import subprocess
    import sys

    from videomage_core.cost import StageSpec, build_twin, run_stage

    with tempfile.TemporaryDirectory() as tmp:
        p = _check_parts(tmp)
        twin = build_twin(p["unet"], p["text"], p["vae"], p["tokenizer"], p["scheduler"], torch.float32, base="wan")
    est = run_stage(twin, StageSpec(CHECK["stage"], frames=CHECK["frames"], height=CHECK["height"],
                                    width=CHECK["width"]))
    estimated = (est.peak_bytes - est.resident_bytes) / GIB
    log(f"  Wan estimate: {estimated:.3f} GiB above resident; measuring in a fresh process ...")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    done = subprocess.run([sys.executable, "-m", "bench.wan", "--measure"], capture_output=True, text=True,
                          timeout=1200, env=env, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"measurement failed: {done.stderr[-2000:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    err = estimated / measured["measured_gib"] - 1
    log(f"  measured: {measured['measured_gib']:.3f} GiB ({measured['seconds']:.0f} s) -> {err:+.1%}")
    return {**CHECK, "dtype": "float32", "estimated_gib": round(estimated, 3), **measured,
            "relative_error": round(err, 4), "within_15_percent": abs(err) <= 0.15}


def _measure() -> dict:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from videomage_core.cost import StageSpec
    from videomage_core.model import assemble_model

    from .real_size import measure_step

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        p = _check_parts(tmp)
    parts = {"unet": WanTransformer3DModel.from_config(p["unet"]), "vae": AutoencoderKLWan.from_config(p["vae"]),
             "text_encoder": UMT5EncoderModel(UMT5Config(**p["text"])), "tokenizer": p["tokenizer"],
             "scheduler": p["scheduler"]}
    model = assemble_model(parts, "wan check", torch.device("cpu"), torch.float32, "fp32")
    return measure_step(model, StageSpec(CHECK["stage"], frames=CHECK["frames"], height=CHECK["height"],
                                         width=CHECK["width"]))


if __name__ == "__main__":
    import json
    import sys

    if sys.argv[1:] == ["--measure"]:
        print(json.dumps(_measure()))
    else:
        raise SystemExit("usage: python -m bench.wan --measure")
