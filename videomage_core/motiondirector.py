"""MotionDirector (Zhao et al., 2023) as a baseline: a motion learned with dual-path LoRAs.

What its paper and code do, on any base the engine loads:

- spatial path: a LoRA on the spatial layers trained on one random frame of the reference at a
  time (the plain diffusion loss), so it absorbs the reference's appearance;
- temporal path: a LoRA on the temporal layers trained on the whole clip with the spatial LoRA
  loaded and frozen, with the plain loss plus the appearance-debiased temporal loss
  (:func:`losses.appearance_debiased_loss`, beta 1, a random anchor frame per step);
- both paths train together, one step each per iteration; at inference only the temporal LoRA is
  kept (the spatial one is discarded, taking the reference's appearance with it).

The result is an ordinary motion artifact (temporal LoRA + the reference's latents for the noise
prior), with no tokens: MotionDirector has no textual inversion. ``make quality`` pairs it with the
subjects' LoRAs averaged (MotionDirector has no multi-subject fusion) and plain sampling.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from .artifacts import LoraArtifact
from .data import check_size, check_video
from .diffusion import add_noise, encode_prompts, predict_noise, randn, sample_timesteps, training_target
from .errors import require
from .lora import adapters_active, delete_lora, inject_lora, lora_state_dict, lora_targets, trainable_lora_parameters
from .losses import appearance_debiased_loss, motion_loss
from .model import text_encoder_parked
from .motion import reference_clip_latents
from .training import LossScale, ParamGroup, run_training


@dataclass
class MotionDirectorSettings:
    """MotionDirector's defaults where they are not the comparison's: lr 5e-4, beta 1, AdamW."""

    motion_prompt: str = ""
    steps: int = 300
    rank: int = 4  # MotionDirector uses 32; the same rank as the motion it is compared with is fairer
    alpha: float | None = None
    lr_lora: float = 5e-4
    beta_ad: float = 1.0
    seed: int = 0
    height: int = 320
    width: int = 576
    frames: int | None = None  # None/0: the model's
    coverage: str = "attention"  # the temporal LoRA's layers; MotionDirector's own: "all_linear" (ZeroScope)

    def check(self) -> None:
        require(bool(self.motion_prompt and self.motion_prompt.strip()), "motion_prompt",
                "describe the motion, e.g. 'a person riding a horse'")
        require(self.steps >= 1, "steps", f"expected steps >= 1, got {self.steps}")
        require(self.rank >= 1, "rank", f"expected rank >= 1, got {self.rank}")
        require(self.beta_ad >= 0, "beta_ad", f"expected beta_ad >= 0, got {self.beta_ad}")


def train_motiondirector(model, video: torch.Tensor, settings: MotionDirectorSettings, callback=None,
                         cancel=None) -> LoraArtifact:
    """Learn a motion from one reference video the MotionDirector way (see the module docstring).
    Returns a motion artifact holding the temporal LoRA only; the model is left as it was."""
    video = check_video(video, "video")
    check_size(settings.width, settings.height)
    settings.check()
    lora_targets(model, "temporal", settings.coverage)  # an unknown coverage is refused before any work
    settings = replace(settings, frames=int(settings.frames or model.default("frames", 24)))
    x_video, indices = reference_clip_latents(model, video, settings.frames, settings.height, settings.width)
    n_frames = x_video.shape[2]
    gen = torch.Generator().manual_seed(int(settings.seed))
    text = encode_prompts(model, [settings.motion_prompt]).detach()
    spatial, temporal = "md_spatial", "md_temporal"
    inject_lora(model, spatial, "spatial", settings.rank, settings.alpha, seed=settings.seed)
    inject_lora(model, temporal, "temporal", settings.rank, settings.alpha, seed=settings.seed + 1,
                coverage=settings.coverage)
    spatial_params = trainable_lora_parameters(model, spatial)
    temporal_params = trainable_lora_parameters(model, temporal)
    loss_scale = LossScale.for_model(model)

    def step_fn(step):
        # spatial path: one random frame, spatial LoRA alone
        k = int(torch.randint(n_frames, (1,), generator=gen))
        x1 = x_video[:, :, k:k + 1]
        noise1 = randn(x1.shape, gen, model)
        t1 = sample_timesteps(model, 1, gen)
        with adapters_active(model, [spatial]):
            l_spatial = motion_loss(predict_noise(model, add_noise(model, x1, noise1, t1), t1, text),
                                    training_target(model, x1, noise1))
            loss_scale.backward(l_spatial)
        # temporal path: the whole clip, the spatial LoRA loaded and frozen
        noise = randn(x_video.shape, gen, model)
        t = sample_timesteps(model, 1, gen)
        anchor = int(torch.randint(n_frames, (1,), generator=gen))
        target = training_target(model, x_video, noise)
        for p in spatial_params:
            p.requires_grad_(False)
        try:
            with adapters_active(model, [spatial, temporal]):
                pred = predict_noise(model, add_noise(model, x_video, noise, t), t, text)
                l_temporal = motion_loss(pred, target) + appearance_debiased_loss(pred, target, anchor,
                                                                                  settings.beta_ad)
                loss_scale.backward(l_temporal)
        finally:
            for p in spatial_params:
                p.requires_grad_(True)
        total = l_spatial.detach() + l_temporal.detach()
        return total, {"L_spatial": l_spatial.detach(), "L_temporal": l_temporal.detach()}

    try:
        with text_encoder_parked(model):
            result = run_training(
                "motiondirector", settings.steps,
                [ParamGroup("spatial", spatial_params, settings.lr_lora, 1e-2),
                 ParamGroup("temporal", temporal_params, settings.lr_lora, 1e-2)],
                step_fn, gen, callback, cancel, loss_scale=loss_scale)
        return LoraArtifact(
            kind="motion", scope="temporal", rank=settings.rank, alpha=model.adapters[temporal]["alpha"],
            lora=lora_state_dict(model, temporal), tokens={}, superclasses={},
            base_fingerprint=model.fingerprint, base=model.family.NAME,
            train_args={**asdict(settings), "method": "motiondirector", "reference_frames": int(video.shape[0]),
                        "motion_frames": len(indices), "frame_indices": indices,
                        "seconds": round(result.seconds, 3)},
            losses=result.losses,
            info={"motion_prompt": settings.motion_prompt, "method": "MotionDirector (dual-path LoRAs, L_ad)",
                  "motion_frames": len(indices), "frame_indices": indices},
            reference_latents=x_video.detach().float().cpu(), coverage=settings.coverage)
    finally:
        delete_lora(model, spatial)
        delete_lora(model, temporal)
