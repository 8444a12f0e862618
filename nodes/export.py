"""Export Subject / Export Motion: a trained artifact in the formats ComfyUI's own nodes load (AnimateDiff
bases): a subject as an SD1.5 LoRA for core Load LoRA plus its tokens as embeddings, a motion as an
AnimateDiff-Evolved motion LoRA. Written atomically into ComfyUI's model folders, never overwriting."""

from __future__ import annotations

from . import comfy_bridge as bridge
from .common import STR, first_error
from .types import CATEGORY, MOTION, STRING, SUBJECT


def name_error(name) -> str | None:
    from videomage_core.errors import VideoMageInputError
    from videomage_core.export import check_export_name

    try:
        check_export_name(name)
    except VideoMageInputError as exc:
        return str(exc)
    return None


def _make_export(kind: str, type_name: str, where: str):
    class Export:
        DESCRIPTION = f"Writes the {kind} where ComfyUI's own nodes find it: {where}."
        CATEGORY = CATEGORY
        RETURN_TYPES = (STRING,)
        RETURN_NAMES = ("files",)
        OUTPUT_TOOLTIPS = ("The files written and how to use each.",)
        FUNCTION = "export"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {
                "required": {
                    kind: (type_name, {"tooltip": f"A {kind} trained on an AnimateDiff or Wan model."}),
                    "name": STR(f"my_{kind}", "File name stem (letters, digits, '_' or '-'); a numbered "
                                "name is used when a file of that name exists."),
                }
            }

        @classmethod
        def VALIDATE_INPUTS(cls, name):
            return first_error(name_error(name))

        def export(self, name, **inputs):
            from videomage_core.export import export_artifact, usage

            lines = usage(export_artifact(inputs[kind], name, bridge.model_folder))
            text = "\n".join(lines)
            return {"ui": {"text": [text]}, "result": (text,)}

    return Export


class VideoMageExportSubject(_make_export("subject", SUBJECT, "AnimateDiff: models/loras (an SD1.5 LoRA for Load "
                                          "LoRA) and models/embeddings (each token, as embedding:<token>); Wan: "
                                          "models/loras (for LoraLoaderModelOnly on the native Wan model)")):
    pass


class VideoMageExportMotion(_make_export("motion", MOTION, "AnimateDiff: models/animatediff_motion_lora (for "
                                         "AnimateDiff-Evolved's Load AnimateDiff LoRA); Wan: models/loras (for "
                                         "LoraLoaderModelOnly on the native Wan model)")):
    pass


NODE_CLASS_MAPPINGS = {"VideoMageExportSubject": VideoMageExportSubject, "VideoMageExportMotion": VideoMageExportMotion}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VideoMageExportSubject": "VideoMage Export Subject (SD1.5 LoRA + embedding)",
    "VideoMageExportMotion": "VideoMage Export Motion (AnimateDiff motion LoRA)",
}
