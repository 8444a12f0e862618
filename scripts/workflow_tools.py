"""Workflow files: node specs (ours and the few core nodes the bundled workflows use), widget
order as the ComfyUI frontend builds it, UI-format -> API-format conversion (what the frontend's
``graphToPrompt()`` does), and tiny-model overrides for tests. Standard library + the pack only.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Core ComfyUI nodes used by the bundled workflows, as INPUT_TYPES / RETURN_TYPES in ComfyUI
# 0.3.64 (nodes.py, comfy_extras/nodes_images.py, nodes_video.py). The real-server test checks their
# widgets against /object_info. ComfyUI 0.33.0 has the same widgets but other display names ("Save
# Animated WEBP", "Stitch Images"; the frontend writes them into `_meta.title`), gives SaveAnimatedWEBP
# an IMAGE output and GetVideoComponents two more outputs (bit_depth, color_space); the browser test
# compares titles with the running server's display names. The file combos list the user's input
# folder; the bundled workflows name the files the README asks for.
CORE_NODES = {
    "CheckpointLoaderSimple": {
        "input": {"required": {"ckpt_name": ([],)}},
        "output": ("MODEL", "CLIP", "VAE"),
        "display": "Load Checkpoint",
    },
    "LoraLoader": {
        "input": {
            "required": {
                "model": ("MODEL",),
                "clip": ("CLIP",),
                "lora_name": ([],),
                "strength_model": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}),
                "strength_clip": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}),
            }
        },
        "output": ("MODEL", "CLIP"),
        "display": "Load LoRA",
    },
    "CLIPTextEncode": {
        "input": {"required": {"text": ("STRING", {"multiline": True}), "clip": ("CLIP",)}},
        "output": ("CONDITIONING",),
        "display": "CLIP Text Encode (Prompt)",
    },
    "EmptyLatentImage": {
        "input": {
            "required": {
                "width": ("INT", {"default": 512, "min": 16, "max": 16384, "step": 8}),
                "height": ("INT", {"default": 512, "min": 16, "max": 16384, "step": 8}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
            }
        },
        "output": ("LATENT",),
        "display": "Empty Latent Image",
    },
    "KSampler": {
        "input": {
            "required": {
                "model": ("MODEL",),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1}),
                "sampler_name": (["euler", "euler_ancestral", "dpmpp_2m", "ddim"],),
                "scheduler": (["normal", "karras", "simple", "ddim_uniform"],),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT",),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        },
        "output": ("LATENT",),
        "display": "KSampler",
    },
    "VAEDecode": {
        "input": {"required": {"samples": ("LATENT",), "vae": ("VAE",)}},
        "output": ("IMAGE",),
        "display": "VAE Decode",
    },
    "SaveImage": {
        "input": {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})}},
        "output": (),
        "display": "Save Image",
    },
    "LoadImage": {
        "input": {"required": {"image": ([], {"image_upload": True})}},
        "output": ("IMAGE", "MASK"),
        "display": "Load Image",
    },
    "LoadVideo": {
        "input": {"required": {"file": ([], {"video_upload": True})}},
        "output": ("VIDEO",),
        "display": "Load Video",
    },
    "GetVideoComponents": {
        "input": {"required": {"video": ("VIDEO",)}},
        "output": ("IMAGE", "AUDIO", "FLOAT"),
        "output_names": ("images", "audio", "fps"),
        "display": "Get Video Components",
    },
    "PreviewImage": {"input": {"required": {"images": ("IMAGE",)}}, "output": (), "display": "Preview Image"},
    "SaveAnimatedWEBP": {
        "input": {
            "required": {
                "images": ("IMAGE",),
                "filename_prefix": ("STRING", {"default": "ComfyUI"}),
                "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}),
                "lossless": ("BOOLEAN", {"default": True}),
                "quality": ("INT", {"default": 80, "min": 0, "max": 100}),
                "method": (["default", "fastest", "slowest"],),
            }
        },
        "output": (),
        "display": "SaveAnimatedWEBP",
    },
    "ImageStitch": {
        "input": {
            "required": {
                "image1": ("IMAGE",),
                "direction": (["right", "down", "left", "up"], {"default": "right"}),
                "match_image_size": ("BOOLEAN", {"default": True}),
                "spacing_width": ("INT", {"default": 0, "min": 0, "max": 1024, "step": 2}),
                "spacing_color": (["white", "black", "red", "green", "blue"], {"default": "white"}),
            },
            "optional": {"image2": ("IMAGE",)},
        },
        "output": ("IMAGE",),
        "display": "Image Stitch",
    },
}

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def pack_nodes() -> tuple[dict, dict]:
    import nodes as pack

    return pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS


def node_spec(class_type: str) -> dict | None:
    """``{"input": INPUT_TYPES, "output": RETURN_TYPES, "output_names", "display"}`` or None."""
    classes, names = pack_nodes()
    if class_type in classes:
        cls = classes[class_type]
        return {
            "input": cls.INPUT_TYPES(),
            "output": tuple(cls.RETURN_TYPES),
            "output_names": tuple(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
            "display": names.get(class_type, class_type),
        }
    if class_type in CORE_NODES:
        spec = dict(CORE_NODES[class_type])
        spec.setdefault("output_names", spec["output"])
        return spec
    return None


def is_widget(spec_entry) -> bool:
    kind = spec_entry[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def has_control(name: str, spec_entry) -> bool:
    """The frontend adds a control_after_generate widget after an INT named seed/noise_seed unless
    the input says otherwise (``control_after_generate`` option)."""
    opts = spec_entry[1] if len(spec_entry) > 1 else {}
    if "control_after_generate" in opts:
        return bool(opts["control_after_generate"])
    return spec_entry[0] == "INT" and name in ("seed", "noise_seed")


def frontend_widget(name: str, spec_entry) -> tuple[str, str] | None:
    """The widget the frontend adds after an input, saved in ``widgets_values`` but never sent to the
    server: ``(name, value in a new node)``. A seed's control_after_generate ("fixed"), or the upload
    button of an image or video file combo (its value is "image" for both)."""
    opts = spec_entry[1] if len(spec_entry) > 1 else {}
    if has_control(name, spec_entry):
        return name, "fixed"
    if opts.get("image_upload") or opts.get("video_upload"):
        return "upload", "image"
    return None


def widget_layout(spec: dict) -> list[tuple[str, object, str | None]]:
    """``[(name, spec entry, frontend-only value or None)]`` in the order of ``widgets_values``."""
    out = []
    for group in ("required", "optional"):
        for name, entry in spec["input"].get(group, {}).items():
            if is_widget(entry):
                out.append((name, entry, None))
                extra = frontend_widget(name, entry)
                if extra:
                    out.append((extra[0], entry, extra[1]))
    return out


def link_inputs(spec: dict) -> list[tuple[str, str, bool]]:
    """``[(name, type, required)]`` of the inputs that take links (not widgets), in slot order."""
    out = []
    for group in ("required", "optional"):
        for name, entry in spec["input"].get(group, {}).items():
            if not is_widget(entry):
                out.append((name, entry[0], group == "required"))
    return out


def ui_to_api(ui: dict) -> dict:
    """What ``app.graphToPrompt().output`` gives for a UI-format workflow (no widgets converted to
    inputs, no groups nodes, no bypassed nodes)."""
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in sorted(ui["nodes"], key=lambda n: n["id"]):
        if node.get("mode", 0) in (2, 4):
            continue
        spec = node_spec(node["type"])
        inputs = {}
        values = list(node.get("widgets_values") or [])
        for (name, _entry, control), value in zip(widget_layout(spec), values):
            if not control:
                inputs[name] = value
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                link = links[inp["link"]]
                inputs[inp["name"]] = [str(link[1]), link[2]]
        api[str(node["id"])] = {
            "inputs": inputs,
            "class_type": node["type"],
            "_meta": {"title": node.get("title") or spec["display"]},
        }
    return api


# Values that make every bundled workflow run in seconds on the tiny model (tests, smoke runs).
TINY = {
    "VideoMageShapesWorldSubject": {"count": 3, "width": 64, "height": 64},
    "VideoMageShapesWorldMotion": {"frames": 4, "width": 64, "height": 64},
    "VideoMageTrainSubject": {
        "steps": 2,
        "rank": 2,
        "width": 64,
        "height": 64,
        "prior_videos": 1,
        "prior_frames": 2,
        "prior_steps": 1,
    },
    "VideoMageTrainMotion": {"steps": 2, "inversion_steps": 1, "rank": 2, "width": 64, "height": 64},
    "VideoMageFuseSubjects": {
        "steps": 2,
        "width": 64,
        "height": 64,
        "frames": 2,
        "generation_steps": 1,
        "videos_per_subject": 1,
        "cutmix_videos": 1,
    },
    "VideoMageCollaborativeSampler": {"frames": 5, "width": 64, "height": 64, "steps": 2, "tau": 1},
    "VideoMageLoadAnimateDiff": {"dtype": "fp32", "device": "cpu"},
    "VideoMageLoadWan": {"dtype": "fp32", "device": "cpu"},
    "EmptyLatentImage": {"width": 64, "height": 64},
    "KSampler": {"steps": 2},
}


def _override(api: dict, table: dict) -> dict:
    """A copy of ``api`` with the literal (unlinked) inputs named in ``table[class_type]`` replaced."""
    api = copy.deepcopy(api)
    for node in api.values():
        for key, value in table.get(node["class_type"], {}).items():
            if key in node["inputs"] and not isinstance(node["inputs"][key], list):
                node["inputs"][key] = value
    return api


def tiny_overrides(api: dict) -> dict:
    return _override(api, TINY)


# Step counts only (sizes and frames kept): the quick-start workflow at the built-in model's size, in
# seconds (tests). Prior videos and fusion videos keep their frame counts.
FAST_STEPS = {
    "VideoMageShapesWorldSubject": {"count": 3},
    "VideoMageTrainSubject": {"steps": 2, "prior_videos": 1, "prior_steps": 1},
    "VideoMageTrainMotion": {"steps": 2, "inversion_steps": 1},
    "VideoMageFuseSubjects": {"steps": 2, "generation_steps": 1, "videos_per_subject": 1, "cutmix_videos": 1},
    "VideoMageCollaborativeSampler": {"steps": 3, "tau": 1},
}


def step_overrides(api: dict) -> dict:
    return _override(api, FAST_STEPS)
