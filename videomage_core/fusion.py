"""Fusing several subject LoRAs into one (``method.md`` section 3).

Init: the exact average of the subject LoRAs' weight deltas. Loss: ``L_fusion + lambda2 L_attn``;
``L_fusion`` distils each subject model on videos it generated (cached); ``L_attn`` aligns each
token's cross-attention with its mask on CutMix videos (two subjects pasted on a background video).
Masks come from the user's subject images (MASK inputs) or, by default, from the subject model's
own cross-attention of its token while it generates its videos.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from .artifacts import LoraArtifact, apply_artifact
from .attention import AttentionRecorder
from .cache import cached_tensors, tensors_digest
from .checkpointing import set_gradient_checkpointing
from .preflight import resolve_checkpointing
from .data import check_images, check_masks, check_size, fit_to_size, uniform_frame_indices
from .diffusion import (add_noise, decode_latents, encode_prompts, encode_video, latent_masks_to_frames,
                        masks_to_latent_frames, predict_noise, randn, sample_timesteps, snap_frames)
from .errors import require
from .lora import (adapters_active, average_of_deltas, delete_lora, load_lora_state, lora_state_dict,
                   trainable_lora_parameters)
from .losses import attention_mask_loss, attention_objective, fusion_loss, masked_mse, normalize_map
from .model import text_encoder_parked
from .sampling import SampleSettings, ddim_sample
from .tokens import word_positions
from .training import LossScale, ParamGroup, run_key, run_training, within


@dataclass
class FusionSettings:
    """Paper defaults: lambda2 0.6, 250-450 steps (300 here), lr 1e-4, rank kept exact (sum of ranks)."""

    steps: int = 300
    lambda2: float = 0.6
    lr_lora: float = 1e-4
    seed: int = 0
    fused_rank: int | None = None  # None: exact concatenation; an int: SVD-reduced
    videos_per_subject: int = 2
    cutmix_videos: int = 4
    frames: int = 8
    height: int = 320
    width: int = 576
    generation_steps: int = 25
    cfg: float | None = None  # None: the model's sampling cfg (videomage.json), else 9.0 (the paper's)
    subject_prompt: str | None = None  # None: the model's ``subject_video_prompt``, else SUBJECT_PROMPT
    background_prompt: str | None = None  # None: the model's ``background_prompt``, else BACKGROUND_PROMPT
    mask_threshold: float = 0.5
    # beyond the paper: weight of a plain diffusion loss on the CutMix pair videos with their caption
    # ("a <s1> and a <s2>"), so the fused LoRA also learns to draw the subjects together; 0: L_attn alone reads
    # those videos (the paper)
    pair_denoising: float = 0.0
    levels: tuple | None = None  # None: the model's attention_levels
    gradient_checkpointing: bool | str = "auto"  # "auto": on when the step would not fit the GPU (preflight)


SUBJECT_PROMPT = "a video of a {token}"
BACKGROUND_PROMPT = "an empty background"


def resolve_prompts(model, settings: FusionSettings) -> FusionSettings:
    """Fill the prompts, attention levels and generation cfg left to the model (its ``videomage.json``)
    or to ZeroScope's defaults."""
    return replace(settings,
                   cfg=float(model.default("cfg", 9.0)) if settings.cfg is None else settings.cfg,
                   levels=tuple(settings.levels or model.attention_levels),
                   subject_prompt=settings.subject_prompt or model.default("subject_video_prompt", SUBJECT_PROMPT),
                   background_prompt=settings.background_prompt if settings.background_prompt is not None
                   else model.default("background_prompt", BACKGROUND_PROMPT))


def attention_mask(maps: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """A soft token map ``(F, h, w)`` -> binary mask: per-frame peak-normalised, 3x3 smoothed, thresholded."""
    m = normalize_map(maps.float())
    m = F.avg_pool2d(m[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
    return (normalize_map(m) >= threshold).float()


def uses_cutmix(settings) -> bool:
    """Whether fusion builds and trains on CutMix pair videos: for L_attn, or for pair_denoising."""
    return settings.lambda2 > 0 or settings.pair_denoising > 0


def generation_steps(settings, subjects: int, background_given: bool = False) -> int:
    """How many sampling steps fusion's data takes (its ``fusion_videos`` progress stage): each
    subject's videos, and the CutMix background when :func:`uses_cutmix` and none is given."""
    videos = subjects * settings.videos_per_subject + (1 if uses_cutmix(settings) and not background_given else 0)
    return videos * settings.generation_steps


def _generate_subject_videos(model, adapter, token, settings, cache_dir, cancel, progress=None):
    """Videos of one subject model from its prompt, and masks from its own token attention.
    ``progress(v)``: the callback for video ``v``'s sampling steps."""
    prompt = settings.subject_prompt.format(token=token)
    col = word_positions(model.tokenizer, prompt, [token])[0]
    recipe = {"base": model.fingerprint, "adapter_state": adapter["digest"], "prompt": prompt,
              "n": settings.videos_per_subject, "f": settings.frames, "h": settings.height,
              "w": settings.width, "steps": settings.generation_steps, "cfg": settings.cfg,
              "seed": settings.seed, "levels": list(settings.levels), "thr": settings.mask_threshold}

    def produce():
        out = {}
        recorder = AttentionRecorder(model.unet, levels=settings.levels, temporal=False)
        for v in range(settings.videos_per_subject):
            st = SampleSettings(frames=settings.frames, height=settings.height, width=settings.width,
                                steps=settings.generation_steps, cfg=settings.cfg,
                                seed=settings.seed * 1000 + v)
            acc = []

            def on_maps(i, rec):
                if i >= st.steps // 2:  # the later steps, where the layout has settled
                    acc.append(rec.spatial_maps()[1, :, col].mean(1).detach())

            lat = ddim_sample(model, prompt, st, adapters=[adapter["name"]], cancel=cancel,
                              recorder=recorder, on_maps=on_maps, callback=progress and progress(v))
            out[f"latents.{v}"] = lat.float().cpu()
            out[f"frames.{v}"] = decode_latents(model, lat)
            small = latent_masks_to_frames(model, attention_mask(torch.stack(acc).mean(0), settings.mask_threshold),
                                           settings.frames)
            out[f"masks.{v}"] = F.interpolate(small[:, None], size=(settings.height, settings.width),
                                              mode="bilinear")[:, 0].gt(0.5).float().cpu()
        return out

    return cached_tensors(cache_dir, "fusion_videos", recipe, produce)


def _shift(x: torch.Tensor, dx: int) -> torch.Tensor:
    """Shift ``[..., W]``-last tensors by ``dx`` pixels, filling with zeros."""
    out = torch.zeros_like(x)
    if dx >= 0:
        out[..., dx:] = x[..., : x.shape[-1] - dx]
    else:
        out[..., :dx] = x[..., -dx:]
    return out


def cutmix_background(frames, count: int, height: int, width: int) -> torch.Tensor:
    """A user's CutMix background as ``count`` frames of ``height`` x ``width``: a still repeats, a
    video is sampled evenly over its length (``data.uniform_frame_indices``), both centre-cropped and resized."""
    frames = check_images(frames, "background")
    frames, _ = fit_to_size(frames, height, width)
    if frames.shape[0] == 1:
        return frames.expand(count, -1, -1, -1)
    return frames[uniform_frame_indices(frames.shape[0], count)]


def _generated_background(model, settings, cache_dir, cancel, callback) -> torch.Tensor:
    """The paper's CutMix background: a video the base model generates from the background prompt (cached)."""
    recipe = {"base": model.fingerprint, "p": settings.background_prompt, "f": settings.frames,
              "h": settings.height, "w": settings.width, "steps": settings.generation_steps,
              "cfg": settings.cfg, "seed": settings.seed}
    sample = SampleSettings(frames=settings.frames, height=settings.height, width=settings.width,
                            steps=settings.generation_steps, cfg=settings.cfg, seed=settings.seed)
    return cached_tensors(cache_dir, "background", recipe, lambda: {
        "frames": decode_latents(model, ddim_sample(model, settings.background_prompt, sample, cancel=cancel,
                                                    callback=callback))})["frames"]


def cutmix_video(background: torch.Tensor, sources, gen: torch.Generator, overlap: float = 0.15):
    """Paste two subjects (frames ``[F, H, W, 3]`` + masks ``[F, H, W]``) onto ``background``: the
    first centred near the left third, the second near the right third, with some overlap allowed.
    Returns (video, [mask_1, mask_2]); the second subject is on top."""
    frames = background.clone()
    w = background.shape[2]
    placed = []
    for k, (src, mask) in enumerate(sources):
        cx = (mask.sum((0, 1)) * torch.arange(w)).sum() / mask.sum().clamp_min(1)
        jitter = (torch.rand(1, generator=gen).item() - 0.5) * 2 * overlap
        target = w * ((1 / 3 if k == 0 else 2 / 3) + jitter)
        dx = int(round(target - float(cx)))
        src = _shift(src.permute(0, 3, 1, 2), dx).permute(0, 2, 3, 1)
        mask = _shift(mask, dx)
        frames = frames * (1 - mask[..., None]) + src * mask[..., None]
        placed.append(mask)
    placed[0] = placed[0] * (1 - placed[1])
    return frames, placed


def fuse_subjects(model, subjects: list[LoraArtifact], settings: FusionSettings,
                  subject_images: list | None = None, callback=None, cancel=None, checkpoint_path=None,
                  cache_dir=None, stop_after: int | None = None,
                  background: torch.Tensor | None = None) -> LoraArtifact:
    """Fuse 2+ subjects into one spatial LoRA holding every token.

    ``subject_images``: optional ``[(images [N,H,W,3], masks [N,H,W]), ...]`` per subject; with it
    the CutMix sources are the user's masked images (as still videos) instead of generated videos
    with attention-derived masks. ``background``: optional frames ``[F, H, W, 3]`` (one frame: a still)
    the CutMix videos are pasted on, instead of a video the base model generates from the background
    prompt (the paper's; a base that cannot draw an empty scene puts an object there, which L_attn then
    teaches every token to ignore). Returns the fused artifact; the model is left as it was.
    """
    require(len(subjects) >= 2, "subjects", f"fusion needs at least 2 subjects, got {len(subjects)}")
    settings = resolve_prompts(model, settings)
    require(all(a.kind == "subject" for a in subjects), "subjects", "every input must be a subject")
    tokens = [t for a in subjects for t in a.tokens]
    require(len(set(tokens)) == len(tokens), "subjects", f"two subjects share a token: {tokens}")
    check_size(settings.width, settings.height)
    require(settings.frames >= 2, "frames", f"a video needs at least 2 frames, got {settings.frames}")
    settings = replace(settings, frames=snap_frames(model, settings.frames))  # 8 -> 9 on Wan
    if subject_images is not None:
        require(len(subject_images) == len(subjects), "subject_images",
                f"{len(subject_images)} image sets for {len(subjects)} subjects")
    if background is not None:
        background = cutmix_background(background, settings.frames, settings.height, settings.width)
    gen = torch.Generator().manual_seed(int(settings.seed))
    names = []
    try:
        for n, art in enumerate(subjects):
            apply_artifact(model, art, f"fuse_src{n}", f"subjects[{n}]")
            names.append(f"fuse_src{n}")
        # per subject: generated videos (L_fusion data) and their attention masks
        data = []
        total = generation_steps(settings, len(subjects), background is not None)
        per_video = settings.generation_steps
        for n, art in enumerate(subjects):
            digest = tensors_digest({**art.lora, **art.tokens})
            first = n * settings.videos_per_subject

            def progress(v, first=first):
                return within(callback, "fusion_videos", (first + v) * per_video, total)

            data.append(_generate_subject_videos(model, {"name": names[n], "digest": digest},
                                                 list(art.tokens)[0], settings, cache_dir, cancel, progress))
        texts = [encode_prompts(model, [settings.subject_prompt.format(token=list(a.tokens)[0])])
                 for a in subjects]

        # CutMix videos for L_attn (and pair_denoising)
        cutmix = []
        if uses_cutmix(settings):
            bg = background if background is not None else _generated_background(
                model, settings, cache_dir, cancel, within(callback, "fusion_videos", total - per_video, total))
            sources = []
            for n in range(len(subjects)):
                if subject_images is not None:
                    imgs = check_images(subject_images[n][0], f"subject_images[{n}]")
                    msk = check_masks(subject_images[n][1], imgs, f"subject_images[{n}] masks")
                    require(msk is not None, f"subject_images[{n}]", "masks are required")
                    imgs, msk = fit_to_size(imgs, settings.height, settings.width, msk)
                    sources.append([(imgs[i:i + 1].expand(settings.frames, -1, -1, -1),
                                     msk[i:i + 1].expand(settings.frames, -1, -1)) for i in range(len(imgs))])
                else:
                    d = data[n]
                    sources.append([(d[f"frames.{v}"], d[f"masks.{v}"])
                                    for v in range(settings.videos_per_subject)])
            for _ in range(settings.cutmix_videos):
                pair = torch.randperm(len(subjects), generator=gen)[:2].tolist()
                picks = [sources[p][int(torch.randint(0, len(sources[p]), (1,), generator=gen))] for p in pair]
                video, masks = cutmix_video(bg, picks, gen)
                caption = f"a {tokens[pair[0]]} and a {tokens[pair[1]]}"
                cutmix.append({"latents": encode_video(model, video),
                               "masks": [masks_to_latent_frames(model, m)[None] for m in masks],
                               "text": encode_prompts(model, [caption]),
                               "columns": word_positions(model.tokenizer, caption,
                                                         [tokens[pair[0]], tokens[pair[1]]]),
                               "frames": video})

        states = [a.lora for a in subjects]
        init, rank = average_of_deltas(states, [a.scaling for a in subjects], settings.fused_rank)
        load_lora_state(model, "fused", init, "spatial", rank, float(rank))
        params = trainable_lora_parameters(model, "fused")
        recorder = AttentionRecorder(model.unet, levels=settings.levels, temporal=False)
        set_gradient_checkpointing(model.unet, resolve_checkpointing(model, "fusion", settings,
                                                                     subjects=len(subjects), ranks=rank))

        loss_scale = LossScale.for_model(model)  # fp16: scaled backward, unscaled by the loop

        def step_fn(step):
            l_parts = []
            for n in range(len(subjects)):
                v = int(torch.randint(0, settings.videos_per_subject, (1,), generator=gen))
                x0 = data[n][f"latents.{v}"].to(model.device, model.dtype)
                noise = randn(x0.shape, gen, model)
                t = sample_timesteps(model, 1, gen)
                x_t = add_noise(model, x0, noise, t)
                with torch.no_grad(), adapters_active(model, [names[n]]):
                    teacher = predict_noise(model, x_t, t, texts[n])
                with adapters_active(model, ["fused"]):  # backward too: checkpointing recomputes
                    student = predict_noise(model, x_t, t, texts[n])
                    part = fusion_loss([student], [teacher])
                    loss_scale.backward(part / len(subjects))
                l_parts.append(part.detach())
            l_fusion = torch.stack(l_parts).mean()
            l_attn = l_pair = torch.zeros(())
            if uses_cutmix(settings):
                c = cutmix[int(torch.randint(0, len(cutmix), (1,), generator=gen))]
                noise = randn(c["latents"].shape, gen, model)
                t = sample_timesteps(model, 1, gen)
                x_t = add_noise(model, c["latents"], noise, t)
                # backward inside the recorder: gradient checkpointing recomputes these layers with
                # the same (explicit) attention as the forward; the prediction is only read for pair_denoising
                # (the whole UNet runs then, not only up to the last recorded layer)
                with recorder, adapters_active(model, ["fused"]):
                    with recorder.recording(x_t.shape, stop_after_last=settings.pair_denoising == 0):
                        pred = predict_noise(model, x_t, t, c["text"])
                    maps = recorder.spatial_maps()
                    sca = [maps[:, :, cols].mean(2) for cols in c["columns"]]
                    l_attn = attention_mask_loss(sca, c["masks"])
                    objective = settings.lambda2 * l_attn
                    if settings.pair_denoising > 0:
                        l_pair = masked_mse(pred, noise)
                        objective = objective + settings.pair_denoising * l_pair
                    loss_scale.backward(objective)
            total = (attention_objective(l_fusion, l_attn.detach(), settings.lambda2)
                     + settings.pair_denoising * l_pair.detach())
            logs = {"L_fusion": l_fusion, "L_attn": l_attn.detach()}
            if settings.pair_denoising > 0:
                logs["L_pair"] = l_pair.detach()
            return total, logs

        run = ""
        if checkpoint_path:  # what the checkpoint belongs to (only hashed when there is one)
            inputs = {f"subjects.{n}.{k}": v for n, a in enumerate(subjects)
                      for k, v in {**a.lora, **a.tokens}.items()}
            inputs.update({f"subject_images.{n}.{j}": t for n, pair in enumerate(subject_images or [])
                           for j, t in enumerate(pair)})
            if background is not None:
                inputs["background"] = background
            run = run_key(model, settings, inputs)
        with text_encoder_parked(model):  # the fused LoRA trains on cached text
            result = run_training("fusion", settings.steps, [ParamGroup("lora", params, settings.lr_lora, 1e-2)],
                                  step_fn, gen, callback, cancel, checkpoint_path, stop_after=stop_after, run=run,
                                  loss_scale=loss_scale)
        superclasses = {t: w for a in subjects for t, w in a.superclasses.items()}
        artifact = LoraArtifact(
            kind="subject", scope="spatial", rank=rank, alpha=float(rank), lora=lora_state_dict(model, "fused"),
            tokens={t: e for a in subjects for t, e in a.tokens.items()}, superclasses=superclasses,
            base_fingerprint=model.fingerprint, base=model.family.NAME,
            train_args={**asdict(settings), "subjects": len(subjects), "user_masks": subject_images is not None,
                        "user_background": background is not None,
                        "resumed_from": result.resumed_from, "seconds": round(result.seconds, 3)},
            losses=result.losses,
            info={"fused_from": [repr(a) for a in subjects],
                  "parts": result.parts[-1] if result.parts else {}})
        artifact.cutmix_preview = [c["frames"] for c in cutmix]
    finally:
        set_gradient_checkpointing(model.unet, False)
        for name in names + ["fused"]:
            if name in model.adapters:
                delete_lora(model, name)
    return artifact


def average_subjects(subjects: list[LoraArtifact]) -> LoraArtifact:
    """The fusion's starting point without any training: one spatial LoRA whose delta is the mean
    of the subjects' deltas (``average_of_deltas``), holding every token. What a MotionDirector-
    style pipeline gets when it merges independently trained subject LoRAs (the baseline of
    ``make quality``); VideoMage trains from here with L_fusion + lambda2 L_attn."""
    require(len(subjects) >= 2, "subjects", f"averaging needs at least 2 subjects, got {len(subjects)}")
    require(all(a.kind == "subject" for a in subjects), "subjects", "every input must be a subject")
    require(len({a.base_fingerprint for a in subjects}) == 1, "subjects", "the subjects come from different bases")
    lora, rank = average_of_deltas([a.lora for a in subjects], [a.scaling for a in subjects])
    return LoraArtifact(
        kind="subject", scope="spatial", rank=rank, alpha=float(rank), lora=lora,
        tokens={t: e for a in subjects for t, e in a.tokens.items()},
        superclasses={t: w for a in subjects for t, w in a.superclasses.items()},
        base_fingerprint=subjects[0].base_fingerprint, base=subjects[0].base, train_args={"averaged": len(subjects)},
        losses=[], info={"averaged_from": [repr(a) for a in subjects]})
