"""Can this model's temporal layers hold one reference motion at all? An upper bound for any motion LoRA.

    python -m bench.motion_capacity [--model DIR] [--motion orbit] [--steps 1000]
                                    [--variants temporal_modules,lora_linear,lora_projections]

Each variant fine-tunes one part of a ZeroScope-layout model on one reference clip of ShapesWorld (its
caption, the plain diffusion loss, AdamW, ``--steps`` steps, batch 1), then samples from fresh noise
(no noise prior, beta = 0) with the clip's caption and with the generic "a shape <motion> another shape",
and measures motion fidelity (``shapesworld.measures``). The variants:

- ``unet``: every UNet weight;
- ``temporal_modules``: every weight of the temporal layers (temporal attention, its norms, feed-forward
  and projections, and the temporal convolutions): the most any temporal adapter could do;
- ``temporal_attention``: the same without the temporal convolutions;
- ``lora_linear``: a LoRA on every Linear of the temporal transformers (MotionDirector's coverage);
- ``lora_projections``: a LoRA on the engine's motion-LoRA layers (the attention projections only).

If ``temporal_modules`` cannot reproduce the motion, no motion LoRA on this model can, and the base model
(its pretraining) is what to fix. Results are merged into ``bench/motion_capacity.json`` (keyed by model
fingerprint, motion, variant, rank and steps) and ``bench/motion_capacity.md``.
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
import torch


VARIANTS = ("unet", "temporal_modules", "temporal_attention", "lora_linear", "lora_projections")
LRS = {"unet": 2e-4, "temporal_modules": 5e-4, "temporal_attention": 5e-4, "lora_linear": 1e-3,
       "lora_projections": 1e-3}  # the largest that kept each run's loss falling (probes of 2026-11-30)


def _trainable(model, variant: str, rank: int, seed: int) -> tuple[list[torch.nn.Parameter], list[str]]:
    """(parameters to train, adapters to sample with) of ``variant``; LoRAs are injected here."""
    from videomage_core.lora import inject_lora, trainable_lora_parameters

    family = model.family
    if variant.startswith("lora_"):
        coverage = "attention" if variant == "lora_projections" else "all_linear"
        inject_lora(model, "capacity", "temporal", rank, seed=seed, coverage=coverage)
        return trainable_lora_parameters(model, "capacity"), ["capacity"]
    pattern = {"unet": r".*", "temporal_modules": family.TEMPORAL_MODULES,
               "temporal_attention": family.TEMPORAL_MODULES.replace(r"|.*\.temp_convs", "")}[variant]
    return [p for n, p in model.unet.named_parameters() if re.fullmatch(pattern, n)], []


def probe(model_dir: Path, variant: str, motion: str = "orbit", steps: int = 1000, rank: int = 64,
          samples: int = 4, seed: int = 0, size: int | None = None, log=print) -> dict:
    """Fine-tune ``variant`` on one reference clip; motion fidelity of ``samples`` videos per prompt."""
    from videomage_core.diffusion import (add_noise, decode_latents, encode_prompts, encode_video, predict_noise,
                                          randn, sample_timesteps, training_target)
    from videomage_core.errors import require
    from videomage_core.model import load_model
    from videomage_core.sampling import ddim_sample
    from videomage_core.shapesworld import customization as C

    require(variant in VARIANTS, "variant", f"expected one of {list(VARIANTS)}, got '{variant}'")
    model = load_model(model_dir)
    require(hasattr(model.family, "TEMPORAL_MODULES"), "model",
            f"a ZeroScope-layout model (this probe names its temporal layers), got {model.family.NAME}")
    recipe = C.Recipe.for_model(model, **({"size": size} if size else {}))
    ref = C.reference_clip(seed, motion, (), recipe.frames, recipe.size)
    x = encode_video(model, torch.from_numpy(ref.frames).float())
    with torch.no_grad():
        text = encode_prompts(model, [ref.caption])
    params, adapters = _trainable(model, variant, rank, seed)
    # every UNet weight requires grad, only ``params`` step: with only some Conv3d weights requiring grad,
    # torch 2.13's CPU backward crashed (SIGSEGV) in this probe
    for p in model.unet.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=LRS[variant], weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    losses, t0 = [], time.perf_counter()
    from videomage_core.lora import adapters_active

    with adapters_active(model, adapters):
        for step in range(steps):
            noise = randn(x.shape, gen, model)
            t = sample_timesteps(model, 1, gen)
            pred = predict_noise(model, add_noise(model, x, noise, t), t, text)
            loss = torch.nn.functional.mse_loss(pred, training_target(model, x, noise))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if (step + 1) % max(1, steps // 5) == 0:
                log(f"  {variant} step {step + 1}/{steps}: loss {np.mean(losses[-50:]):.4f}")
    seconds = time.perf_counter() - t0
    for p in model.unet.parameters():
        p.requires_grad_(False)
    prompts = {"caption": ref.caption,
               "generic": C.motion_stage_prompt(motion)}
    scores = {}
    for key, prompt in prompts.items():
        scores[key] = []
        for s in range(samples):
            with torch.no_grad():
                video = decode_latents(model, ddim_sample(model, prompt, C.sample_settings(recipe, 4000 + s),
                                                          adapters=adapters))
            scores[key].append(round(C.measure_motion(video, ref), 4))
    return {"variant": variant, "motion": motion, "steps": steps, "lr": LRS[variant],
            "rank": rank if variant.startswith("lora_") else None,
            "trained_parameters": int(sum(p.numel() for p in params)), "seconds": round(seconds, 1),
            "final_loss": round(float(np.mean(losses[-50:])), 5), "size": recipe.size,
            "reference": ref.caption, "prompts": prompts, "motion_fidelity": scores,
            "mean": {k: round(float(np.mean(v)), 3) for k, v in scores.items()},
            "model": str(model_dir), "model_fingerprint": model.fingerprint}


def markdown(rows: list[dict]) -> str:
    lines = ["# Motion capacity of the built-in model's temporal layers", "",
             "Written by `python -m bench.motion_capacity` (see its docstring). Each row fine-tunes one part of "
             "the model on one reference clip (plain diffusion loss, batch 1), then samples 4 videos per prompt "
             "from fresh noise (beta = 0): motion fidelity to the reference, mean (per-seed scores).", "",
             "| model | size | variant | rank | trained params | steps | lr | final loss | caption | generic prompt |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sc = r["motion_fidelity"]
        lines.append(f"| {Path(r['model']).name} `{r['model_fingerprint'][:8]}` | {r['size']} | {r['variant']} | "
                     f"{r['rank'] or '-'} | {r['trained_parameters']:,} | {r['steps']} | {r['lr']:g} | "
                     f"{r['final_loss']:.4f} | {r['mean']['caption']:.2f} ({', '.join(f'{v:.2f}' for v in sc['caption'])}) "
                     f"| {r['mean']['generic']:.2f} ({', '.join(f'{v:.2f}' for v in sc['generic'])}) |")
    return "\n".join(lines) + "\n"


def record(rows_path: Path, row: dict) -> list[dict]:
    """Merge ``row`` into the JSON list at ``rows_path`` (same model, motion, variant, rank, steps: replaced)."""
    from bench.markdown import merge_rows

    fields = ("model_fingerprint", "motion", "variant", "rank", "steps")
    return merge_rows(rows_path, row, lambda r: tuple(r[k] for k in fields), markdown)


def main(argv=None) -> int:
    from videomage_core.pretrained import shapesworld_model_dir
    from videomage_core.shapesworld.generator import HELD_OUT_INTERACTIONS

    p = argparse.ArgumentParser(prog="python -m bench.motion_capacity", description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model folder (default: the built-in ShapesWorld model)")
    p.add_argument("--motion", default="orbit", choices=HELD_OUT_INTERACTIONS)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--rank", type=int, default=64, help="rank of the LoRA variants")
    p.add_argument("--variants", default="temporal_modules,lora_linear,lora_projections",
                   help=f"comma-separated, of {','.join(VARIANTS)}")
    p.add_argument("--results", default="bench/motion_capacity.json")
    a = p.parse_args(argv)
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    if not variants or set(variants) - set(VARIANTS):
        p.error(f"--variants: expected some of {','.join(VARIANTS)}, got '{a.variants}'")
    if a.steps < 1 or a.rank < 1:
        p.error("--steps and --rank must be at least 1")
    model_dir = Path(a.model) if a.model else shapesworld_model_dir()
    for v in variants:
        row = probe(model_dir, v, a.motion, a.steps, a.rank)
        record(Path(a.results), row)
        print(f"{v}: motion fidelity caption {row['mean']['caption']:.2f}, generic {row['mean']['generic']:.2f} "
              f"({row['seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
