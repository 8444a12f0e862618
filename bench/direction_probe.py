"""Why the built-in model ignores direction words: how far each caption word moves the text encoder's
output and the UNet's noise prediction, and a short fine-tune that tests the explanation.

    python -m bench.direction_probe sensitivity [--model DIR]
    python -m bench.direction_probe finetune --arm {plain,distinct} --steps 600 --out DIR

``sensitivity``: for prompts "a <colour> <shape> moving <direction>", the distance between the text
encoder's outputs (and between the UNet's noise predictions at t = 900/600/300 on shared noise) when
one word is swapped: the direction for another direction, the colour for another colour, the shape for
another shape. ``finetune``: continues the built-in model on fresh pretraining clips for ``--steps``
(a warm restart, peak lr 5e-4, EMA 0.995, the pretraining's data mix and loss), with ``--arm distinct``
first giving the four direction words orthonormal token embeddings of norm 1 (the colour words' rows
have norm about 0.34), then tallies the main object's direction on the held-out direction prompts
(as ``bench.direction_confusion``) and prints the sensitivity again. Both arms see the same clips,
noise and timesteps, so their difference is the embedding change. The fine-tuned model is written to
``--out`` (never over the built-in model).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.direction_confusion import DIRECTIONS, detected_directions
from videomage_core.atomic import atomic_write_json
from videomage_core.model import load_model
from videomage_core.pretrained import shapesworld_model_dir
from videomage_core.shapesworld.pretrain import PRESETS, StepBatches, lr_at, step_seed

SWAPS = {
    "direction": [("right", "left"), ("up", "down"), ("left", "up"), ("down", "right")],
    "colour": [("red", "blue"), ("green", "yellow"), ("blue", "green"), ("yellow", "red")],
    "shape": [("circle", "square"), ("square", "triangle"), ("triangle", "circle"), ("circle", "triangle")],
}
PROMPT = "a {colour} {shape} moving {direction}"
BASE = {"colour": "red", "shape": "circle", "direction": "right"}


def _prompt(**words) -> str:
    return PROMPT.format(**{**BASE, **words})


@torch.no_grad()
def sensitivity(model, seeds=(0, 1, 2), timesteps=(900, 600, 300)) -> dict:
    """Mean distance of text output / noise prediction per swapped word kind (see the module doc)."""
    tok, te, unet = model.tokenizer, model.text_encoder, model.unet

    def encode(prompts):
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, return_tensors="pt")
        return te(ids.input_ids.to(model.device))[0]

    out = {}
    for kind, pairs in SWAPS.items():
        a = encode([_prompt(**{kind: x}) for x, _ in pairs])
        b = encode([_prompt(**{kind: y}) for _, y in pairs])
        text_distance = (a - b).flatten(1).norm(dim=1).mean().item()
        n = len(pairs)
        lat = torch.cat([torch.randn(n, 4, 8, 8, 8, generator=torch.Generator().manual_seed(sd))
                         for sd in seeds])
        lat = lat.to(model.device, unet.dtype).repeat(2, 1, 1, 1, 1)  # each noise with a, then with b
        text = torch.cat([a.repeat(len(seeds), 1, 1), b.repeat(len(seeds), 1, 1)])
        eps = []
        for t in timesteps:
            e = unet(lat, torch.full((len(lat),), t, device=model.device), encoder_hidden_states=text).sample
            ea, eb = e.flatten(1).chunk(2)
            eps.append(((ea - eb).norm(dim=1) / ea.norm(dim=1)).mean().item())
        out[kind] = {"text_distance": round(text_distance, 3),
                     "prediction_change": round(float(np.mean(eps)), 4)}
    return out


def direction_tally(model, samples: int = 20, steps: int = 30) -> dict:
    """How often the main object moves, and in the named direction, on the held-out direction prompts."""
    found = [(cell.motion, got) for cell, got in detected_directions(model, samples, steps)]
    named = sum(got == asked for asked, got in found)
    moved = sum(got in DIRECTIONS for _, got in found)
    return {"videos": len(found), "moved": moved, "named_direction": named,
            "named_share": round(named / len(found), 3)}


def distinct_direction_embeddings(text_encoder, tokenizer, seed: int = 0) -> None:
    """Give the four direction words orthonormal token-embedding rows (norm 1)."""
    emb = text_encoder.get_input_embeddings().weight
    ids = [tokenizer.convert_tokens_to_ids(w + "</w>") for w in DIRECTIONS]
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(emb.shape[1], len(ids), generator=g))
    with torch.no_grad():
        emb[ids] = q.T.to(emb.dtype)


def finetune(out: Path, arm: str, steps: int, samples: int = 20, peak_lr: float = 5e-4, warmup: int = 30,
             log=print, sample_steps: int = 30) -> dict:
    src = shapesworld_model_dir()
    out = Path(out)
    if out.exists() or out.resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"--out {out}: give a new folder outside the built-in model")
    shutil.copytree(src, out)
    model = load_model(out)
    unet, te, vae, tok = model.unet, model.text_encoder, model.vae, model.tokenizer
    if arm == "distinct":
        distinct_direction_embeddings(te, tok)
    before = sensitivity(model)
    log(f"[{arm}] sensitivity at the start: {json.dumps(before)}")
    cfg = PRESETS["cpu"]
    data = StepBatches("t2v", cfg)  # clips from steps far past any pretraining run
    first = 10_000_000
    params = [p for m in (unet, te) for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    unet.train(), te.train()
    opt = torch.optim.AdamW(params, lr=peak_lr, weight_decay=cfg.weight_decay)
    ema = [p.detach().clone() for p in params]
    abar = model.scheduler.alphas_cumprod
    scaling = model.latent_scaling
    t0, losses = time.time(), []
    for step in range(steps):
        batch = data[first + step]
        with torch.no_grad():
            x = batch["frames"].reshape(-1, cfg.height, cfg.width, 3).permute(0, 3, 1, 2).float() / 127.5 - 1
            lat = vae.encode(x).latent_dist.mean * scaling
            lat = lat.reshape(cfg.batch, cfg.frames, *lat.shape[1:]).permute(0, 2, 1, 3, 4)
        g = torch.Generator().manual_seed(step_seed(cfg.seed, "t2v", first + step))
        drop = (torch.rand(cfg.batch, generator=g) < cfg.caption_dropout).tolist()
        caps = ["" if d else c for c, d in zip(batch["captions"], drop)]
        noise = torch.randn(lat.shape, generator=g)
        t = torch.randint(0, len(abar), (cfg.batch,), generator=g)
        a = abar[t].view(-1, 1, 1, 1, 1)
        ids = tok(caps, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
        pred = unet(a.sqrt() * lat + (1 - a).sqrt() * noise, t, encoder_hidden_states=te(ids)[0]).sample
        loss = F.mse_loss(pred, noise)
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, steps, peak_lr, warmup, cfg.min_lr_frac)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - cfg.ema_decay)
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            log(f"[{arm}] step {step + 1}/{steps} loss {np.mean(losses[-50:]):.4f} "
                f"{(time.time() - t0) / (step + 1):.2f} s/step")
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    unet.eval(), te.eval()
    unet.requires_grad_(False), te.requires_grad_(False)
    unet.save_pretrained(out / "unet")
    te.save_pretrained(out / "text_encoder")
    after = sensitivity(model)
    log(f"[{arm}] sensitivity after {steps} steps: {json.dumps(after)}")
    tally = direction_tally(model, samples, sample_steps)
    log(f"[{arm}] held-out direction prompts: {json.dumps(tally)}")
    report = {"arm": arm, "steps": steps, "seconds": round(time.time() - t0),
              "loss_last_100": float(np.mean(losses[-100:])),
              "sensitivity_start": before, "sensitivity_end": after, "directions": tally}
    atomic_write_json(out / "direction_probe.json", report, indent=1)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.direction_probe", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sensitivity")
    s.add_argument("--model", help="model folder (default: the built-in ShapesWorld model)")
    s.add_argument("--tally", action="store_true", help="also tally directions on the held-out prompts")
    f = sub.add_parser("finetune")
    f.add_argument("--arm", choices=("plain", "distinct"), required=True)
    f.add_argument("--steps", type=int, default=600)
    f.add_argument("--samples", type=int, default=20, help="seeds per held-out direction prompt")
    f.add_argument("--out", required=True)
    a = p.parse_args(argv)
    torch.manual_seed(0)
    if a.cmd == "sensitivity":
        model = load_model(a.model or shapesworld_model_dir())
        print(json.dumps(sensitivity(model)), flush=True)
        if a.tally:
            print(json.dumps(direction_tally(model)), flush=True)
    else:
        finetune(Path(a.out), a.arm, a.steps, a.samples, log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
