"""The steps :func:`videomage_core.cost.run_stage` runs on a (fake or real) model, each built from
the engine's own functions as its trainer or sampler calls them: ``train_subject``'s,
``train_motion``'s (inversion and LoRA), ``fuse_subjects``' steps, one step of ``scs_sample``
(guided or not), of ``ddim_sample``, of ``ddim_invert``, and ``decode_latents``.

Each builder returns ``(param_groups, step)``: the trainable groups (an empty list for sampling)
and a function running one step (its backward included); adapters it injects go into ``adapters``
for the caller to delete.
"""
from __future__ import annotations

import torch

from .cost import StageSpec

TOKENS = ("<vmcost_a>", "<vmcost_b>")
WORDS = ("toy", "dog")


def add_tokens(twin) -> None:
    from .tokens import add_token

    for tok, word in zip(TOKENS, WORDS):
        add_token(twin, tok, init_word=word)  # reuses a token the tokenizer already has


def _latents(twin, frames: int, height: int, width: int, batch: int = 1) -> torch.Tensor:
    """Latents of a ``frames``-frame video (pixel frames: a VAE that compresses time gives fewer)."""
    from .diffusion import latent_frames

    s = twin.vae_scale_factor
    f = latent_frames(twin, frames)
    return torch.randn(batch, twin.unet.config.in_channels, f, height // s, width // s).to(twin.dtype)


def _text(twin, prompts: list[str]) -> torch.Tensor:
    from .diffusion import encode_prompts

    with torch.no_grad():
        return encode_prompts(twin, prompts)


def loss_scale(twin):
    """The trainers' fp16 loss scaling (``training.LossScale``), when the engine has it."""
    from . import training

    scale = getattr(training, "LossScale", None)
    return scale.for_model(twin) if scale is not None else None


def scaled_backward(twin, loss) -> None:
    scale = loss_scale(twin)
    loss.backward() if scale is None else scale.backward(loss)


def _subject(twin, spec: StageSpec, adapters: list):
    """``train_subject``'s step: L_sub on the images, then lambda1 L_reg on one prior video."""
    from .diffusion import add_noise, encode_prompts, predict_noise, sample_timesteps
    from .lora import adapters_active, inject_lora, trainable_lora_parameters
    from .losses import regularization_loss, subject_loss, subject_objective
    from .tokens import token_parameters
    from .training import ParamGroup

    inject_lora(twin, "cost_subject", "spatial", spec.rank)
    adapters.append("cost_subject")
    groups = [ParamGroup("lora", trainable_lora_parameters(twin, "cost_subject"), 1e-4, 1e-2),
              ParamGroup("token", token_parameters(twin, [TOKENS[0]]), 1e-3)]
    x_img = _latents(twin, 1, spec.height, spec.width, spec.images)
    x_aux = _latents(twin, spec.frames, spec.height, spec.width)
    aux_text = _text(twin, [f"a video of a {WORDS[0]}"])
    gen = torch.Generator().manual_seed(0)

    def step():
        with adapters_active(twin, ["cost_subject"]):
            n = x_img.shape[0]
            noise, t = torch.randn_like(x_img), sample_timesteps(twin, n, gen)
            text = encode_prompts(twin, [f"A {TOKENS[0]}"]).expand(n, -1, -1)
            l_sub = subject_loss(predict_noise(twin, add_noise(twin, x_img, noise, t), t, text), noise)
            scaled_backward(twin, l_sub)
            noise_r, t_r = torch.randn_like(x_aux), sample_timesteps(twin, 1, gen)
            pred_r = predict_noise(twin, add_noise(twin, x_aux, noise_r, t_r), t_r, aux_text)
            l_reg = regularization_loss(pred_r, noise_r)
            scaled_backward(twin, 0.25 * l_reg)
            return subject_objective(l_sub.detach(), l_reg.detach(), 0.25)
    return groups, step


def _inversion(twin, spec: StageSpec, adapters: list):
    """``train_motion``'s textual inversion step: one token per reference crop, no LoRA."""
    from .diffusion import add_noise, encode_prompts, predict_noise, sample_timesteps
    from .lora import adapters_active
    from .losses import subject_loss
    from .tokens import token_parameters
    from .training import ParamGroup

    n = min(spec.images, len(TOKENS))
    groups = [ParamGroup("token", token_parameters(twin, list(TOKENS[:n])), 1e-3)]
    x = _latents(twin, 1, spec.height, spec.width, n)
    gen = torch.Generator().manual_seed(0)

    def step():
        with adapters_active(twin, []):
            noise, t = torch.randn_like(x), sample_timesteps(twin, n, gen)
            text = encode_prompts(twin, [f"A {tok}" for tok in TOKENS[:n]])
            loss = subject_loss(predict_noise(twin, add_noise(twin, x, noise, t), t, text), noise)
            return loss
    return groups, step


def _motion(twin, spec: StageSpec, adapters: list, omega: float = 0.5):
    """``train_motion``'s LoRA step: the frozen appearance prediction, then the LoRA's forward+backward."""
    from .diffusion import add_noise, predict_noise, sample_timesteps
    from .lora import adapters_active, inject_lora, trainable_lora_parameters
    from .losses import appearance_free_target, motion_loss
    from .training import ParamGroup

    inject_lora(twin, "cost_motion", "temporal", spec.rank, coverage=spec.coverage)
    adapters.append("cost_motion")
    groups = [ParamGroup("lora", trainable_lora_parameters(twin, "cost_motion"), 1e-4, 1e-2)]
    x = _latents(twin, spec.frames, spec.height, spec.width)
    text_m = _text(twin, [f"a {WORDS[0]} riding a {WORDS[1]}"])
    text_ap = _text(twin, [f"A static video of {TOKENS[0]}."])
    gen = torch.Generator().manual_seed(0)

    def step():
        noise, t = torch.randn_like(x), sample_timesteps(twin, 1, gen)
        x_t = add_noise(twin, x, noise, t)
        with torch.no_grad(), adapters_active(twin, []):
            eps_ap = predict_noise(twin, x_t, t, text_ap)
        target = appearance_free_target(noise, eps_ap, omega)
        with adapters_active(twin, ["cost_motion"]):
            loss = motion_loss(predict_noise(twin, x_t, t, text_m), target)
            scaled_backward(twin, loss)
        return loss.detach()
    return groups, step


def _fusion(twin, spec: StageSpec, adapters: list, subjects: int = 2, lambda2: float = 0.6):
    """``fuse_subjects``' step: per subject the teacher (no grad) and the fused student, then L_attn
    on a CutMix video through the attention recorder, each backward as soon as its loss exists."""
    from .attention import AttentionRecorder
    from .diffusion import add_noise, predict_noise, sample_timesteps
    from .lora import adapters_active, inject_lora, trainable_lora_parameters
    from .losses import attention_mask_loss, attention_objective, fusion_loss
    from .tokens import word_positions
    from .training import ParamGroup

    names = [f"cost_src{n}" for n in range(subjects)]
    for name in names:
        inject_lora(twin, name, "spatial", max(1, spec.rank // subjects))
    inject_lora(twin, "cost_fused", "spatial", spec.rank)
    adapters.extend(names + ["cost_fused"])
    groups = [ParamGroup("lora", trainable_lora_parameters(twin, "cost_fused"), 1e-4, 1e-2)]
    x0 = _latents(twin, spec.frames, spec.height, spec.width)
    texts = [_text(twin, [f"a video of a {TOKENS[n % 2]}"]) for n in range(subjects)]
    caption = f"a {TOKENS[0]} and a {TOKENS[1]}"
    c_text, columns = _text(twin, [caption]), word_positions(twin.tokenizer, caption, list(TOKENS))
    masks = [torch.ones(1, x0.shape[2], spec.height, spec.width) for _ in TOKENS]  # per latent frame
    recorder = AttentionRecorder(twin.unet, levels=spec.levels or twin.attention_levels, temporal=False)
    gen = torch.Generator().manual_seed(0)

    def step():
        parts = []
        for n in range(subjects):
            noise, t = torch.randn_like(x0), sample_timesteps(twin, 1, gen)
            x_t = add_noise(twin, x0, noise, t)
            with torch.no_grad(), adapters_active(twin, [names[n]]):
                teacher = predict_noise(twin, x_t, t, texts[n])
            with adapters_active(twin, ["cost_fused"]):
                part = fusion_loss([predict_noise(twin, x_t, t, texts[n])], [teacher])
                scaled_backward(twin, part / subjects)
            parts.append(part.detach())
        noise, t = torch.randn_like(x0), sample_timesteps(twin, 1, gen)
        x_t = add_noise(twin, x0, noise, t)
        with recorder, adapters_active(twin, ["cost_fused"]):
            with recorder.recording(x_t.shape, stop_after_last=True):
                predict_noise(twin, x_t, t, c_text)
            maps = recorder.spatial_maps()
            l_attn = attention_mask_loss([maps[:, :, cols].mean(2) for cols in columns], masks)
            scaled_backward(twin, lambda2 * l_attn)
        return attention_objective(torch.stack(parts).mean(), l_attn.detach(), lambda2)
    return groups, step


def sampling_step(twin, spec: StageSpec, adapters: list):
    """One step of ``scs_sample`` (guided or not), of ``ddim_sample`` with both LoRAs (w/o SCS), one
    ``ddim_invert`` step (the noise prior) or ``decode_latents``: whatever the sampler runs."""
    from dataclasses import fields, replace

    from .checkpointing import set_gradient_checkpointing
    from .diffusion import decode_latents
    from .lora import inject_lora
    from .sampling import SampleSettings, SCSSettings, ddim_invert, ddim_sample, scs_sample

    x = _latents(twin, spec.frames, spec.height, spec.width)
    if spec.stage == "vae_decode":
        return [], lambda: decode_latents(twin, x)
    if spec.stage == "ddim_invert":
        return [], lambda: ddim_invert(twin, x, 1)
    inject_lora(twin, "cost_sub", "spatial", spec.rank)
    inject_lora(twin, "cost_mot", "temporal", 4)
    adapters.extend(["cost_sub", "cost_mot"])
    prompt = f"A {TOKENS[0]} rides a {TOKENS[1]}"
    settings = SampleSettings(frames=spec.frames, height=spec.height, width=spec.width, steps=1)
    if spec.stage == "sample":
        return [], lambda: ddim_sample(twin, prompt, settings, adapters=["cost_sub", "cost_mot"], latents=x)
    scs = SCSSettings(tau=1 if spec.stage == "scs_guided" else 0, levels=spec.levels)
    if "gradient_checkpointing" in {f.name for f in fields(SCSSettings)}:
        scs = replace(scs, gradient_checkpointing=spec.checkpointing)

    def step():
        set_gradient_checkpointing(twin.unet, spec.checkpointing)
        return scs_sample(twin, prompt, dict(zip(TOKENS, WORDS)), "cost_sub", "cost_mot", settings, scs,
                          latents=x)
    return [], step


BUILDERS = {"subject": _subject, "inversion": _inversion, "motion": _motion, "fusion": _fusion}
