"""ZeroScope v2 576w's cost at its real size, without a GPU (``make bench``'s ``real_size`` section).

Each stage's step runs on a fake twin of ZeroScope's exact architecture (``videomage_core.cost``):
FLOPs and the peak memory a CUDA run would allocate, for bf16 and fp16, with and without gradient
checkpointing. From the FLOPs, the whole customization's time on three cards at a stated fraction of
each card's bf16 dense peak. The estimator is checked where this machine can: its peak for one
motion step of the real architecture (random fp32 weights, CPU, a few frames) against the measured
peak of a fresh process (``VmHWM`` minus the resident memory before the step).

``python -m bench.real_size --measure STAGE FRAMES CKPT`` is that fresh process (prints JSON).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

from videomage_core.cost import StageSpec, run_stage, zeroscope_twin
from videomage_core.preflight import FRAGMENTATION, WORKSPACE_BYTES

GIB = 2 ** 30
FRAMES, HEIGHT, WIDTH = 24, 320, 576
# bf16 dense tensor-core peaks with FP32 accumulate (what PyTorch uses), from NVIDIA's documents
CARDS = {
    "H100 SXM": (989.4e12, 80, "H100 Tensor Core GPU datasheet: BF16 1979 TFLOPS with sparsity, 989.4 dense"),
    "RTX 4090": (165.2e12, 24, "Ada Lovelace (AD102) whitepaper, appendix: BF16 tensor with FP32 accumulate "
                               "165.2 TFLOPS (330.4 with sparsity)"),
    "RTX 3090": (71.0e12, 24, "Ampere GA102 whitepaper, appendix: BF16 tensor with FP32 accumulate 71 TFLOPS "
                              "(142 with sparsity)"),
}
FRACTION = 0.40  # assumed share of that peak a UNet3D step sustains (convs + attention); not measured here
CONTEXT_GIB = 0.5  # CUDA context + libraries, not in the allocator's count
# (stage, frames, images, rank): the paper's defaults. Subject: 4 images + one 8-frame prior video;
# fusion: FusionSettings' 8-frame videos, fused rank 2 x 4; SCS and decode: 24 frames.
TABLE = (("subject", 8, 4, 4), ("motion", FRAMES, 1, 4), ("fusion", 8, 1, 8),
         ("scs_guided", FRAMES, 1, 8), ("scs_unguided", FRAMES, 1, 8), ("vae_decode", FRAMES, 1, 8))
TIMING_ONLY = (("inversion", 1, 2, 4), ("sample", 8, 1, 8), ("ddim_invert", FRAMES, 1, 8))
TRAINING = ("subject", "motion", "fusion", "scs_guided")


def _needs_gib(row: dict) -> float:
    """GPU memory the stage needs: the allocator peak plus the pre-flight check's margin."""
    extra = (row["peak_gib"] - row["weights_gib"]) * GIB
    return round((row["weights_gib"] * GIB + extra * (1 + FRAGMENTATION) + WORKSPACE_BYTES) / GIB, 2)


def estimate_table(dtypes=("bf16", "fp16"), log=print) -> list[dict]:
    rows = []
    for name in dtypes:
        twin = zeroscope_twin({"bf16": torch.bfloat16, "fp16": torch.float16}[name])
        for stage, frames, images, rank in TABLE + (TIMING_ONLY if name == "bf16" else ()):
            for ckpt in ((False, True) if stage in TRAINING else (False,)):
                t0 = time.perf_counter()
                spec = StageSpec(stage, frames=frames, height=HEIGHT, width=WIDTH, checkpointing=ckpt,
                                 images=images, rank=rank)
                row = run_stage(twin, spec).as_dict()
                row["needs_gib"] = _needs_gib(row)
                row["timing_only"] = (stage, frames, images, rank) in TIMING_ONLY
                rows.append(row)
                log(f"  {stage:13s} {name} ckpt={ckpt!s:5s} {row['tflops']:8.2f} TFLOP  peak "
                    f"{row['peak_gib']:6.2f} GiB  ({time.perf_counter() - t0:.0f} s)")
    return rows


def _pick(rows, stage, dtype="bfloat16", ckpt=False) -> dict:
    return next(r for r in rows if r["stage"] == stage and r["dtype"] == dtype and r["checkpointing"] == ckpt)


def customization_time(rows: list[dict], training=TRAINING, cards=tuple(CARDS)) -> dict:
    """2 subjects x 300 steps (+ 4 prior videos of 25 steps each), motion 300 inversion + 300 LoRA
    steps, fusion 300 steps (+ 2 x 2 subject videos and a background, 25 steps each), one SCS video
    of 50 steps (15 guided, its noise prior's 50-step inversion, the decode); bf16, checkpointing
    on a stage of ``training`` exactly when it would not fit the card otherwise ("auto")."""
    out = {}
    for card in cards:
        peak, mem_gb, _ = CARDS[card]
        budget = mem_gb * 1e9 / GIB - CONTEXT_GIB
        chosen, fits = {}, True

        def step(stage):
            nonlocal fits
            if stage not in training:
                r = _pick(rows, stage)
            else:
                r = _pick(rows, stage, ckpt=False)
                if r["needs_gib"] > budget:
                    r = _pick(rows, stage, ckpt=True)
                chosen[stage] = r["checkpointing"]
            fits = fits and r["needs_gib"] <= budget
            return r["tflops"] * 1e12

        gen = step("sample")
        parts = {"subjects": 2 * (300 * step("subject") + 4 * 25 * gen),
                 "motion": 300 * step("inversion") + 300 * step("motion"),
                 "fusion": 300 * step("fusion") + 5 * 25 * gen,
                 "scs_video": 15 * step("scs_guided") + 35 * step("scs_unguided") + 50 * step("ddim_invert")
                 + step("vae_decode")}
        rate = peak * FRACTION
        out[card] = {"minutes": round(sum(parts.values()) / rate / 60, 1),
                     "stage_minutes": {k: round(v / rate / 60, 2) for k, v in parts.items()},
                     "total_pflop": round(sum(parts.values()) / 1e15, 1), "checkpointing": chosen,
                     "fits": fits, "memory_gib": round(budget, 1)}
    return out


def measure_in_fresh_process(stage: str, frames: int, ckpt: bool, timeout: int = 600) -> dict:
    """The real architecture's step on the CPU in a new process (fp32, random weights): its peak
    above the resident memory before the step. ``MALLOC_MMAP_THRESHOLD_`` makes glibc return every
    freed block of 64 KiB or more to the system at once, so the resident size follows live memory."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    cmd = [sys.executable, "-m", "bench.real_size", "--measure", stage, str(frames), str(int(ckpt))]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if done.returncode != 0:
        raise RuntimeError(f"measurement failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def estimator_check(frames: int = 2, stage: str = "motion", ckpt: bool = False, log=print) -> dict:
    """Estimated vs measured peak of one step above what is resident before it (within 15 %?)."""
    spec = StageSpec(stage, frames=frames, height=HEIGHT, width=WIDTH, checkpointing=ckpt)
    est = run_stage(zeroscope_twin(torch.float32), spec)
    estimated = (est.peak_bytes - est.resident_bytes) / GIB
    log(f"  estimate: {estimated:.3f} GiB above resident; measuring in a fresh process ...")
    measured = measure_in_fresh_process(stage, frames, ckpt)
    err = estimated / measured["measured_gib"] - 1
    log(f"  measured: {measured['measured_gib']:.3f} GiB ({measured['seconds']:.0f} s) -> {err:+.1%}")
    return {"stage": stage, "frames": frames, "height": HEIGHT, "width": WIDTH, "dtype": "float32",
            "checkpointing": ckpt, "estimated_gib": round(estimated, 3), **measured,
            "relative_error": round(err, 4), "within_15_percent": abs(err) <= 0.15}


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _measure(stage: str, frames: int, ckpt: bool) -> dict:
    """In the fresh process: build the real model, then run the estimator's own step code on it."""
    from bench.full_size import zeroscope_model

    torch.manual_seed(0)
    model = zeroscope_model(torch.device("cpu"), torch.float32)
    return measure_step(model, StageSpec(stage, frames=frames, height=HEIGHT, width=WIDTH, checkpointing=ckpt))


def measure_step(model, spec: StageSpec) -> dict:
    """Run the estimator's own step code on a real model; the process's peak above its resident size
    right before the step (VmHWM, reset there), and the tally's own count of the same step."""
    base = {}

    def before_step():
        with open("/proc/self/clear_refs", "w") as f:  # "5": reset the peak resident size (VmHWM)
            f.write("5")
        base["rss"] = _status("VmRSS")
        base["t0"] = time.perf_counter()

    tally = run_stage(model, spec, before_step=before_step)
    peak = _status("VmHWM") - base["rss"]
    return {"measured_gib": round(peak / GIB, 3), "resident_before_gib": round(base["rss"] / GIB, 3),
            "real_tally_gib": round((tally.peak_bytes - tally.resident_bytes) / GIB, 3),
            "seconds": round(time.perf_counter() - base["t0"], 1), "threads": torch.get_num_threads()}


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--measure":
        print(json.dumps(_measure(sys.argv[2], int(sys.argv[3]), bool(int(sys.argv[4])))))
    else:
        raise SystemExit("usage: python -m bench.real_size --measure STAGE FRAMES CKPT (0/1)")
