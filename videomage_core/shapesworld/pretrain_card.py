"""What a pretraining run writes besides its checkpoints: the exported diffusers folder and its size,
the sampling defaults (``videomage.json``) the model was trained for, and ``MODEL_CARD.md`` with its
loss curve, data, model, training and controllability sections (the latter rebuilt from the state
when the evaluation is not run again). Split out of :mod:`.pretrain`, which re-exports these names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .controllability import HELD_OUT_CELLS
from .generator import (
    HELD_OUT_INTERACTIONS,
    NAMED_COLOURS,
    NAMED_SHAPES,
    PRETRAIN_INTERACTIONS,
    SHAPES,
    TEXTURE_PROBS,
    TEXTURES,
    VOCABULARY,
)
from .pretrain_config import MAX_MODEL_MB, PretrainConfig
from .pretrain_modules import _n_params


# --------------------------------------------------------------------------- export and card


def folder_mb(folder: Path, model_only: bool = True) -> float:
    from ..bases.zeroscope import COMPONENTS

    files = (
        [p for c in COMPONENTS for p in (folder / c).rglob("*") if p.is_file()]
        if model_only
        else [p for p in folder.rglob("*") if p.is_file()]
    )
    return sum(p.stat().st_size for p in files) / 1e6


def export_model(out: Path, unet, vae, text_encoder, scheduler, tok_dir: Path, scaling: float) -> float:
    """Write the diffusers folder (weights in fp32); returns its size in MB."""
    from ..tiny import save_diffusers_folder

    vae.register_to_config(scaling_factor=float(scaling))
    mods = [m.to("cpu").eval() for m in (unet, vae, text_encoder)]
    save_diffusers_folder(out, *mods, scheduler, tok_dir)
    return folder_mb(out)


def recommended_settings(cfg: PretrainConfig) -> dict:
    """What the model was trained for (``videomage.json`` in the folder; the pack may read it for its
    defaults instead of ZeroScope's 24 x 320 x 576, CFG 9)."""
    return {
        "model": "shapesworld",
        "frames": cfg.frames,
        "height": cfg.height,
        "width": cfg.width,
        "steps": cfg.eval_steps,
        "cfg": cfg.eval_cfg,
        "negative_prompt": "",
        "attention_levels": list(cfg.attention_levels),
        "attention_map_size": list(cfg.map_size),
        "superclass": "shape",
        "vocabulary": list(VOCABULARY),
        # prompts the engine's trainers build, in words this model knows (ZeroScope's defaults such as
        # "a video of a {s}" or "A static video of {subjects}." are outside its vocabulary)
        "prior_captions": ["a {s} standing still", "a {s} moving left", "a {s} moving right", "a {s} moving up"],
        "appearance_template": "{subjects} standing still",
        "subject_video_prompt": "a {token} standing still",
        "background_prompt": "",
        # SCS step size: the paper's 1e4 saturates this small model's latents at 8x8 maps (measured:
        # motion fidelity 0.0 at 1e4, 1e3 and 1e2; 0.98 and 0.45 at 10 on the demo's cell)
        "scs_alpha": 10.0,
    }


def _loss_table(losses: list[float], points: int = 10) -> list[tuple[int, float]]:
    if not losses:
        return []
    n = len(losses)
    w = max(1, n // 50)
    out = []
    for i in sorted({max(1, round(n * k / points)) for k in range(1, points + 1)}):
        out.append((i, float(np.mean(losses[max(0, i - w) : i]))))
    return out


def write_model_card(
    out: Path, cfg: PretrainConfig, state: dict, modules: dict, device: str, report=None, command: str = ""
) -> Path:
    from ..plots import render_pil

    vae_st, t2v_st = state.get("vae", {}), state.get("t2v", {})
    losses = t2v_st.get("losses", [])
    if losses:
        render_pil(
            losses,
            "ShapesWorld text-to-video loss (epsilon MSE)",
            width=640,
            height=360,
            notes=[
                f"{len(losses)} steps, batch {cfg.batch}, {t2v_st.get('seconds', 0) / 60:.1f} min on {device}"
            ],
        ).save(out / "loss_curve.png")
    done = vae_st.get("done") and t2v_st.get("done")
    status = (
        "complete"
        if done
        else (
            f"IN PROGRESS: VAE step {vae_st.get('step', 0)}/{vae_st.get('total')}, "
            f"UNet step {t2v_st.get('step', 0)}/{t2v_st.get('total')}"
        )
    )
    pc = {k: _n_params(m) for k, m in modules.items()}
    fin = vae_st.get("final", {})
    ceil = vae_st.get("ceiling")
    held = "\n".join(f"- {c.prompt}" for c in HELD_OUT_CELLS)
    drawn = [t for t, p in zip(TEXTURES, TEXTURE_PROBS) if p > 0]
    L = [
        "# ShapesWorld base model (VideoMage built-in)",
        "",
        f"Status: **{status}**. Written by `python -m videomage_core.shapesworld.pretrain`"
        + (f" (`{command}`)" if command else "")
        + ".",
        "",
        "A text-to-video model of ZeroScope's architecture (UNet3DConditionModel with the four-level "
        "layout and module names, AutoencoderKL, CLIPTextModel + CLIP BPE tokenizer, DDIM), pretrained "
        + ("on ShapesWorld" + (f" (warm-started from `{Path(state['init_from']).name}`, see Training)"
                               if state.get("init_from") else " from scratch"))
        + " (`videomage_core.shapesworld.generator`), so that every workflow runs "
        "on a CPU in seconds and customization can be measured exactly. Not a general video model.",
        "",
        "## Data",
        f"- {cfg.frames} frames at {cfg.width}x{cfg.height} px, generated on the fly (never repeated): "
        f"{100 * (1 - cfg.p_still_pair) * (1 - cfg.p_interaction):.0f} % one object moving left / right / up / "
        f"down / standing still, {100 * (1 - cfg.p_still_pair) * cfg.p_interaction:.0f} % two-object interactions "
        f"{', '.join(PRETRAIN_INTERACTIONS)}"
        + (f", {100 * cfg.p_still_pair:.0f} % two objects standing still captioned \"{{A}} and {{B}}\""
           if cfg.p_still_pair > 0 else "") + ".",
        f"- Never shown: the interactions {', '.join(HELD_OUT_INTERACTIONS)} (customization motions), and "
        f"these {len(HELD_OUT_CELLS)} held-out prompts (clips with these captions are rejected):",
        held,
        f"- Captions name colours {', '.join(NAMED_COLOURS)} and shapes {', '.join(NAMED_SHAPES)} only; "
        f"the visual space is broader: all hues, shapes {', '.join(SHAPES)} ('shape' in captions), "
        + (f"textures {', '.join(drawn)} (never named)" if len(drawn) > 1 else
           "every object plain (textures are not drawn: this VAE does not resolve them at this size)")
        + ", dark patterned backgrounds.",
        f"- VAE: still frames of the same world with {100 * cfg.vae_rehue:.0f} % of objects re-hued "
        f"uniformly over 0..360 deg and sizes up to {cfg.vae_max_scale}x.",
        f"- Vocabulary ({len(VOCABULARY)} words, each one token): {' '.join(VOCABULARY)}.",
        "",
        "## Model",
        f"- UNet3DConditionModel: channels {tuple(cfg.unet_channels)}, {cfg.unet_layers} layer(s) per block, "
        f"{cfg.unet_heads} heads, cross-attention {cfg.text_dim}; {pc.get('unet', 0) / 1e6:.2f} M "
        f"parameters. Latent {cfg.latent_channels}x{cfg.latent_size[0]}x{cfg.latent_size[1]}; attention maps "
        f"at the recorded level ({' / '.join(cfg.attention_levels)}) are {cfg.map_size[0]}x{cfg.map_size[1]}.",
        f"- AutoencoderKL: channels {tuple(cfg.vae_channels)} (factor {cfg.vae_factor}), "
        f"{pc.get('vae', 0) / 1e6:.2f} M parameters, scaling factor "
        f"{vae_st.get('scaling_factor', float('nan')):.4f}.",
        f"- CLIPTextModel: hidden {cfg.text_dim}, {cfg.text_layers} layers, {cfg.text_heads} heads; "
        f"{pc.get('text_encoder', 0) / 1e6:.2f} M parameters.",
        "- DDIMScheduler: scaled-linear betas 0.00085..0.012, 1000 steps, epsilon prediction (ZeroScope's).",
        f"- Folder size: {folder_mb(out):.1f} MB (limit {MAX_MODEL_MB:.0f} MB). Trained for {cfg.frames} "
        f"frames at {cfg.width}x{cfg.height}; `videomage.json` holds these sampling defaults "
        f"(CFG {cfg.eval_cfg}).",
        "",
        "## Training",
        f"- Device: {device}. Seed {cfg.seed}; every step's randomness is a function of (seed, stage, step).",
        (f"- VAE: kept from `{vae_st['init_from']}` (not retrained); on this world's frames PSNR "
         f"{fin.get('psnr', float('nan')):.2f} dB (object pixels {fin.get('psnr_objects', float('nan')):.2f} dB)."
         if vae_st.get("init_from") else
         f"- VAE: {vae_st.get('step', 0)} steps of {cfg.vae_batch} frames, lr {cfg.vae_lr} cosine, "
         f"{vae_st.get('seconds', 0) / 60:.1f} min; PSNR {fin.get('psnr', float('nan')):.2f} dB "
         f"(object pixels {fin.get('psnr_objects', float('nan')):.2f} dB, target {cfg.vae_psnr_target})."),
        "- VAE round-trip ceiling (prompt following of ground-truth held-out clips after encode + decode): "
        + (", ".join(f"{k} {v:.2f}" for k, v in ceil.items() if v is not None) if ceil else "not measured")
        + ".",
        "- UNet + text encoder: "
        + (f"starting from `{state['init_from']}`'s weights; " if state.get("init_from") else "")
        + f"{t2v_st.get('step', 0)} of {t2v_st.get('total')} steps of {cfg.batch} "
        f"clips, AdamW lr {cfg.lr} (warm-up {cfg.warmup}, cosine to {cfg.min_lr_frac}x), weight decay "
        f"{cfg.weight_decay}, "
        f"grad clip {cfg.grad_clip}, caption dropout {cfg.caption_dropout}, EMA {cfg.ema_decay} (exported); "
        f"{t2v_st.get('seconds', 0) / 60:.1f} min"
        + (f" ({t2v_st['seconds'] / max(t2v_st['step'], 1):.3f} s/step)" if t2v_st.get("step") else "")
        + "".join(
            f"; warm restart at step {r['at']} for {r['steps']} steps (peak lr {r['peak']:g})"
            for r in t2v_st.get("restarts", [])
        )
        + "".join(
            f"; re-planned at step {r['at']} from {r['from']} to {r['to']} steps ({r['why']})"
            for r in t2v_st.get("replans", [])
        )
        + ".",
        "",
        "## Loss curve",
        "![loss](loss_curve.png)" if losses else "(no UNet steps yet)",
        "",
    ]
    if losses:
        L += ["| step | loss (moving average) |", "|---|---|"]
        L += [f"| {i} | {v:.4f} |" for i, v in _loss_table(losses)]
        L.append("")
    L += ["## Controllability (held-out prompts)", ""]
    if report is not None:
        s = report.settings
        L += [
            f"{s.get('samples_per_cell')} samples per prompt, {s.get('steps')} DDIM steps, "
            f"CFG {s.get('cfg')}, "
            f"seeds {s.get('seeds')}; scored with `shapesworld.measures.prompt_following` (exact on ground "
            f"truth). Mean ± 95 % half-width.",
            "",
            report.markdown(),
            "",
            "Targets met: "
            + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in report.meets_targets.items())
            + ".",
            "",
        ]
    else:
        L += [
            "Not measured yet (run `python -m videomage_core.shapesworld.controllability` on this folder).",
            "",
        ]
    L += ["## Config", "```json", json.dumps(cfg.to_dict(), indent=1), "```", ""]
    path = out / "MODEL_CARD.md"
    path.write_text("\n".join(L))
    return path


def _gpu_name() -> str:
    try:
        return f"cuda ({torch.cuda.get_device_name(0)})"
    except Exception:  # noqa: BLE001
        return "cuda"


def _report_from_state(state: dict):
    from .controllability import ControllabilityReport

    ev = state.get("eval")
    if not ev:
        return None
    rep = ControllabilityReport(settings=ev.get("settings", {}), seconds=ev.get("seconds", 0.0))
    rep.cells = {k: {m: v[m] for m in ("colour", "shape", "motion")} for k, v in ev["cells"].items()}
    rep.overall = ev["overall"]
    return rep
