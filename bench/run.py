"""``make bench``: speed and memory ratios measured side by side in one run on the same model.

Each ratio times its two cases alternately (A, B, A, B, ...) and divides the medians, so a busy
machine slows both alike. Peak memory is the resident set (CPU, sampled every 2 ms above the
baseline before the case) or ``torch.cuda.max_memory_allocated`` (GPU). Writes
``bench/results.json`` and ``bench/RESULTS.md``. ``--full-size`` adds ZeroScope's real UNet with
random weights (24 x 320 x 576) when a GPU is present.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

from videomage_core import __version__
from videomage_core.atomic import atomic_write_json
from bench.markdown import real_size_lines, write_section

GOALS = {
    "scs_vs_plain_time_ratio": ("<=", 2.6, "issue 14; was 3.0"),
    "plain_vs_diffusers_time_ratio": ("<=", 1.05, ""),
    "subject_step_vs_parts_ratio": ("<=", 1.10, ""),
    "motion_step_vs_plain_lora_step_ratio": ("<=", 1.45, ""),
    "capture_vs_plain_forward_ratio": ("<=", 1.10, ""),
}


class PeakMemory:
    """Peak extra memory of a block: CUDA allocator peak, or sampled RSS on the CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mib = device, 0.0

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._base, self._max, self._stop = self._rss(), self._rss(), False

        def sample():
            while not self._stop:
                self._max = max(self._max, self._rss())
                time.sleep(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mib = (torch.cuda.max_memory_allocated() - self._base) / 2**20
        else:
            self._stop = True
            self._thread.join()
            self.peak_mib = (max(self._max, self._rss()) - self._base) / 2**20


def timed(fn, device) -> float:
    """Wall time of ``fn()``, or the seconds it reports itself (training loops time their steps only)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    own = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return own if isinstance(own, float) else time.perf_counter() - t0


def compare(name: str, a, b, repeats: int, device, per: float = 1.0) -> dict:
    """Alternate ``a`` and ``b`` ``repeats`` times (after one warm-up each); ratio of medians."""
    a(), b()
    ta, tb = [], []
    mem = {}
    for i in range(repeats):
        for label, fn, acc in (("a", a, ta), ("b", b, tb)):
            if i == 0:
                with PeakMemory(device) as pm:
                    acc.append(timed(fn, device))
                mem[label] = round(pm.peak_mib, 1)
            else:
                acc.append(timed(fn, device))
    ma, mb = statistics.median(ta) / per, statistics.median(tb) / per
    print(f"  {name}: {ma:.4f} s vs {mb:.4f} s -> {ma / mb:.3f}", flush=True)
    return {"ratio": round(ma / mb, 4), "a_seconds": round(ma, 5), "b_seconds": round(mb, 5),
            "a_peak_mib": mem["a"], "b_peak_mib": mem["b"], "repeats": repeats}


def run_small(model_dir: Path, device: torch.device, repeats: int, size: int, frames: int) -> dict:  # noqa: C901
    """The five ratios on one model (the tiny ZeroScope-layout model by default)."""
    from diffusers import TextToVideoSDPipeline

    from .cases import Setup

    s = Setup(model_dir, device, size, frames)
    out = {}
    print("capture vs plain forward", flush=True)
    out["capture_vs_plain_forward_ratio"] = compare("forward", s.forward_capture, s.forward_plain, repeats * 3, device)
    print("plain sampler vs diffusers", flush=True)
    # the pipeline runs the very same modules (LoRA wrappers included), so only the loops differ
    m = s.model
    pipe = TextToVideoSDPipeline(vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=m.unet,
                                 scheduler=copy.deepcopy(m.scheduler))
    pipe.set_progress_bar_config(disable=True)
    out["plain_vs_diffusers_time_ratio"] = compare("plain sampling", s.sample_plain_base,
                                                   lambda: s.sample_diffusers(pipe), repeats, device)
    print("SCS vs plain CFG DDIM", flush=True)
    out["scs_vs_plain_time_ratio"] = compare("SCS", s.sample_scs, s.sample_wo_scs, repeats, device)
    print("subject step vs its parts", flush=True)
    out["subject_step_vs_parts_ratio"] = compare("subject step", s.subject_steps, s.plain_parts_steps, repeats,
                                                 device, per=s.train_steps)
    print("motion step vs plain temporal LoRA step", flush=True)
    out["motion_step_vs_plain_lora_step_ratio"] = compare("motion step", s.motion_steps, s.plain_motion_steps,
                                                          repeats, device, per=s.train_steps)
    out["setup"] = {"size": size, "frames": frames, "capture_size": s.capture_size, "sampling_steps": s.sampling_steps, "tau": s.tau,
                    "train_steps": s.train_steps, "model": s.describe()}
    return out


def run_real_size(check_frames: int) -> dict:
    """ZeroScope's real size without a GPU: the estimate table, the time per card, the CPU check."""
    from .real_size import CARDS, FRACTION, customization_time, estimate_table, estimator_check

    t0 = time.perf_counter()
    print("real size (ZeroScope v2 576w, fake weights): estimating each stage", flush=True)
    rows = estimate_table()
    print("estimator check (real architecture, fp32, CPU)", flush=True)
    check = estimator_check(frames=check_frames)
    times = customization_time(rows)
    return {"rows": rows, "customization": times, "check": check,
            "cards": {k: {"bf16_dense_tflops": v[0] / 1e12, "memory_gb": v[1], "source": v[2]}
                      for k, v in CARDS.items()},
            "fraction_of_peak": FRACTION, "goals": real_size_goals(rows, times),
            "seconds": round(time.perf_counter() - t0, 1)}


def real_size_goals(rows: list[dict], times: dict) -> dict:
    """training <= 20 GB, SCS <= 24 GB (GiB here, the need with the pre-flight margin, bf16, with
    checkpointing where it helps), whole customization <= 10 min on one H100."""
    def best(stage):
        return min(r["needs_gib"] for r in rows if r["stage"] == stage and r["dtype"] == "bfloat16")
    training = max(best(s) for s in ("subject", "motion", "fusion"))
    scs = max(best(s) for s in ("scs_guided", "scs_unguided", "vae_decode"))
    h100 = times["H100 SXM"]["minutes"]
    return {"training_le_20gb": {"value_gib": training, "met": training <= 20},
            "scs_le_24gb": {"value_gib": scs, "met": scs <= 24},
            "customization_le_10min_h100": {"value_min": h100, "met": h100 <= 10}}


def write_results(results: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "results.json", results, indent=2)
    lines = ["# Benchmarks", "", f"Written by `make bench` (videomage_core {results['version']}), "
             f"{results['date']}, on {results['machine']}.", "",
             "Each ratio: both cases timed alternately in one run, ratio of the medians (lower is better).", "",
             "| ratio | value | goal | A (s) | B (s) | A peak MiB | B peak MiB |", "|---|---|---|---|---|---|---|"]
    for name, r in results["small"].items():
        if name == "setup":
            continue
        op, goal, note = GOALS[name]
        ok = "met" if r["ratio"] <= goal else "MISSED"
        lines.append(f"| `{name}` | **{r['ratio']:.3f}** | {op} {goal} {note} ({ok}) | {r['a_seconds']:.4f} | "
                     f"{r['b_seconds']:.4f} | {r['a_peak_mib']} | {r['b_peak_mib']} |")
    setup = results["small"]["setup"]
    lines += ["", f"Model: {setup['model']}; videos {setup['frames']} x {setup['size']} x {setup['size']}, "
              f"{setup['sampling_steps']} DDIM steps (SCS tau {setup['tau']}), {setup['train_steps']} training "
              f"steps per timing; the forward comparison at {setup['frames']} x {setup['capture_size']} x "
              f"{setup['capture_size']}.", "",
              "A/B per ratio: capture = UNet forward with the attention recorder on the default layers / "
              "without; plain = our DDIM+CFG sampler / diffusers' TextToVideoSDPipeline; SCS = Algorithm 1 / "
              "plain CFG DDIM with both LoRAs (w/o SCS); subject = one subject step / a plain LoRA step on "
              "its image batch plus one on its regularization batch; motion = one appearance-agnostic step "
              "(omega 0.5) / a plain temporal LoRA step (omega 0).", "",
              "Peak MiB: on a GPU the allocator's peak above the start of the block; on a CPU the growth of "
              "the process's resident memory, sampled while the block runs, so 0.0 means the block reused "
              "memory the process already held from earlier repeats, not that it needs none.", ""]
    full = results.get("full_size")
    lines.append("## ZeroScope size (random weights)")
    if not full or "skipped" in full:
        lines.append("")
        lines.append(f"Not measured: {full.get('skipped') if full else 'not requested'}.")
    else:
        lines += ["", "| case | seconds | peak GPU GiB |", "|---|---|---|"]
        for k, v in full["cases"].items():
            lines.append(f"| {k} | {v['seconds']:.2f} | {v['peak_gib']:.2f} |")
        lines += ["", f"Estimated whole customization: {full['estimated_customization_minutes']} min "
                  f"({full['note']})."]
    lines += real_size_lines(results.get("real_size"))
    from .animatediff import markdown as animatediff_lines

    lines += animatediff_lines(results.get("animatediff"))
    from .wan import markdown as wan_lines

    lines += wan_lines(results.get("wan"))
    write_section(folder / "RESULTS.md", "speed", "\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--full-size", action="store_true", help="also ZeroScope's real size (needs a GPU)")
    parser.add_argument("--out", default=str(Path(__file__).parent))
    parser.add_argument("--real-size-only", action="store_true",
                        help="only the real-size estimates and the estimator's CPU check, merged into the "
                        "existing results.json (the small-model ratios are kept)")
    parser.add_argument("--no-real-size", action="store_true", help="skip the real-size section")
    parser.add_argument("--animatediff-only", action="store_true",
                        help="only the AnimateDiff section, merged into the existing results.json")
    parser.add_argument("--wan-only", action="store_true",
                        help="only the Wan section, merged into the existing results.json")
    parser.add_argument("--check-frames", type=int, default=2,
                        help="frames of the estimator's CPU check (real architecture, fp32, 320x576)")
    args = parser.parse_args(argv)
    for key, only in (("animatediff", args.animatediff_only), ("wan", args.wan_only)):
        if only:  # one base's section alone, merged into the existing results.json
            import importlib

            section = importlib.import_module(f"bench.{key}")
            results = json.loads((Path(args.out) / "results.json").read_text())
            results[key] = section.run(torch.device(args.device), args.repeats, args.size, args.frames)
            write_results(results, Path(args.out))
            print(f"wrote {args.out}/results.json and RESULTS.md ({key})")
            return 0
    if args.real_size_only:
        results = json.loads((Path(args.out) / "results.json").read_text())
        results["real_size"] = run_real_size(args.check_frames)
        write_results(results, Path(args.out))
        print(f"wrote {args.out}/results.json and RESULTS.md (real_size)")
        return 0
    device = torch.device(args.device)
    results = {"version": __version__, "date": time.strftime("%Y-%m-%d"),
               "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
                          + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ", CPU")}
    from videomage_core.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "tiny")
        results["small"] = run_small(model_dir, device, args.repeats, args.size, args.frames)
    if args.full_size:
        if device.type != "cuda":
            results["full_size"] = {"skipped": "no GPU on this machine"}
        else:
            from .full_size import run_full_size

            results["full_size"] = run_full_size(device)
    else:
        results["full_size"] = {"skipped": "run `python -m bench.run --full-size` on a machine with a GPU"}
    from .animatediff import run as run_animatediff

    results["animatediff"] = run_animatediff(device, args.repeats, args.size, args.frames)
    from .wan import run as run_wan

    results["wan"] = run_wan(device, args.repeats, args.size, args.frames)
    if not args.no_real_size:
        results["real_size"] = run_real_size(args.check_frames)
    elif (Path(args.out) / "results.json").is_file():  # keep the last real-size section
        old = json.loads((Path(args.out) / "results.json").read_text())
        if "real_size" in old:
            results["real_size"] = old["real_size"]
    write_results(results, Path(args.out))
    print(f"wrote {args.out}/results.json and RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
