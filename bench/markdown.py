"""``bench/RESULTS.md`` is shared by ``make bench`` (speed) and ``make quality``: each owns one section
between HTML-comment markers and rewrites only that one."""

from __future__ import annotations

from pathlib import Path

from videomage_core.atomic import atomic_write_text

ORDER = ("speed", "quality")


def write_section(path: Path, name: str, text: str) -> None:
    """Replace section ``name`` of ``path`` (created if absent), keeping the other sections."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    old = path.read_text() if path.is_file() else ""
    sections = {}
    for other in ORDER:
        s, e = f"<!-- {other}:start -->", f"<!-- {other}:end -->"
        if s in old and e in old:
            sections[other] = old[old.index(s): old.index(e) + len(e)]
    if "speed" not in sections and old.startswith("# Benchmarks") and "<!--" not in old:
        sections["speed"] = f"<!-- speed:start -->\n{old.rstrip()}\n<!-- speed:end -->"  # a file from before
    sections[name] = f"{start}\n{text.rstrip()}\n{end}"
    body = "\n\n".join(sections[k] for k in ORDER if k in sections) + "\n"
    atomic_write_text(path, body)


def real_size_lines(rs: dict | None) -> list[str]:
    """The ``real_size`` section of ``make bench`` (bench/real_size.py) as Markdown lines."""
    lines = ["", "## ZeroScope size without a GPU (estimates)", ""]
    if not rs:
        return lines + ["Not estimated: run `python -m bench.run --real-size-only`."]
    lines += ["Each stage's step run on a fake twin of ZeroScope v2 576w (UNet3D 1.41 B, OpenCLIP-H text "
              "encoder, VAE; no weights allocated) by the engine's own code (`videomage_core/cost.py`): FLOPs "
              "(forward, backward, checkpointing's recompute) and the allocator peak a CUDA run reaches "
              "(live storages, 512-byte blocks); *needs* adds the pre-flight margin (10 % + 0.5 GiB for "
              "fragmentation and cuDNN/cuBLAS workspaces). Sizes 320 x 576; fp16 keeps the VAE in fp32.", "",
              "| stage | frames | dtype | checkpointing | TFLOP | peak GiB | weights GiB | needs GiB |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rs["rows"]:
        if r.get("timing_only"):
            continue
        lines.append(f"| {r['stage']} | {r['frames']} | {r['dtype']} | {'on' if r['checkpointing'] else 'off'} | "
                     f"{r['tflops']:.2f} | {r['peak_gib']:.2f} | {r['weights_gib']:.2f} | {r['needs_gib']:.2f} |")
    extra = [r for r in rs["rows"] if r.get("timing_only")]
    lines += ["", "subject = one step on 4 images + one 8-frame prior video; fusion = 2 subjects' L_fusion + "
              "L_attn on an 8-frame CutMix video (rank 8); scs_guided = one guided step (both branches' "
              "guidance + CFG passes); vae_decode = 24 frames in chunks of 8. For the time only: "
              + ", ".join(f"{r['stage']} {r['tflops']:.2f} TFLOP" for r in extra) + ".", ""]
    lines += [f"Whole customization (2 subjects x 300 steps with 4 prior videos each, motion 300 inversion + "
              f"300 LoRA steps, fusion 300 steps with its 5 generated videos, one 50-step SCS video with its "
              f"noise-prior inversion and decode), bf16, checkpointing only where a stage would not fit the "
              f"card, at {rs['fraction_of_peak']:.0%} of each card's bf16 dense peak (an assumption):", "",
              "| card | bf16 dense TFLOPS | minutes | PFLOP | checkpointing on | fits | source of the peak |",
              "|---|---|---|---|---|---|---|"]
    for card, t in rs["customization"].items():
        c = rs["cards"][card]
        on = ", ".join(k for k, v in t["checkpointing"].items() if v) or "none"
        lines.append(f"| {card} | {c['bf16_dense_tflops']:.1f} | **{t['minutes']}** | {t['total_pflop']} | {on} | "
                     f"{'yes' if t['fits'] else 'NO'} | {c['source']} |")
    ck = rs["check"]
    lines += ["", f"Estimator check (real architecture, random fp32 weights, CPU, {ck['threads']} threads): one "
              f"{ck['stage']} step at {ck['frames']} x {ck['height']} x {ck['width']}, checkpointing "
              f"{'on' if ck['checkpointing'] else 'off'}: estimated **{ck['estimated_gib']:.3f} GiB** above the "
              f"memory resident before the step, measured **{ck['measured_gib']:.3f} GiB** (fresh process, "
              f"VmHWM minus VmRSS before the step; the tally on the real tensors: {ck['real_tally_gib']:.3f} "
              f"GiB): {ck['relative_error']:+.1%} "
              f"({'within' if ck['within_15_percent'] else 'NOT within'} 15 %; {ck['seconds']:.0f} s).", "",
              "Goals (bf16, the better checkpointing setting, with the margin):"]
    g = rs["goals"]
    lines += [f"- training <= 20 GB: {g['training_le_20gb']['value_gib']:.1f} GiB ("
              f"{'met' if g['training_le_20gb']['met'] else 'MISSED'})",
              f"- SCS <= 24 GB: {g['scs_le_24gb']['value_gib']:.1f} GiB ({'met' if g['scs_le_24gb']['met'] else 'MISSED'})",
              f"- whole customization <= 10 min on one H100: {g['customization_le_10min_h100']['value_min']} min "
              f"at {rs['fraction_of_peak']:.0%} of peak ({'met' if g['customization_le_10min_h100']['met'] else 'MISSED'})"]
    return lines


def merge_rows(rows_path, row: dict, key, markdown) -> list[dict]:
    """Merge ``row`` into the JSON list at ``rows_path`` (a row with the same ``key(row)`` is replaced) and
    write ``markdown(rows)`` beside it (``.md``)."""
    import json

    from videomage_core.atomic import atomic_write_json

    rows_path = Path(rows_path)
    rows = json.loads(rows_path.read_text()) if rows_path.is_file() else []
    rows = [r for r in rows if key(r) != key(row)] + [row]
    atomic_write_json(rows_path, rows, indent=1)
    atomic_write_text(rows_path.with_suffix(".md"), markdown(rows))
    return rows
