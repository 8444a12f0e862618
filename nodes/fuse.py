"""Fuse LoRAs: 2-4 trained subjects -> one spatial LoRA holding every token (method section 3)."""

from __future__ import annotations

from dataclasses import asdict

from .common import (
    FLOAT,
    INT,
    SEED,
    SIZE,
    artifact_digest,
    cache_folder,
    clone,
    display_path,
    first_error,
    loss_image,
    request_key,
    run_engine,
    safe_name,
    size_error,
    tensor_digest,
    text_image,
    train_or_load,
    ui_result,
)
from .types import CATEGORY, IMAGE, MASK, MODEL, STRING, SUBJECT

MAX_SUBJECTS = 4


def _preview_path(key):
    return cache_folder() / "previews" / f"cutmix_{key}.safetensors"


class VideoMageFuseSubjects:
    DESCRIPTION = (
        "Fuses 2-4 trained subjects into one spatial LoRA that knows every token: starts from "
        "the exact average of their weight deltas, then trains L_fusion (each subject model "
        "distilled on videos it generated) + lambda2 * L_attn (each token's cross-attention "
        "matched to its mask on CutMix videos) (VideoMage, section 3). Saved under "
        "output/loras/videomage/; the same request later loads that file."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (SUBJECT, IMAGE, IMAGE, STRING)
    RETURN_NAMES = ("fused_subject", "loss_curve", "cutmix_preview", "info")
    OUTPUT_TOOLTIPS = (
        "One subject artifact holding every input subject's token.",
        "The fusion loss per step (L_fusion and L_attn).",
        "The CutMix training videos (two subjects pasted on a background) as frames.",
        "What was done: trained or loaded, the file.",
    )
    FUNCTION = "fuse"
    HAS_INTERMEDIATE_OUTPUT = True  # keep the preview in the history when cached (common.ui_result)

    @classmethod
    def INPUT_TYPES(cls):
        optional = {}
        for i in range(3, MAX_SUBJECTS + 1):
            optional[f"subject_{i}"] = (SUBJECT, {"tooltip": f"Optional subject {i}."})
        for i in range(1, MAX_SUBJECTS + 1):
            optional[f"images_{i}"] = (
                IMAGE,
                {
                    "tooltip": f"Optional: subject {i}'s images, for CutMix "
                    "sources instead of generated videos (give "
                    "images and masks for every subject, or none)."
                },
            )
            optional[f"masks_{i}"] = (
                MASK,
                {
                    "tooltip": f"Optional: subject {i}'s masks (1 = subject), one "
                    f"per image of images_{i}. Without them masks come "
                    "from each subject's own token attention."
                },
            )
        optional["gradient_checkpointing"] = (["auto", "on", "off"], {"default": "auto", "tooltip": (
            "Recompute activations in the backward pass: far less GPU memory, about 20-30 % more "
            "time, identical result. auto: on only when the memory estimate says the step would "
            "not fit the GPU's free memory.")})
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The base model the subjects were trained on."}),
                "subject_1": (
                    SUBJECT,
                    {"tooltip": "A trained subject (VideoMage Train Subject LoRA or Load Subject)."},
                ),
                "subject_2": (SUBJECT, {"tooltip": "Another trained subject with a different token."}),
                "steps": INT(300, 1, 100000, "Fusion steps (the paper: 250-450)."),
                "lambda2": FLOAT(
                    0.6,
                    0.0,
                    10.0,
                    0.01,
                    "Weight of the attention loss L_attn that keeps the "
                    "subjects' attributes apart (the paper: 0.6); 0 = the 'w/o L_attn' ablation.",
                ),
                "lr_lora": FLOAT(1e-4, 1e-7, 1.0, 1e-5, "Learning rate of the fused LoRA."),
                "seed": SEED(
                    "Seed of the generated videos, CutMix layouts and training noise.", control=False
                ),
                "width": SIZE(576, "Width of the generated and CutMix videos"),
                "height": SIZE(320, "Height of the generated and CutMix videos"),
                "frames": INT(8, 2, 128, "Frames of each generated video."),
                "generation_steps": INT(25, 1, 500, "Sampling steps of each generated video (cached)."),
                "videos_per_subject": INT(2, 1, 32, "Videos generated per subject for L_fusion (cached)."),
                "cutmix_videos": INT(4, 1, 64, "CutMix videos built for L_attn."),
            },
            "optional": optional,
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width, height):
        return first_error(size_error(width, height))

    def fuse(
        self,
        model,
        subject_1,
        subject_2,
        steps,
        lambda2,
        lr_lora,
        seed,
        width,
        height,
        frames,
        generation_steps,
        videos_per_subject,
        cutmix_videos,
        **optional,
    ):
        import torch

        from videomage_core.artifacts import atomic_save_safetensors
        from videomage_core.errors import VideoMageInputError
        from videomage_core.fusion import FusionSettings, fuse_subjects
        from videomage_core.fusion import generation_steps as generation_steps_of
        from videomage_core.preflight import check_memory, parse_checkpointing

        subjects = [subject_1, subject_2] + [
            optional[f"subject_{i}"]
            for i in range(3, MAX_SUBJECTS + 1)
            if optional.get(f"subject_{i}") is not None
        ]
        n = len(subjects)
        given = [
            i
            for i in range(1, MAX_SUBJECTS + 1)
            if optional.get(f"images_{i}") is not None or optional.get(f"masks_{i}") is not None
        ]
        pairs = None
        if given:
            pairs = []
            for i in range(1, n + 1):
                imgs, msk = optional.get(f"images_{i}"), optional.get(f"masks_{i}")
                if imgs is None or msk is None:
                    missing = f"images_{i}" if imgs is None else f"masks_{i}"
                    raise VideoMageInputError(
                        missing,
                        "with user images/masks, every subject needs both "
                        f"images and masks ({n} subjects are connected)",
                    )
                pairs.append((imgs, msk))
            extra = [i for i in given if i > n]
            if extra:
                raise VideoMageInputError(
                    f"images_{extra[0]}",
                    f"images/masks for subject {extra[0]} but only {n} subjects are connected",
                )
        settings = FusionSettings(
            steps=steps,
            lambda2=lambda2,
            lr_lora=lr_lora,
            seed=seed,
            frames=frames,
            height=height,
            width=width,
            generation_steps=generation_steps,
            videos_per_subject=videos_per_subject,
            cutmix_videos=cutmix_videos,
        )
        key = request_key(
            "fusion",
            model,
            asdict(settings),
            {
                "subjects": [artifact_digest(s) for s in subjects],
                "user": [(tensor_digest(a), tensor_digest(b)) for a, b in pairs] if pairs else None,
            },
        )
        live = {}
        settings.gradient_checkpointing = parse_checkpointing(optional.get("gradient_checkpointing", "auto"))

        def do_train(ckpt):
            def fn(callback, cancel):
                live["callback"] = callback
                with torch.inference_mode(False):
                    user = [(clone(a), clone(b)) for a, b in pairs] if pairs else None
                check_memory(model, "fusion", settings, subjects=n, ranks=sum(s.rank for s in subjects))
                return fuse_subjects(
                    model,
                    subjects,
                    settings,
                    subject_images=user,
                    callback=callback,
                    cancel=cancel,
                    checkpoint_path=ckpt,
                    cache_dir=cache_folder(),
                )

            art = run_engine(fn, "Fuse Subjects",
                             {"fusion_videos": generation_steps_of(settings, n), "fusion": steps}, model)
            frames_list = getattr(art, "cutmix_preview", None) or []
            if frames_list:
                atomic_save_safetensors(
                    {"frames": torch.cat([f.float().cpu() for f in frames_list])},
                    _preview_path(key),
                    {"format": "pt"},
                )
            return art

        tokens = "+".join(safe_name(t) for s in subjects for t in s.tokens)
        art, path, status = train_or_load("fusion", key, f"fused_{tokens}"[:80], do_train, model)
        parts = live["callback"].parts.get("fusion") if live else None
        curve = loss_image(art, f"Fuse {', '.join(art.tokens)}: {len(art.losses)} steps", status, parts)
        preview = None
        if _preview_path(key).is_file():
            from safetensors.torch import load_file

            preview = load_file(str(_preview_path(key)))["frames"]
        if preview is None:
            preview = text_image(
                ["no CutMix preview", "(lambda2 = 0: L_attn off)" if lambda2 == 0 else ""], width, height
            )
        info = f"{art!r}\n{status}\nfile: {display_path(path)}"
        return ui_result((art, curve, preview, info), info, curve)


NODE_CLASS_MAPPINGS = {"VideoMageFuseSubjects": VideoMageFuseSubjects}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoMageFuseSubjects": "VideoMage Fuse Subject LoRAs"}
