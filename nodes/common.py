"""What every VideoMage node shares: input specs with tooltips, request fingerprints, the artifact
store under ``<output>/loras/videomage/``, the training runner (progress, cancel, inference mode)
and UI results (a preview image and a status text)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from pathlib import Path

import torch

from videomage_core import __version__ as ENGINE_VERSION
from videomage_core.dependencies import require_dependencies
from videomage_core.errors import TrainingCancelled, VideoMageInputError

from . import comfy_bridge as bridge
from .types import ARTIFACT_SUBFOLDER, MAX_SEED, MAX_SIZE

# ------------------------------------------------------------------ input specs


def INT(default, lo, hi, tooltip, step=1, **extra):
    return ("INT", {"default": default, "min": lo, "max": hi, "step": step, "tooltip": tooltip, **extra})


def FLOAT(default, lo, hi, step, tooltip, **extra):
    return ("FLOAT", {"default": default, "min": lo, "max": hi, "step": step, "tooltip": tooltip, **extra})


def STR(default, tooltip, multiline=False):
    return ("STRING", {"default": default, "multiline": multiline, "tooltip": tooltip})


def SEED(tooltip, control=True):
    """A seed widget. Training seeds get no control widget (a fixed seed keeps a trained result reusable)."""
    return (
        "INT",
        {"default": 0, "min": 0, "max": MAX_SEED, "tooltip": tooltip, "control_after_generate": control},
    )


def SIZE(default, what, tooltip_extra=""):
    return INT(
        default,
        8,
        MAX_SIZE,
        f"{what} in pixels, a multiple of 8 (the paper: 576x320).{tooltip_extra}",
        step=8,
    )


def first_error(*checks):
    """``VALIDATE_INPUTS`` result: True, or the first error message.

    ComfyUI shows a ``VALIDATE_INPUTS`` error under *every* input the method takes (execution.py
    attaches the one result to each of its arguments), so a node's ``VALIDATE_INPUTS`` takes only
    inputs that all of its errors are about: its ``width``/``height`` pair, or its one file or model
    name. Checks of its text inputs (token, superclass, prompt, ...) run when the node starts, before
    any work (:func:`raise_first`), where the sampler's prompt-against-subject check runs too."""
    for c in checks:
        if c:
            return c
    return True


def raise_first(*checks) -> None:
    """Raise the first ``"input: message"`` error as a :class:`VideoMageInputError` for that input."""
    for c in checks:
        if c:
            name, message = c.split(": ", 1)
            raise VideoMageInputError(name, message)


def size_error(width, height) -> str | None:
    """The ``width``/``height`` pair's one check (multiples of 8 within the widgets' range)."""
    if width is None or height is None:
        return None
    w, h = int(width), int(height)
    if w % 8 or h % 8 or not (8 <= w <= MAX_SIZE and 8 <= h <= MAX_SIZE):
        return f"width/height: must be multiples of 8 from 8 to {MAX_SIZE}, got {width}x{height}"
    return None


# ------------------------------------------------------------------ fingerprints


def tensor_digest(x) -> str | None:
    if x is None:
        return None
    t = x.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha256(str(tuple(t.shape)).encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()[:24]


def artifact_digest(a) -> str | None:
    if a is None:
        return None
    h = hashlib.sha256()
    for group in (a.lora, a.tokens):
        for k in sorted(group):
            h.update(k.encode())
            h.update(group[k].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def request_key(kind: str, model, settings: dict, inputs: dict) -> str:
    """Everything a trained result depends on: the base model, its dtype, the settings, the input
    tensors' contents and the engine version. The same request gives the same key after a restart."""
    payload = {
        "kind": kind,
        "engine": ENGINE_VERSION,
        "base": model.fingerprint,
        "dtype": str(model.dtype),
        "settings": settings,
        "inputs": inputs,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


# ------------------------------------------------------------------ the artifact store

_SAFE_PREFIX = re.compile(r"^[A-Za-z0-9_\-+.]+(/[A-Za-z0-9_\-+.]+)*$")
_header_cache: dict[str, tuple[float, int, dict | None]] = {}


def artifact_folder() -> Path:
    return bridge.output_dir() / "loras" / ARTIFACT_SUBFOLDER


def cache_folder() -> Path:
    """Prior / fusion videos and resumable training checkpoints (kept across restarts)."""
    return bridge.output_dir() / "videomage_cache"


def safe_name(text: str, fallback: str = "x") -> str:
    text = re.sub(r"[^A-Za-z0-9_\-+]+", "_", text).strip("_")
    return text[:40] or fallback


def read_header(path: Path) -> dict | None:
    """The ``videomage`` metadata of a safetensors file (header only), or None; cached by mtime."""
    try:
        st = path.stat()
    except OSError:
        return None
    key = str(path)
    hit = _header_cache.get(key)
    if hit and hit[0] == st.st_mtime and hit[1] == st.st_size:
        return hit[2]
    info = None
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if 0 < n < 100_000_000:
                meta = json.loads(f.read(n)).get("__metadata__") or {}
                if "videomage" in meta:
                    info = json.loads(meta["videomage"])
    except (OSError, ValueError):
        info = None
    _header_cache[key] = (st.st_mtime, st.st_size, info)
    return info


def check_prefix(prefix: str, input_name: str = "filename_prefix") -> str | None:
    if not prefix or not _SAFE_PREFIX.match(prefix) or any(p in ("..", ".") for p in prefix.split("/")):
        return (
            f"{input_name}: '{prefix}' must be a relative name of letters, digits, '_', '-', '+', '.' "
            "and '/', staying inside <output>/loras/videomage"
        )
    return None


def save_new(artifact, prefix: str) -> Path:
    """Save ``artifact`` as ``<output>/loras/videomage/<prefix>_NNNNN_.safetensors``: atomic (a
    temporary file, then a hard link that fails if the name exists), never overwriting."""
    from videomage_core.artifacts import save_artifact

    err = check_prefix(prefix)
    if err:
        raise VideoMageInputError("filename_prefix", err.split(": ", 1)[1])
    base = artifact_folder()
    folder = (base / prefix).parent
    stem = (base / prefix).name
    real_base = os.path.realpath(base)
    if os.path.commonpath([real_base, os.path.realpath(folder)]) != real_base:  # e.g. through a symlink
        raise VideoMageInputError("filename_prefix", f"'{prefix}' leaves {base}")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{stem}.{uuid.uuid4().hex}.partial"
    try:
        save_artifact(artifact, tmp)
        pattern = re.compile(re.escape(stem) + r"_(\d{5})_\.safetensors$")
        counter = 1 + max([int(m.group(1)) for f in os.listdir(folder) if (m := pattern.match(f))], default=0)
        while True:
            final = folder / f"{stem}_{counter:05d}_.safetensors"
            try:
                os.link(tmp, final)
                break
            except FileExistsError:
                counter += 1
    finally:
        tmp.unlink(missing_ok=True)
    return final


def display_path(path: Path) -> str:
    try:
        return Path(path).relative_to(bridge.output_dir()).as_posix()
    except ValueError:
        return str(path)


def find_saved(key: str) -> Path | None:
    """The saved artifact whose request fingerprint is ``key`` (newest first), if any."""
    folder = artifact_folder()
    if not folder.is_dir():
        return None
    hits = []
    for path in folder.rglob("*.safetensors"):
        info = read_header(path)
        if info and (info.get("info") or {}).get("request_key") == key:
            hits.append(path)
    return max(hits, key=lambda p: p.stat().st_mtime) if hits else None


def list_artifacts(kind: str) -> list[str]:
    """Names (relative to a ``loras`` folder, '/'-separated) of VideoMage files of ``kind``."""
    names = set()
    for base in bridge.lora_dirs():
        if not base.is_dir():
            continue
        for path in base.rglob("*.safetensors"):
            if path.name.startswith("."):
                continue
            info = read_header(path)
            if info and info.get("kind") == kind:
                names.add(path.relative_to(base).as_posix())
    return sorted(names)


def resolve_artifact(name: str, input_name: str) -> Path:
    """The file behind a listed name; refuses names that leave the loras folders or do not exist."""
    if not isinstance(name, str) or not name.strip():
        raise VideoMageInputError(input_name, "no file chosen")
    if os.path.isabs(name) or any(part == ".." for part in re.split(r"[\\/]", name)):
        raise VideoMageInputError(input_name, f"'{name}' leaves the loras folders (use a name from the list)")
    for base in bridge.lora_dirs():
        path = base / name
        real, root = os.path.realpath(path), os.path.realpath(base)
        if not real.startswith(root + os.sep):
            raise VideoMageInputError(input_name, f"'{name}' leaves the loras folder {base}")
        if path.is_file():
            return path
    where = ", ".join(str(b) for b in bridge.lora_dirs())
    raise VideoMageInputError(input_name, f"no file '{name}' in {where}")


# ------------------------------------------------------------------ running the engine


def clone(x):
    """A normal (non-inference) copy of an incoming tensor, made inside ``inference_mode(False)``."""
    return x.detach().clone() if isinstance(x, torch.Tensor) else x


class LiveLoss:
    """Collects losses from the engine callback and renders a preview at most once a second."""

    def __init__(self, title: str, stages: dict[str, int]):
        self.title = title
        self.progress = bridge.Progress(stages)
        self.losses: dict[str, list[float]] = {}
        self.parts: dict[str, list[dict]] = {}
        self.last = 0.0

    def __call__(self, info) -> None:
        if not info.has_loss:  # a generation stage (prior videos): the bar only
            self.progress.update(info.stage, info.step, info.total, None)
            return
        self.losses.setdefault(info.stage, []).append(float(info.loss))
        self.parts.setdefault(info.stage, []).append(dict(info.parts))
        preview = None
        now = time.monotonic()
        if self.progress.bar is not None and (now - self.last > 1.0 or info.step == info.total):
            from videomage_core.plots import render_pil

            self.last = now
            preview = render_pil(
                self.losses[info.stage],
                f"{self.title}: {info.stage} {info.step}/{info.total}",
                width=384,
                height=224,
            )
        self.progress.update(info.stage, info.step, info.total, preview)


def run_engine(fn, title: str, stages: dict[str, int], model=None):
    """Run ``fn(callback, cancel)`` the way ComfyUI needs training and guided sampling to run:
    ComfyUI's models unloaded first, ``model``'s weights brought to its device, autograd on (ComfyUI
    runs nodes under inference mode), a progress bar per step, and a Cancel that stops within one
    step. The engine's cancel check saves a resumable checkpoint before it stops; the pending Cancel
    is then raised as ComfyUI's own interruption. Afterwards, unless the model was loaded with
    ``keep_loaded``, its weights go back to the CPU, so ComfyUI's own nodes after ours find the GPU
    memory free (ComfyUI's model management does not see our modules)."""
    from videomage_core.model import offload, onload

    require_dependencies()
    live = LiveLoss(title, stages)
    bridge.free_memory()
    if model is not None:
        onload(model)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            try:
                return fn(live, bridge.interrupted)
            except TrainingCancelled:
                bridge.raise_if_interrupted()
                raise
    finally:
        if model is not None and not model.keep_loaded and offload(model):
            bridge.empty_cache()


def checkpoint_path(kind: str, key: str) -> Path:
    folder = cache_folder() / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{kind}_{key}.safetensors"


def drop_checkpoints(path: Path) -> None:
    for p in (path, Path(f"{path}.inversion")):
        p.unlink(missing_ok=True)


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint holds (0 if none): for the 'resumed' note."""
    if not path.is_file():
        return 0
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return int((f.metadata() or {}).get("step", 0))
    except Exception:
        return 0


def train_or_load(kind: str, key: str, prefix: str, train, model=None):
    """Load the artifact saved for this request fingerprint, or train and save it.

    What is trained on the built-in model is saved under ``shapesworld_builtin/``, so that the
    sample workflows' files (``videomage/<name>_00001_``, trained on ZeroScope) are never the quick
    start's. Returns ``(artifact, path, status)``; ``status`` is a sentence for the UI."""
    from videomage_core.artifacts import load_artifact
    from videomage_core.pretrained import BUILTIN_NAME, is_builtin

    if model is not None and is_builtin(model):
        prefix = f"{BUILTIN_NAME}/{prefix}"

    saved = find_saved(key)
    if saved is not None:
        try:
            art = load_artifact(saved, expected_kind="subject" if kind == "fusion" else kind)
            return art, saved, (f"loaded {saved.name}: the same request was trained before, not retrained")
        except Exception:
            pass  # unreadable: train again
    ckpt = checkpoint_path(kind, key)
    resumed = max(checkpoint_step(ckpt), checkpoint_step(Path(f"{ckpt}.inversion")))
    t0 = time.perf_counter()
    art = train(ckpt)
    art.info["request_key"] = key
    path = save_new(art, prefix)
    drop_checkpoints(ckpt)
    status = f"trained in {time.perf_counter() - t0:.1f} s, saved {path.name}"
    if resumed:
        status += f" (resumed from a cancelled run's checkpoint at step {resumed})"
    return art, path, status


# ------------------------------------------------------------------ UI results


def preview_image(image: torch.Tensor, prefix: str = "videomage") -> dict | None:
    """Save ``image [1, H, W, 3]`` into the temp folder for the node's preview; None without ComfyUI."""
    if not bridge.in_comfy():
        return None
    import numpy as np
    from PIL import Image

    folder = bridge.temp_dir()
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}.png"
    arr = (image[0].detach().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr).save(folder / name)
    return {"filename": name, "subfolder": "", "type": "temp"}


def ui_result(result: tuple, text: str, preview: torch.Tensor | None = None) -> dict:
    """The node's outputs plus what the node shows (``text``, and ``preview`` as an image).

    A node returning this declares ``HAS_INTERMEDIATE_OUTPUT = True``: ComfyUI up to 0.3.67 kept
    every node's UI in a separate cache and listed it in ``/history`` even when the node was cached;
    from 0.3.68 (the RAM-pressure cache change) the history lists only the nodes that ran, and from
    0.19.0 it re-sends a cached non-output node's UI (to the page and the history) only when that
    flag is set (older versions ignore it). Without it, a training served from the cache shows nothing."""
    ui = {"text": [text]}
    if preview is not None:
        item = preview_image(preview)
        if item is not None:
            ui["images"] = [item]
    return {"ui": ui, "result": result}


def loss_image(art, title: str, status: str, parts=None) -> torch.Tensor:
    from videomage_core.plots import render_loss_curve

    notes = [status, f"{art!r}"[:90]]
    return render_loss_curve(art.losses, title, parts=parts, notes=notes)


def text_image(lines, width: int = 512, height: int = 160) -> torch.Tensor:
    """A small dark image with text lines, ``[1, H, W, 3]`` (placeholders for absent previews)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from videomage_core.plots import BACKGROUND, TEXT, _font

    img = Image.new("RGB", (max(64, width), max(32, height)), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((10, 10 + 16 * i), line, fill=TEXT, font=_font(12))
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
