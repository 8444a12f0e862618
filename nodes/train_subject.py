"""Train Subject LoRA: 3-5 images of one subject -> a token + spatial LoRA (method section 1)."""

from __future__ import annotations

from dataclasses import asdict

from .common import (
    FLOAT,
    INT,
    SEED,
    SIZE,
    STR,
    cache_folder,
    clone,
    display_path,
    first_error,
    loss_image,
    raise_first,
    request_key,
    run_engine,
    safe_name,
    size_error,
    tensor_digest,
    train_or_load,
    ui_result,
)
from .types import CATEGORY, IMAGE, MASK, MODEL, STRING, SUBJECT


def token_error(token) -> str | None:
    from videomage_core.tokens import TOKEN_PATTERN

    if token is None:
        return None
    if not TOKEN_PATTERN.match(str(token)):
        return (
            f"token: expected a new word in angle brackets like '<my_toy>' (letters, digits, '_' "
            f"or '-'), got {token!r}"
        )
    return None


def superclass_error(superclass) -> str | None:
    if superclass is None or str(superclass).strip():
        return None
    return "superclass: a class word is required (e.g. 'dog' for '<my_dog>')"


def caption_lines(text) -> tuple[str, ...] | None:
    """The captions input: its non-empty lines, or None when it has none."""
    lines = tuple(line.strip() for line in str(text or "").splitlines() if line.strip())
    return lines or None


def keyed_settings(settings) -> dict:
    """The settings a trained file is keyed on; without captions, the same key as before captions existed."""
    out = asdict(settings)
    if out.get("image_captions") is None:
        out.pop("image_captions", None)
    return out


class VideoMageTrainSubject:
    DESCRIPTION = (
        "Learns one subject from 3-5 images: a new token (textual inversion) and a LoRA on the "
        "UNet's spatial layers, with L_sub + lambda1 * L_reg (VideoMage, section 1). The "
        "result is saved under output/loras/videomage/; the same request later (even after a "
        "restart) loads that file instead of training again."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (SUBJECT, IMAGE, STRING)
    RETURN_NAMES = ("subject", "loss_curve", "info")
    OUTPUT_TOOLTIPS = (
        "The trained subject (token + spatial LoRA).",
        "The training loss per step.",
        "What was done: trained or loaded, the file, the settings.",
    )
    FUNCTION = "train"
    HAS_INTERMEDIATE_OUTPUT = True  # keep the preview in the history when cached (common.ui_result)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The base model from VideoMage Load Model."}),
                "images": (
                    IMAGE,
                    {
                        "tooltip": "3-5 images of the subject as one batch (e.g. Load Image + "
                        "Batch Images). Cropped to the aspect ratio and resized."
                    },
                ),
                "token": STR(
                    "<my_toy>",
                    "The new word that will mean this subject, in angle brackets; "
                    "use it in prompts (e.g. 'A <my_toy> riding a horse').",
                ),
                "superclass": STR(
                    "toy",
                    "The subject's class word (e.g. toy, dog, person): the token "
                    "starts from it and prompts fall back to it.",
                ),
                "steps": INT(300, 1, 100000, "Optimisation steps (the paper: 300)."),
                "rank": INT(4, 1, 256, "LoRA rank (the paper: 4)."),
                "lr_lora": FLOAT(1e-4, 1e-7, 1.0, 1e-5, "LoRA learning rate (the paper: 1e-4)."),
                "lr_token": FLOAT(1e-3, 1e-7, 1.0, 1e-5, "Token embedding learning rate (the paper: 1e-3)."),
                "lambda1": FLOAT(
                    0.25,
                    0.0,
                    10.0,
                    0.01,
                    "Weight of the regularisation loss L_reg that keeps "
                    "the model's motion prior (the paper: 0.25).",
                ),
                "seed": SEED(
                    "Seed of the noise, timesteps and LoRA init. Same seed + same inputs = same "
                    "result, loaded from disk instead of retrained.",
                    control=False,
                ),
                "width": SIZE(576, "Training width"),
                "height": SIZE(320, "Training height"),
                "prior_videos": INT(
                    4,
                    1,
                    64,
                    "Without auxiliary videos, L_reg uses this many videos of "
                    "the superclass generated once by the base model (cached).",
                ),
                "prior_frames": INT(8, 2, 128, "Frames of each generated prior video."),
                "prior_steps": INT(25, 1, 500, "Sampling steps of each generated prior video."),
            },
            "optional": {
                "masks": (
                    MASK,
                    {
                        "tooltip": "Optional subject masks, one per image (1 = subject); the loss "
                        "is weighted to them. Load Image's MASK is 1 where the image "
                        "was transparent: invert it for a cut-out subject."
                    },
                ),
                "aux_video": (
                    IMAGE,
                    {
                        "tooltip": "Optional auxiliary video (frames as one batch) for L_reg "
                        "instead of the generated prior videos."
                    },
                ),
                "aux_caption": STR("", "Caption of the auxiliary video (required with aux_video)."),
                "gradient_checkpointing": (["auto", "on", "off"], {"default": "auto", "tooltip": (
                    "Recompute activations in the backward pass: far less GPU memory, about 20-30 % more "
                    "time, identical result. auto: on only when the memory estimate says the step would "
                    "not fit the GPU's free memory.")}),
                "image_captions": STR(
                    "",
                    "Beyond the paper: one caption per image, one per line, in the batch's order, each "
                    "naming the subject as {token} or the token itself (e.g. '{token} next to a red cup'). "
                    "Empty: 'A <token>' for every image. Naming what else an image shows keeps the token "
                    "from learning it.",
                    multiline=True,
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width, height):
        return first_error(size_error(width, height))

    def train(
        self,
        model,
        images,
        token,
        superclass,
        steps,
        rank,
        lr_lora,
        lr_token,
        lambda1,
        seed,
        width,
        height,
        prior_videos,
        prior_frames,
        prior_steps,
        masks=None,
        aux_video=None,
        aux_caption="",
        gradient_checkpointing="auto",
        image_captions="",
    ):
        import torch

        from videomage_core.errors import VideoMageInputError
        from videomage_core.preflight import check_memory, parse_checkpointing
        from videomage_core.subject import SubjectSettings, image_count_note, train_subject

        raise_first(token_error(token), superclass_error(superclass))
        settings = SubjectSettings(
            token=token.strip(),
            superclass=superclass.strip(),
            steps=steps,
            rank=rank,
            lr_lora=lr_lora,
            lr_token=lr_token,
            lambda1=lambda1,
            seed=seed,
            height=height,
            width=width,
            prior_videos=prior_videos,
            prior_frames=prior_frames,
            prior_steps=prior_steps,
            image_captions=caption_lines(image_captions),
        )
        aux = None
        if aux_video is not None:
            if not (aux_caption or "").strip():
                raise VideoMageInputError("aux_caption", "the auxiliary video needs a caption")
            aux = [(aux_video, aux_caption.strip())]
        key = request_key(
            "subject",
            model,
            keyed_settings(settings),
            {
                "images": tensor_digest(images),
                "masks": tensor_digest(masks),
                "aux_video": tensor_digest(aux_video),
                "aux_caption": (aux_caption or "").strip() if aux else None,
            },
        )
        live = {}
        settings.gradient_checkpointing = parse_checkpointing(gradient_checkpointing)  # same result: not keyed

        def do_train(ckpt):
            def fn(callback, cancel):
                live["callback"] = callback
                with torch.inference_mode(False):
                    imgs, msk = clone(images), clone(masks)
                    aux_in = [(clone(v), c) for v, c in aux] if aux else None
                check_memory(model, "subject", settings, images=imgs.shape[0])  # before any GPU work
                return train_subject(
                    model,
                    imgs,
                    settings,
                    masks=msk,
                    aux_videos=aux_in,
                    callback=callback,
                    cancel=cancel,
                    checkpoint_path=ckpt,
                    cache_dir=cache_folder(),
                )

            generation = 0 if aux else prior_videos * prior_steps  # cached prior videos: no steps
            return run_engine(fn, f"Train Subject {settings.token}",
                              {"prior_videos": generation, "subject": steps}, model)

        art, path, status = train_or_load("subject", key, f"subject_{safe_name(settings.token)}", do_train,
                                           model)
        parts = live["callback"].parts.get("subject") if live else None
        curve = loss_image(art, f"Train Subject {settings.token}: {len(art.losses)} steps", status, parts)
        note = image_count_note(images.shape[0])
        info = f"{art!r}\n{status}\nfile: {display_path(path)}" + (f"\n{note}" if note else "")
        return ui_result((art, curve, info), info, curve)


NODE_CLASS_MAPPINGS = {"VideoMageTrainSubject": VideoMageTrainSubject}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoMageTrainSubject": "VideoMage Train Subject LoRA"}
