"""The training stages of a pretraining run: :class:`_Run` holds one run's device, checkpoints and
log, the VAE helpers (encode, decode, validation PSNR, round-trip ceiling on the held-out cells), the
generic resumable training loop (AdamW, scheduled learning rate, EMA, planning by minutes, pausing
at a deadline or step) and the two stages, VAE and text-to-video; :func:`init_from_model` warm-starts
a run from an earlier model folder. Split out of :mod:`.pretrain`, which re-exports these names."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .controllability import HELD_OUT_CELLS, ground_truth_clips, score_videos, summarize
from .pretrain_checkpoints import Checkpoints, _named_params, _restore_trainer, _trainer_tensors, scheduled_lr
from .pretrain_config import PretrainConfig
from .pretrain_data import _batches, step_seed, vae_images


# --------------------------------------------------------------------------- the run


class _Run:
    def __init__(self, out, cfg: PretrainConfig, device, ckpt_dir, workers, log):
        self.out = Path(out)
        self.cfg = cfg
        self.device = torch.device(device)
        self.ckpt = Checkpoints(ckpt_dir)
        self.workers = workers
        self.log = log
        self.cuda = self.device.type == "cuda"
        self.amp = torch.bfloat16 if self.cuda else None
        self.tok_dir = self.ckpt.dir / "tokenizer"

    def autocast(self):
        if self.amp is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp)

    # ---------------------------------------------------------------- VAE helpers

    def _to_input(self, images_u8: torch.Tensor) -> torch.Tensor:
        """uint8 [..., H, W, 3] -> float [N, 3, H, W] in -1..1 on the device."""
        x = images_u8.to(self.device, non_blocking=True).reshape(-1, *images_u8.shape[-3:])
        return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0

    @torch.no_grad()
    def vae_validate(self, vae, images, masks) -> dict:
        vae.eval()
        mse_all, mse_obj = [], []
        for i in range(0, len(images), 16):
            x = self._to_input(images[i : i + 16])
            with self.autocast():
                rec = vae.decode(vae.encode(x).latent_dist.mean).sample
            err = ((rec.float().clamp(-1, 1) - x) / 2) ** 2  # in 0..1 units
            m = masks[i : i + 16].to(self.device)[:, None].expand_as(err)
            mse_all.append(err.mean().item())
            mse_obj.append((err[m].mean() if m.any() else err.mean()).item())
        vae.train()
        return {
            "psnr": 10 * math.log10(1 / max(np.mean(mse_all), 1e-12)),
            "psnr_objects": 10 * math.log10(1 / max(np.mean(mse_obj), 1e-12)),
        }

    @torch.no_grad()
    def encode(self, vae, frames_u8: torch.Tensor, scaling: float) -> torch.Tensor:
        """uint8 [B, F, H, W, 3] -> latents (B, C, F, h, w) (posterior mean x scaling)."""
        b, f = frames_u8.shape[:2]
        x = self._to_input(frames_u8)
        with self.autocast():
            lat = vae.encode(x).latent_dist.mean
        lat = lat.float() * scaling
        return lat.reshape(b, f, *lat.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()

    @torch.no_grad()
    def decode(self, vae, lat: torch.Tensor, scaling: float) -> np.ndarray:
        b, c, f = lat.shape[:3]
        z = lat.permute(0, 2, 1, 3, 4).reshape(b * f, c, *lat.shape[3:]) / scaling
        out = []
        for i in range(0, len(z), 32):
            with self.autocast():
                out.append(vae.decode(z[i : i + 32]).sample.float())
        x = ((torch.cat(out).clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
        return x.reshape(b, f, *x.shape[1:])

    @torch.no_grad()
    def vae_ceiling(self, vae, scaling: float) -> dict | None:
        """Prompt following of ground-truth held-out clips after a VAE round trip."""
        n = self.cfg.ceiling_per_cell
        if n <= 0:
            return None
        vae.eval()
        rng = np.random.default_rng(step_seed(self.cfg.seed, "ceiling", 0))
        scores = {}
        for cell in HELD_OUT_CELLS:
            clips = ground_truth_clips(cell, n, rng, self.cfg.frames, self.cfg.height, self.cfg.width)
            u8 = torch.from_numpy(np.stack([np.round(c.frames * 255).astype(np.uint8) for c in clips]))
            rec = self.decode(vae, self.encode(vae, u8, scaling), scaling)
            scores[cell.name] = score_videos(
                list(rec), cell.spec(self.cfg.frames, self.cfg.height, self.cfg.width), self.workers
            )
        return {k: v["mean"] for k, v in summarize(scores).overall.items()}

    # ---------------------------------------------------------------- generic loop

    def _plan_total(self, st: dict, default_total: int, minutes: float | None, rate: float, cap: bool) -> int:
        if minutes is None:
            return default_total
        planned = max(st["step"] + 1, int(minutes * 60.0 / max(rate, 1e-6)))
        return min(planned, default_total) if cap else planned

    def _loop(
        self,
        stage: str,
        state: dict,
        modules: dict,
        step_fn: Callable,
        peak_lr: float,
        warmup: int,
        min_frac: float,
        default_total: int,
        minutes: float | None,
        deadline: float | None,
        ema_decay: float | None,
        after_step: Callable | None = None,
        cap: bool = False,
        stop_at: int | None = None,
        ckpt_seconds: float = 300.0,
    ) -> bool:
        """Train ``stage`` until its planned total (True), or until the deadline or step ``stop_at``
        (False, checkpointed: an interruption that ``--resume`` continues exactly)."""
        cfg = self.cfg
        st = state[stage]
        params = _named_params(modules)
        plist = list(params.values())
        for p in plist:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(
            plist,
            lr=peak_lr,
            weight_decay=cfg.weight_decay if stage == "t2v" else 0.0,
            betas=(0.9, 0.999),
            eps=1e-8,
        )
        ema = {k: p.detach().clone().float() for k, p in params.items()} if ema_decay else None
        if st.get("checkpoint"):
            _restore_trainer(self.ckpt, state, stage, params, opt, ema, self.log)
            self.log(f"[{stage}] resumed at step {st['step']}/{st.get('total') or '?'}")
        for m in modules.values():
            m.train()

        def save(final=False):
            st["seconds"] = round(st.get("seconds", 0.0), 2)
            self.ckpt.save(state, stage, st["step"], _trainer_tensors(params, opt, ema, final))

        calib = min(10, max(1, warmup))  # steps timed before planning by minutes (inside the warm-up)
        total = st.get("total")
        if total is None and minutes is None:
            total = st["total"] = default_total
        last_save = time.monotonic()
        window = []
        t_stage = time.monotonic()
        steps_here = 0
        it = None
        stop = total if total else None
        while True:
            if total is not None and st["step"] >= total:
                break
            if deadline is not None and time.monotonic() >= deadline:
                save()
                self.log(f"[{stage}] paused at step {st['step']}/{total}: time limit (resume with --resume)")
                return False
            if it is None:
                it = _batches(
                    stage, cfg, st["step"], stop if stop else st["step"] + calib, self.workers, self.cuda
                )
            try:
                batch = next(it)
            except StopIteration:
                it = None
                continue
            step = st["step"]
            t0 = time.perf_counter()
            for g in opt.param_groups:
                g["lr"] = scheduled_lr(st, step, total or default_total, peak_lr, warmup, min_frac)
            torch.manual_seed(step_seed(cfg.seed, stage, step))  # dropout inside the modules
            loss, parts = step_fn(step, batch)
            if not math.isfinite(loss.item()):
                save()
                raise FloatingPointError(f"[{stage}] loss became {loss.item()} at step {step}")
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(plist, cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if ema is not None:
                d = min(ema_decay, (1 + step) / (10 + step))
                with torch.no_grad():
                    torch._foreach_lerp_(list(ema.values()), [p.detach().float() for p in plist], 1 - d)
            if self.cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            st["step"] = step + 1
            st["seconds"] = st.get("seconds", 0.0) + dt
            st.setdefault("losses", []).append(round(float(loss.item()), 6))
            for k, v in parts.items():
                st.setdefault("parts", {}).setdefault(k, []).append(round(float(v), 6))
            steps_here += 1
            window.append(dt)
            if total is None and st["step"] >= calib:
                rate = float(np.median(window[1:] or window))
                total = self._plan_total(st, default_total, minutes, rate, cap)
                st["total"] = total
                stop = total
                it = None  # re-open the stream up to the total
                self.log(
                    f"[{stage}] planned {total} steps ({rate:.3f} s/step"
                    + (f", {minutes:.1f} min" if minutes is not None else "")
                    + ")"
                )
            if after_step is not None and after_step(st["step"], st):
                total = st["total"] = st["step"]  # e.g. the VAE reached its target
            if st["step"] % max(1, min(100, (total or 100) // 20)) == 0 or st["step"] == total:
                recent = st["losses"][-50:]
                sps = float(np.mean(window[-20:]))
                eta = (total - st["step"]) * sps if total else float("nan")
                self.log(
                    f"[{stage}] step {st['step']}/{total} loss {np.mean(recent):.4f} "
                    f"lr {opt.param_groups[0]['lr']:.2e} {sps:.3f} s/step ETA {eta / 60:.1f} min"
                )
            if stop_at is not None and stop_at <= st["step"] < total:
                save()
                self.log(f"[{stage}] paused at step {st['step']}/{total} (stop_at)")
                return False
            if time.monotonic() - last_save > ckpt_seconds:
                save()
                last_save = time.monotonic()
        st["done"] = True
        st["wall_seconds_stage"] = round(time.monotonic() - t_stage, 1)
        save(final=True)
        for p in plist:
            p.requires_grad_(False)
        if ema is not None:
            with torch.no_grad():
                for k, p in params.items():
                    p.copy_(ema[k])
        return True

    # ---------------------------------------------------------------- stages

    def train_vae(self, state, vae, minutes, deadline) -> bool:
        cfg = self.cfg
        st = state.setdefault("vae", {"step": 0})
        vae.to(self.device)
        if st.get("done"):
            vae.load_state_dict({k[4:]: v for k, v in self.ckpt.load(state, "vae", "params").items()})
            return True
        rng = np.random.default_rng(step_seed(cfg.seed, "vae_val", 0))
        vi, vm = vae_images(rng, cfg.vae_val_images, cfg)
        val_images, val_masks = torch.from_numpy(vi), torch.from_numpy(vm)

        def step_fn(step, batch):
            g = torch.Generator(device=self.device).manual_seed(step_seed(cfg.seed, "vae", step))
            x = self._to_input(batch["images"])
            w = 1.0 + cfg.vae_object_weight * batch["masks"].to(self.device)[:, None].float()
            with self.autocast():
                post = vae.encode(x).latent_dist
                rec = vae.decode(post.sample(generator=g)).sample.float()
            d = rec - x
            recon = (w * (d.abs() + d * d)).mean() / w.mean()
            kl = post.kl().float().mean() / (x.shape[1] * x.shape[2] * x.shape[3])
            return recon + cfg.vae_kl * kl, {"recon": recon.item()}

        def after(step, s):
            if step % cfg.vae_eval_every and step != s.get("total"):
                return False
            m = self.vae_validate(vae, val_images, val_masks)
            s.setdefault("psnr", []).append({"step": step, **{k: round(v, 2) for k, v in m.items()}})
            self.log(f"[vae] step {step}: PSNR {m['psnr']:.2f} dB, objects {m['psnr_objects']:.2f} dB")
            return m["psnr_objects"] >= cfg.vae_psnr_target

        vae_minutes = None if minutes is None else 0.15 * minutes
        done = self._loop(
            "vae",
            state,
            {"vae": vae},
            step_fn,
            cfg.vae_lr,
            cfg.vae_warmup,
            0.1,
            cfg.vae_steps,
            vae_minutes,
            deadline,
            None,
            after,
            cap=True,
        )
        if not done:
            return False
        vae.eval()
        # latent scaling: 1 / std of the latents of the validation frames
        lats = []
        with torch.no_grad():
            for i in range(0, len(val_images), 16):
                with self.autocast():
                    lats.append(vae.encode(self._to_input(val_images[i : i + 16])).latent_dist.mean.float())
        st["scaling_factor"] = float(1.0 / torch.cat(lats).std().clamp_min(1e-6))
        st["final"] = self.vae_validate(vae, val_images, val_masks)
        vae.eval()
        st["ceiling"] = self.vae_ceiling(vae, st["scaling_factor"])
        self.log(
            f"[vae] done: scaling factor {st['scaling_factor']:.4f}, PSNR {st['final']['psnr']:.2f} dB "
            f"(objects {st['final']['psnr_objects']:.2f}), round-trip ceiling {st['ceiling']}"
        )
        self.ckpt.write_state(state)
        return True

    def train_t2v(
        self,
        state,
        unet,
        vae,
        text_encoder,
        scheduler,
        tokenizer,
        minutes,
        deadline,
        stop_at: int | None = None,
    ) -> bool:
        cfg = self.cfg
        st = state.setdefault("t2v", {"step": 0})
        scaling = state["vae"]["scaling_factor"]
        vae.to(self.device).eval().requires_grad_(False)
        unet.to(self.device)
        text_encoder.to(self.device)
        if st.get("done"):
            ema = self.ckpt.load(state, "t2v", "ema")
            unet.load_state_dict({k[5:]: v for k, v in ema.items() if k.startswith("unet.")})
            text_encoder.load_state_dict({k[13:]: v for k, v in ema.items() if k.startswith("text_encoder.")})
            return True
        ids_cache: dict[str, torch.Tensor] = {}
        alphas = scheduler.alphas_cumprod.to(self.device)
        n_train = scheduler.config.num_train_timesteps

        def ids_for(caps):
            for c in set(caps) - ids_cache.keys():
                ids_cache[c] = tokenizer(
                    c,
                    padding="max_length",
                    max_length=tokenizer.model_max_length,
                    truncation=True,
                    return_tensors="pt",
                ).input_ids[0]
            return torch.stack([ids_cache[c] for c in caps]).to(self.device)

        def step_fn(step, batch):
            gseed = step_seed(cfg.seed, "t2v", step)
            gc = torch.Generator().manual_seed(gseed)
            g = torch.Generator(device=self.device).manual_seed(gseed)
            lat = self.encode(vae, batch["frames"], scaling)
            b = lat.shape[0]
            drop = (torch.rand(b, generator=gc) < cfg.caption_dropout).tolist()
            caps = ["" if d else c for c, d in zip(batch["captions"], drop)]
            noise = torch.randn(lat.shape, generator=g, device=self.device)
            t = torch.randint(0, n_train, (b,), generator=g, device=self.device)
            a = alphas[t].view(b, 1, 1, 1, 1)
            noisy = a.sqrt() * lat + (1 - a).sqrt() * noise
            with self.autocast():
                text = text_encoder(ids_for(caps))[0]
                pred = unet(noisy, t, encoder_hidden_states=text).sample
            return F.mse_loss(pred.float(), noise), {}

        t2v_minutes = None
        if minutes is not None:
            t2v_minutes = max(minutes - state["vae"].get("seconds", 0.0) / 60.0, 0.1)
        return self._loop(
            "t2v",
            state,
            {"unet": unet, "text_encoder": text_encoder},
            step_fn,
            cfg.lr,
            cfg.warmup,
            cfg.min_lr_frac,
            cfg.steps,
            t2v_minutes,
            deadline,
            cfg.ema_decay,
            stop_at=stop_at,
        )


def init_from_model(run, state: dict, folder, unet, vae, text_encoder, log) -> None:
    """Warm start from the model in ``folder``. Its VAE, when of this run's architecture, becomes this
    run's finished VAE stage (measured on this run's world once); otherwise this run trains its own VAE.
    Its UNet and text encoder are the t2v stage's starting weights (until that stage has a checkpoint of
    its own, which a resume loads instead): every tensor whose name and shape match (a new latent
    width leaves ``conv_in`` / ``conv_out`` fresh; each one left is logged)."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    if not state.get("vae", {}).get("done"):  # a resume does not read the source VAE again
        src = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True)
        if _same_shapes(src.state_dict(), vae.state_dict()):
            vae.load_state_dict(src.state_dict())
            vae.to(run.device).eval()
            rng = np.random.default_rng(step_seed(run.cfg.seed, "vae_val", 0))
            vi, vm = vae_images(rng, run.cfg.vae_val_images, run.cfg)
            scaling = float(src.config.scaling_factor)
            st = state["vae"] = {"step": 0, "done": True, "scaling_factor": scaling, "init_from": str(folder)}
            st["final"] = run.vae_validate(vae, torch.from_numpy(vi), torch.from_numpy(vm))
            st["ceiling"] = run.vae_ceiling(vae, scaling)
            run.ckpt.save(state, "vae", 0, {"params": {f"vae.{k}": v for k, v in vae.state_dict().items()}})
            log(f"[vae] kept from {folder}: PSNR {st['final']['psnr']:.2f} dB, round-trip ceiling {st['ceiling']}")
        else:
            log(f"[vae] {folder}'s VAE has another architecture: this run trains its own")
    if not state.get("t2v", {}).get("checkpoint"):
        src_unet = UNet3DConditionModel.from_pretrained(folder / "unet", local_files_only=True).state_dict()
        left = _load_matching(unet, src_unet)
        te = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True)
        left += _load_matching(text_encoder, te.state_dict())
        log(f"[t2v] UNet and text encoder start from {folder}" + (f" (left fresh: {', '.join(left)})" if left else ""))


def _same_shapes(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)


def _load_matching(module, source: dict) -> list[str]:
    """Copy every tensor of ``source`` whose name and shape match ``module``'s; return the names left."""
    own = module.state_dict()
    take = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(take, strict=False)
    return sorted(k for k in own if k not in take)
