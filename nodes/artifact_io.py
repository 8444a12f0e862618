"""Save / Load subject and motion artifacts (safetensors under ``<output>/loras/videomage/``)."""

from __future__ import annotations

from .common import (
    STR,
    check_prefix,
    display_path,
    first_error,
    list_artifacts,
    loss_image,
    read_header,
    resolve_artifact,
    save_new,
    ui_result,
)
from .types import CATEGORY, IMAGE, MODEL, MOTION, STRING, SUBJECT


def _file_error(kind: str, name) -> str | None:
    from videomage_core.errors import VideoMageInputError

    input_name = f"{kind}_file"
    try:
        path = resolve_artifact(name, input_name)
    except VideoMageInputError as exc:
        return str(exc)
    info = read_header(path)
    if info is None:
        return f"{input_name}: '{name}' is not a VideoMage subject/motion file"
    if info.get("kind") != kind:
        return f"{input_name}: '{name}' holds a {info.get('kind')}, expected a {kind}"
    return None


def _make_save(kind: str, type_name: str):
    class Save:
        DESCRIPTION = (
            f"Saves a {kind} as output/loras/videomage/<prefix>_NNNNN_.safetensors (a new file "
            "each time, never overwriting; written atomically). LoRA pickers see it at once."
        )
        CATEGORY = CATEGORY
        RETURN_TYPES = ()
        FUNCTION = "save"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {
                "required": {
                    kind: (type_name, {"tooltip": f"The {kind} to save."}),
                    "filename_prefix": STR(
                        kind,
                        "File name prefix under output/loras/videomage/ (sub-folders "
                        "with '/'); a counter is appended.",
                    ),
                }
            }

        @classmethod
        def VALIDATE_INPUTS(cls, filename_prefix):
            return first_error(check_prefix(filename_prefix))

        def save(self, filename_prefix, **inputs):
            art = inputs[kind]
            path = save_new(art, filename_prefix)
            text = f"saved {display_path(path)}\n{art!r}"
            return {"ui": {"text": [text], "videomage_files": [display_path(path)]}}

    Save.__name__ = Save.__qualname__ = f"VideoMageSave{kind.title()}"
    return Save


def _make_load(kind: str, type_name: str):
    class Load:
        DESCRIPTION = (
            f"Loads a saved {kind} (any VideoMage {kind} file under a loras folder, e.g. "
            "output/loras/videomage/). Connect the model to check the file was trained on it."
        )
        CATEGORY = CATEGORY
        RETURN_TYPES = (type_name, IMAGE, STRING)
        RETURN_NAMES = (kind, "loss_curve", "info")
        OUTPUT_TOOLTIPS = (f"The {kind}.", "Its training loss curve.", "What the file holds.")
        FUNCTION = "load"
        HAS_INTERMEDIATE_OUTPUT = True  # keep the info text in the history when cached (common.ui_result)

        @classmethod
        def INPUT_TYPES(cls):
            return {
                "required": {
                    f"{kind}_file": (
                        list_artifacts(kind),
                        {"tooltip": f"A saved VideoMage {kind} file (from a training node or a Save node)."},
                    ),
                },
                "optional": {
                    "model": (
                        MODEL,
                        {
                            "tooltip": "Optional: refuse the file at once if it was trained on "
                            "another base model."
                        },
                    ),
                },
            }

        @classmethod
        def IS_CHANGED(cls, **inputs):
            try:
                path = resolve_artifact(inputs.get(f"{kind}_file"), f"{kind}_file")
                st = path.stat()
                return f"{path}:{st.st_mtime_ns}:{st.st_size}"
            except Exception:
                return ""

        def load(self, model=None, **inputs):
            from videomage_core.artifacts import check_compatible, load_artifact

            name = inputs[f"{kind}_file"]
            path = resolve_artifact(name, f"{kind}_file")
            art = load_artifact(path, expected_kind=kind, input_name=f"{kind}_file")
            if model is not None:
                check_compatible(model, art, f"{kind}_file")
            status = f"loaded {display_path(path)}"
            curve = loss_image(art, f"{kind} {', '.join(art.tokens)}: {len(art.losses)} steps", status)
            info = f"{art!r}\n{status}"
            return ui_result((art, curve, info), info)

    Load.__name__ = Load.__qualname__ = f"VideoMageLoad{kind.title()}"
    return Load


VideoMageSaveSubject = _make_save("subject", SUBJECT)
VideoMageSaveMotion = _make_save("motion", MOTION)


class VideoMageLoadSubject(_make_load("subject", SUBJECT)):
    @classmethod
    def VALIDATE_INPUTS(cls, subject_file):
        return first_error(_file_error("subject", subject_file))


class VideoMageLoadMotion(_make_load("motion", MOTION)):
    @classmethod
    def VALIDATE_INPUTS(cls, motion_file):
        return first_error(_file_error("motion", motion_file))


NODE_CLASS_MAPPINGS = {
    "VideoMageSaveSubject": VideoMageSaveSubject,
    "VideoMageSaveMotion": VideoMageSaveMotion,
    "VideoMageLoadSubject": VideoMageLoadSubject,
    "VideoMageLoadMotion": VideoMageLoadMotion,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VideoMageSaveSubject": "VideoMage Save Subject",
    "VideoMageSaveMotion": "VideoMage Save Motion",
    "VideoMageLoadSubject": "VideoMage Load Subject",
    "VideoMageLoadMotion": "VideoMage Load Motion",
}
