"""Subject learning (``method.md`` section 1): token + spatial LoRA with ``L_sub + lambda1 L_reg``."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from .artifacts import LoraArtifact
from .cache import cached_tensors
from .checkpointing import set_gradient_checkpointing
from .preflight import resolve_checkpointing
from .data import check_images, check_masks, check_size, check_video, fit_to_size, mask_to_latent
from .diffusion import (add_noise, encode_prompts, encode_video, predict_noise, randn, sample_timesteps,
                        snap_frames, training_target)
from .errors import VideoMageInputError, require
from .lora import adapters_active, delete_lora, inject_lora, lora_state_dict, trainable_lora_parameters
from .losses import regularization_loss, subject_loss, subject_objective
from .sampling import SampleSettings, ddim_sample
from .tokens import add_token, check_new_token, get_token_embedding, token_parameters
from .training import LossScale, ParamGroup, run_key, run_training, within

PRIOR_CAPTIONS = ("a video of a {s}", "a {s} moving", "a {s} in a scene", "a close-up video of a {s}")


@dataclass
class SubjectSettings:
    """Paper defaults: rank 4, 300 steps, lr 1e-4 (LoRA) / 1e-3 (token), lambda1 0.25."""

    token: str = "<sks>"
    superclass: str = "object"
    steps: int = 300
    rank: int = 4
    alpha: float | None = None
    lr_lora: float = 1e-4
    lr_token: float = 1e-3
    lambda1: float = 0.25
    seed: int = 0
    height: int = 320
    width: int = 576
    prompt_template: str = "A {token}"
    # beyond the paper: one caption per image, in the images' order, each naming the subject as ``{token}`` (or
    # the token itself), e.g. "a {token} and a red circle" for an image that also shows a red circle; None: every
    # image gets ``prompt_template``. Two subject LoRAs learned from images with a second, named object no longer
    # merge into one object when used together (docs/shapesworld.md, sessions 19-20)
    image_captions: tuple[str, ...] | None = None
    prior_videos: int = 4
    prior_frames: int = 8
    prior_steps: int = 25
    prior_cfg: float | None = None  # None: the model's sampling cfg (videomage.json), else 9.0 (the paper's)
    prior_captions: tuple | None = None  # None: the model's ``prior_captions``, else PRIOR_CAPTIONS
    gradient_checkpointing: bool | str = "auto"  # "auto": on when the step would not fit the GPU (preflight)


#: How many images the paper learns a subject from (section 4.1: "3-5 images per subject").
PAPER_IMAGE_COUNT = (3, 5)


def image_count_note(count: int) -> str | None:
    """A note when a subject gets another number of images than the paper's 3-5 (not an error: the
    method runs on any count; the note says what to expect). None within 3-5."""
    lo, hi = PAPER_IMAGE_COUNT
    if lo <= count <= hi:
        return None
    effect = ("fewer give the LoRA less variety of pose and background to tell the subject from" if count < lo
              else "more work too, but every step trains on all of them (slower steps, more memory)")
    return f"note: {count} image(s); the paper learns a subject from {lo}-{hi}, {effect}"


def training_captions(settings: SubjectSettings, count: int) -> list[str]:
    """The caption of each of ``count`` training images: ``settings.image_captions`` (checked: one per image,
    each naming the token) or ``prompt_template`` for every image."""
    if settings.image_captions is None:
        return [settings.prompt_template.format(token=settings.token)] * count
    captions = list(settings.image_captions)
    require(len(captions) == count, "image_captions",
            f"expected one caption per image ({count}), got {len(captions)}")
    out = []
    for i, caption in enumerate(captions):
        require(isinstance(caption, str) and caption.strip() != "", "image_captions",
                f"caption {i + 1} is empty; each image needs a caption that names {settings.token}")
        try:
            text = caption.strip().format(token=settings.token)
        except (KeyError, IndexError, ValueError) as e:
            raise VideoMageInputError("image_captions", f"caption {i + 1} ({caption!r}): only {{token}} may be "
                                                        f"in braces ({e})") from None
        require(settings.token in text, "image_captions",
                f"caption {i + 1} ({caption!r}) does not name the subject: write {{token}} or {settings.token}")
        out.append(text)
    return out


def prior_videos(model, superclass: str, count: int, frames: int, height: int, width: int,
                 steps: int, cfg: float, seed: int, cache_dir=None, callback=None, cancel=None,
                 templates=None):
    """Videos of the superclass generated once by the frozen base model (cached): the L_reg set
    when the user gives no auxiliary videos (prior preservation). Returns [(latents, caption)].
    ``templates`` (``{s}`` = superclass): the model's ``prior_captions`` by default."""
    templates = list(templates or model.default("prior_captions", PRIOR_CAPTIONS))
    frames = snap_frames(model, frames)
    captions = [templates[i % len(templates)].format(s=superclass) for i in range(count)]
    recipe = {"base": model.fingerprint, "captions": captions, "frames": frames, "h": height,
              "w": width, "steps": steps, "cfg": cfg, "seed": seed}

    def produce():
        out = {}
        for i, caption in enumerate(captions):
            st = SampleSettings(frames=frames, height=height, width=width, steps=steps, cfg=cfg,
                                seed=seed * 1000 + i)
            progress = within(callback, "prior_videos", i * steps, count * steps)
            out[f"video.{i}"] = ddim_sample(model, caption, st, adapters=[], callback=progress,
                                            cancel=cancel).float().cpu()
        return out

    tensors = cached_tensors(cache_dir, "prior", recipe, produce)
    return [(tensors[f"video.{i}"].to(model.device, model.dtype), c) for i, c in enumerate(captions)]


def _aux_latents(model, aux_videos, height, width):
    out = []
    for i, (frames, caption) in enumerate(aux_videos):
        frames = check_video(frames, f"aux_videos[{i}]")
        require(isinstance(caption, str) and caption.strip() != "", f"aux_videos[{i}]",
                "each auxiliary video needs a caption")
        frames, _ = fit_to_size(frames, height, width)
        out.append((encode_video(model, frames), caption))
    return out


def train_subject(model, images: torch.Tensor, settings: SubjectSettings, masks: torch.Tensor | None = None,
                  aux_videos=None, callback=None, cancel=None, checkpoint_path=None, cache_dir=None,
                  stop_after: int | None = None) -> LoraArtifact:
    """Learn one subject from 3-5 images. Returns the artifact (the model is left as it was)."""
    images = check_images(images, "images")
    masks = check_masks(masks, images, "masks")
    check_size(settings.width, settings.height)
    check_new_token(model, settings.token, "token")
    if settings.prior_cfg is None:
        settings = replace(settings, prior_cfg=float(model.default("cfg", 9.0)))
    require(bool(settings.superclass and settings.superclass.strip()), "superclass",
            "a superclass word is required (e.g. 'dog' for '<my_dog>')")
    require(settings.steps >= 1, "steps", f"expected at least 1 step, got {settings.steps}")
    captions = training_captions(settings, images.shape[0])
    pixels, masks = fit_to_size(images, settings.height, settings.width, masks)
    gen = torch.Generator().manual_seed(int(settings.seed))
    x_img = torch.cat([encode_video(model, pixels[i:i + 1]) for i in range(pixels.shape[0])])
    weight = mask_to_latent(masks, x_img.shape[-2:]).to(model.device) if masks is not None else None
    if aux_videos:
        aux = _aux_latents(model, aux_videos, settings.height, settings.width)
    else:
        aux = prior_videos(model, settings.superclass, settings.prior_videos, settings.prior_frames,
                           settings.height, settings.width, settings.prior_steps, settings.prior_cfg,
                           settings.seed, cache_dir, callback=callback, cancel=cancel,
                           templates=settings.prior_captions)
    aux_text = encode_prompts(model, [c for _, c in aux])
    aux_inputs = {f"aux.{i}": x for i, (x, _) in enumerate(aux)}
    run = run_key(model, settings, {"images": images, "masks": masks, **aux_inputs}) if checkpoint_path else ""

    add_token(model, settings.token, init_word=settings.superclass)
    adapter = f"train_subject_{settings.token}"
    inject_lora(model, adapter, "spatial", settings.rank, settings.alpha, seed=settings.seed)
    same_caption = len(set(captions)) == 1
    set_gradient_checkpointing(model.unet, resolve_checkpointing(model, "subject", settings,
                                                                 images=x_img.shape[0]))
    try:
        with adapters_active(model, [adapter]):
            groups = [ParamGroup("lora", trainable_lora_parameters(model, adapter), settings.lr_lora, 1e-2),
                      ParamGroup("token", token_parameters(model, [settings.token]), settings.lr_token)]

            loss_scale = LossScale.for_model(model)  # fp16: scaled backward, unscaled by the loop

            def step_fn(step):
                n = x_img.shape[0]
                noise = randn(x_img.shape, gen, model)
                t = sample_timesteps(model, n, gen)
                text = (encode_prompts(model, captions[:1]).expand(n, -1, -1) if same_caption  # one for all
                        else encode_prompts(model, captions))
                l_sub = subject_loss(predict_noise(model, add_noise(model, x_img, noise, t), t, text),
                                     training_target(model, x_img, noise), weight)
                loss_scale.backward(l_sub)
                j = int(torch.randint(0, len(aux), (1,), generator=gen))
                x_aux = aux[j][0]
                noise_r = randn(x_aux.shape, gen, model)
                t_r = sample_timesteps(model, 1, gen)
                pred_r = predict_noise(model, add_noise(model, x_aux, noise_r, t_r), t_r, aux_text[j:j + 1])
                l_reg = regularization_loss(pred_r, training_target(model, x_aux, noise_r))
                loss_scale.backward(settings.lambda1 * l_reg)
                total = subject_objective(l_sub.detach(), l_reg.detach(), settings.lambda1)
                return total, {"L_sub": l_sub.detach(), "L_reg": l_reg.detach()}

            result = run_training("subject", settings.steps, groups, step_fn, gen, callback, cancel,
                                  checkpoint_path, stop_after=stop_after, run=run, loss_scale=loss_scale)
        state = lora_state_dict(model, adapter)
        scaling_alpha = model.adapters[adapter]["alpha"]
        artifact = LoraArtifact(
            kind="subject", scope="spatial", rank=settings.rank, alpha=scaling_alpha, lora=state,
            tokens={settings.token: get_token_embedding(model, settings.token)},
            superclasses={settings.token: settings.superclass.strip()},
            base_fingerprint=model.fingerprint, base=model.family.NAME,
            train_args={**asdict(settings), "images": int(images.shape[0]),
                        "masks": masks is not None, "aux_videos": len(aux_videos or []),
                        "resumed_from": result.resumed_from, "seconds": round(result.seconds, 3)},
            losses=result.losses, info={"parts": result.parts[-1] if result.parts else {}})
    finally:
        set_gradient_checkpointing(model.unet, False)
        delete_lora(model, adapter)
    return artifact
