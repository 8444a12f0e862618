"""Train Motion LoRA: a reference video -> reference tokens + a temporal LoRA (method section 2)."""

from __future__ import annotations

from dataclasses import asdict

from videomage_core.bases import COVERAGES

from .common import (
    FLOAT,
    INT,
    SEED,
    SIZE,
    STR,
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
from .types import CATEGORY, IMAGE, MASK, MODEL, MOTION, STRING


def split_words(text: str) -> list[str]:
    return [w.strip() for w in (text or "").replace(";", ",").split(",") if w.strip()]


def motion_prompt_error(motion_prompt) -> str | None:
    if motion_prompt is None or str(motion_prompt).strip():
        return None
    return "motion_prompt: describe the motion, e.g. 'a person riding a horse'"


def reference_words_error(reference_words) -> str | None:
    if reference_words is None or split_words(reference_words):
        return None
    return "reference_words: name the reference video's subjects, e.g. 'person, horse'"


class VideoMageTrainMotion:
    DESCRIPTION = (
        "Learns a motion from one reference video, free of the reference subjects' looks: "
        "first one token per reference subject (on one frame, cropped by its mask), then a "
        "LoRA on the UNet's temporal layers towards the appearance-free target with omega "
        "(VideoMage, section 2). Saved under output/loras/videomage/; the same request later "
        "loads that file instead of training again."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (MOTION, IMAGE, STRING)
    RETURN_NAMES = ("motion", "loss_curve", "info")
    OUTPUT_TOOLTIPS = (
        "The trained motion (temporal LoRA + reference tokens + the clip for the noise prior).",
        "The loss per step (token inversion, then the motion LoRA).",
        "What was done: trained or loaded, the file, the settings.",
    )
    FUNCTION = "train"
    HAS_INTERMEDIATE_OUTPUT = True  # keep the preview in the history when cached (common.ui_result)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The base model from VideoMage Load Model."}),
                "video": (
                    IMAGE,
                    {
                        "tooltip": "The reference video as one batch of frames (e.g. Load Video + "
                        "Get Video Components), at least 2 frames."
                    },
                ),
                "motion_prompt": STR(
                    "a person riding a horse",
                    "Describes the motion with the reference "
                    "subjects' words, e.g. 'a person riding a horse'.",
                    multiline=True,
                ),
                "reference_words": STR(
                    "person, horse",
                    "The reference video's subjects, comma-separated, "
                    "in the order of the masks (each gets its own token).",
                ),
                "omega": FLOAT(
                    0.5,
                    0.0,
                    5.0,
                    0.01,
                    "Appearance-free strength of L_mot (the paper: 0.5); 0 "
                    "is the plain diffusion loss (the 'w/o L_mot' ablation).",
                ),
                "steps": INT(300, 1, 100000, "Motion LoRA steps (the paper: 300)."),
                "inversion_steps": INT(
                    300,
                    0,
                    100000,
                    "Textual-inversion steps for the reference subjects' tokens (the paper: 300).",
                ),
                "rank": INT(4, 1, 256, "LoRA rank (the paper: 4)."),
                "lr_lora": FLOAT(1e-4, 1e-7, 1.0, 1e-5, "LoRA learning rate (the paper: 1e-4)."),
                "lr_token": FLOAT(1e-3, 1e-7, 1.0, 1e-5, "Reference-token learning rate (the paper: 1e-3)."),
                "seed": SEED(
                    "Seed of the noise, timesteps and LoRA init. Same seed + same inputs = same "
                    "result, loaded from disk instead of retrained.",
                    control=False,
                ),
                "width": SIZE(576, "Training width"),
                "height": SIZE(320, "Training height"),
                "frames": INT(
                    0,
                    0,
                    1024,
                    "Frames the motion learns, sampled evenly over the whole video (a longer video is "
                    "sampled, never stacked into one step; a shorter one is used whole); 0 = the model's "
                    "frame count (24 for ZeroScope). Sample the same number of frames to keep the timing.",
                ),
                "frame_index": INT(
                    -1,
                    -1,
                    100000,
                    "The frame used to learn the reference subjects' tokens "
                    "(and the one the masks belong to); -1 = the middle frame.",
                ),
            },
            "optional": {
                "masks": (
                    MASK,
                    {
                        "tooltip": "Optional: one mask per reference subject for the chosen frame "
                        "([N, H, W], in reference_words order). Without masks each token "
                        "learns the whole frame."
                    },
                ),
                "gradient_checkpointing": (["auto", "on", "off"], {"default": "auto", "tooltip": (
                    "Recompute activations in the backward pass: far less GPU memory, about 20-30 % more "
                    "time, identical result. auto: on only when the memory estimate says the step would "
                    "not fit the GPU's free memory.")}),
                "coverage": (list(COVERAGES), {"default": "attention", "tooltip": (
                    "The layers the motion LoRA trains. attention: the temporal attention projections (the "
                    "paper). all_linear: every Linear of the temporal transformers, feed-forward included "
                    "(MotionDirector's coverage; ZeroScope-layout models only): about twice the parameters, "
                    "and on the built-in ShapesWorld model the only one that transfers a motion alone.")}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width, height):
        return first_error(size_error(width, height))

    def train(
        self,
        model,
        video,
        motion_prompt,
        reference_words,
        omega,
        steps,
        inversion_steps,
        rank,
        lr_lora,
        lr_token,
        seed,
        width,
        height,
        frames,
        frame_index,
        masks=None,
        gradient_checkpointing="auto",
        coverage="attention",
    ):
        import torch

        from videomage_core.errors import VideoMageInputError
        from videomage_core.motion import MotionSettings, train_motion
        from videomage_core.preflight import check_memory, parse_checkpointing

        raise_first(motion_prompt_error(motion_prompt), reference_words_error(reference_words))
        words = tuple(split_words(reference_words))
        if masks is not None and masks.shape[0] != len(words):
            raise VideoMageInputError(
                "masks",
                f"{masks.shape[0]} masks for {len(words)} reference subjects "
                f"{list(words)} (give one mask per word)",
            )
        settings = MotionSettings(
            motion_prompt=motion_prompt.strip(),
            reference_words=words,
            omega=omega,
            steps=steps,
            inversion_steps=inversion_steps,
            rank=rank,
            lr_lora=lr_lora,
            lr_token=lr_token,
            seed=seed,
            height=height,
            width=width,
            frames=frames or None,
            frame_index=None if frame_index < 0 else frame_index,
            coverage=coverage,
        )
        key = request_key(
            "motion", model, asdict(settings), {"video": tensor_digest(video), "masks": tensor_digest(masks)}
        )
        live = {}
        settings.gradient_checkpointing = parse_checkpointing(gradient_checkpointing)  # same result: not keyed

        def do_train(ckpt):
            def fn(callback, cancel):
                live["callback"] = callback
                with torch.inference_mode(False):
                    vid, msk = clone(video), clone(masks)
                check_memory(model, "motion", settings, images=len(words), video_frames=vid.shape[0])
                return train_motion(
                    model, vid, settings, masks=msk, callback=callback, cancel=cancel, checkpoint_path=ckpt
                )

            return run_engine(fn, "Train Motion", {"motion_inversion": inversion_steps, "motion": steps}, model)

        prefix = "motion_" + safe_name("-".join(words), "motion")
        art, path, status = train_or_load("motion", key, prefix, do_train, model)
        parts = live["callback"].parts.get("motion") if live else None
        if art.info.get("whole_frame_inversion"):
            status += "; no masks: each reference token learned the whole frame"
        curve = loss_image(
            art, f"Train Motion '{settings.motion_prompt[:40]}': {len(art.losses)} steps", status, parts
        )
        info = (
            f"{art!r}\n{status}\nfile: {display_path(path)}\nappearance prompt: "
            f"{art.info.get('appearance_prompt', '')}"
        )
        return ui_result((art, curve, info), info, curve)


NODE_CLASS_MAPPINGS = {"VideoMageTrainMotion": VideoMageTrainMotion}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoMageTrainMotion": "VideoMage Train Motion LoRA"}
