"""Load a base model's diffusers folder, offline, into one :class:`VideoMageModel`.

What differs between base families (which classes load, which layers the LoRAs and attention maps
use) is in :mod:`videomage_core.bases`; this module is the same for all of them."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import VideoMageInputError, require

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(eq=False)
class VideoMageModel:
    """The frozen base model plus what customization adds to it (tokens, LoRA adapters)."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    path: str
    fingerprint: str
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    adapters: dict = field(default_factory=dict)  # adapter name -> {"scope", "rank", "alpha"}
    settings: dict = field(default_factory=dict)  # the folder's videomage.json (what it was trained for)
    dtype_reason: str = ""  # why this dtype (:func:`choose_dtype`), for the nodes' and CLI's messages
    keep_loaded: bool = True  # False: the weights leave the device between uses (:func:`offload`)
    offloaded: bool = False  # the weights are on the CPU now, ``device`` is where they compute

    def __repr__(self) -> str:
        return (f"VideoMageModel({Path(self.path).name}, {str(self.dtype).replace('torch.', '')}, "
                f"{self.device}, adapters={sorted(self.adapters)})")

    @property
    def vae_scale_factor(self) -> int:
        if hasattr(self.family, "vae_scale_factor"):
            return self.family.vae_scale_factor(self.vae)
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_scaling(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def family(self):
        """The base family module (:mod:`videomage_core.bases`) of this model's denoiser."""
        from .bases import family_of

        return family_of(self.unet)

    @property
    def attention_levels(self) -> tuple[str, ...]:
        """The UNet blocks whose attention the losses and SCS read: the model's own choice
        (``attention_levels`` in its ``videomage.json``), else its family's default level."""
        from .bases import default_levels

        return tuple(self.settings.get("attention_levels") or default_levels(self.unet))

    def default(self, name: str, fallback):
        """A default the model was trained for (its ``videomage.json``: ``frames``, ``height``,
        ``width``, ``steps``, ``cfg``, ...), else its family's (``DEFAULTS``), else ``fallback``."""
        if name in self.settings:
            return self.settings[name]
        return self.family.DEFAULTS.get(name, fallback)


def _move_weights(model: VideoMageModel, device: torch.device | str) -> None:
    for module in (model.unet, model.vae, model.text_encoder):  # LoRA adapters and token rows included
        module.to(device)


def offload(model: VideoMageModel) -> bool:
    """Move the weights to the CPU so that the compute device's memory is free for others (ComfyUI's
    own nodes after ours); ``model.device`` stays where they compute. True if anything moved (nothing
    does for a model that computes on the CPU, or is already offloaded)."""
    if model.offloaded or model.device.type == "cpu":
        return False
    _move_weights(model, "cpu")
    model.offloaded = True
    return True


def onload(model: VideoMageModel) -> None:
    """Bring offloaded weights back to ``model.device`` (before any computation)."""
    if model.offloaded:
        _move_weights(model, model.device)
        model.offloaded = False


#: Stages whose every step runs the text encoder (they train a token); the others run on cached text.
TEXT_ENCODER_STAGES = ("subject", "inversion")


def parks_text_encoder(model) -> bool:
    """Whether the base's text encoder leaves the compute device while a stage runs on cached text
    (Wan: umT5-XXL is 11 GB in bf16, as much as the rest of a training step)."""
    return bool(getattr(model.family, "PARK_TEXT_ENCODER", False))


@contextlib.contextmanager
def text_encoder_parked(model):
    """The text encoder on the CPU for the duration (when :func:`parks_text_encoder` and the model computes
    on a GPU); :func:`videomage_core.diffusion.encode_prompts` still works, only slower."""
    move = parks_text_encoder(model) and model.device.type != "cpu" and not model.offloaded
    if move:
        model.text_encoder.to("cpu")
    try:
        yield
    finally:
        if move:
            model.text_encoder.to(model.device)


SETTINGS_FILE = "videomage.json"


def read_model_settings(folder: Path) -> dict:
    """``videomage.json`` of a model folder ({} when absent); a broken file is a clear error."""
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VideoMageInputError("model_path", f"'{path}' is not valid JSON: {exc}") from exc
    require(isinstance(settings, dict), "model_path", f"'{path}' must hold a JSON object")
    levels = settings.get("attention_levels")
    require(levels is None or (isinstance(levels, list) and levels and all(isinstance(x, str) for x in levels)),
            "model_path", f"'{path}': attention_levels must be a list of block names")
    return settings


def model_fingerprint(unet: torch.nn.Module, text_encoder: torch.nn.Module) -> str:
    """Short hash of the base model's configs and a few of its weights (cheap even at full size).

    Weights enter as rounded statistics, so the same model loaded in fp32, fp16 or bf16 has the same
    fingerprint (an artifact trained in fp16 on a GPU loads on the fp32 model).
    """
    def architecture(config: dict) -> str:  # no paths, dtypes or library versions
        skip = {"dtype", "torch_dtype", "transformers_version", "architectures", "name_or_path"}
        return json.dumps({k: v for k, v in config.items() if not k.startswith("_") and k not in skip},
                          sort_keys=True, default=str)

    from .bases import family_of

    h = hashlib.sha256()
    h.update(architecture(dict(unet.config)).encode())
    h.update(architecture(text_encoder.config.to_dict()).encode())
    names = getattr(family_of(unet), "FINGERPRINT_WEIGHTS", ("conv_in.weight", "conv_out.weight"))
    for tensor in [unet.get_parameter(n) for n in names] + [text_encoder.get_input_embeddings().weight[:64]]:
        t = tensor.detach().to("cpu", torch.float64)
        h.update(f"{tuple(t.shape)} {t.abs().sum().item():.3g} {t.pow(2).sum().item():.3g}".encode())
    return h.hexdigest()[:16]


def check_model_folder(path: str | os.PathLike, input_name: str = "model_path"):
    """``(folder, family)`` when ``path`` is a diffusers folder of a known base family with every
    component that family needs, else a clear error."""
    from .bases import FAMILIES, detect_family

    folder = Path(path)
    require(folder.is_dir(), input_name, f"no model folder at '{path}' (expected a diffusers "
            "folder with model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    require((folder / "model_index.json").is_file(), input_name,
            f"'{path}' has no model_index.json: it is not a diffusers model folder")
    fam = detect_family(folder)
    require(fam is not None, input_name, f"'{path}' is a diffusers folder of none of the supported bases "
            f"({', '.join(FAMILIES)}): its model_index.json and unet/config.json name other classes")
    missing = [c for c in fam.COMPONENTS if not (folder / c).is_dir()]
    require(not missing, input_name, f"'{path}' lacks the sub-folders {missing}")
    return folder, fam


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    require(dtype in DTYPES, "dtype", f"expected one of {sorted(DTYPES)}, got '{dtype}'")
    return DTYPES[dtype]


def choose_dtype(device: str | torch.device, requested: str | torch.dtype = "auto") -> tuple[str, str]:
    """The weights' precision for ``device`` and why: ``(name, reason)``, name a key of :data:`DTYPES`.

    ``auto``: bf16 on a CUDA GPU with native bf16 (Ampere and newer: fp32's exponent range, so the
    ~1e-6 per-element gradients of a mean over a video latent stay representable); fp16 on older
    CUDA GPUs, whose training then scales its loss (:class:`~videomage_core.training.LossScale`);
    fp32 on the CPU and MPS, where half precision is slow or partly unsupported.
    """
    if isinstance(requested, torch.dtype):
        names = {v: k for k, v in DTYPES.items()}
        require(requested in names, "dtype", f"expected one of {sorted(DTYPES)}, got {requested}")
        return names[requested], "asked for"
    require(requested == "auto" or requested in DTYPES, "dtype",
            f"expected auto or one of {sorted(DTYPES)}, got '{requested}'")
    if requested != "auto":
        return requested, "asked for"
    dev = torch.device(device)
    if dev.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16", ("auto: this GPU computes bf16 natively (fp32's range at half the memory; "
                            "training needs no loss scaling)")
        return "fp16", ("auto: this GPU has no native bf16, so fp16; training scales its loss "
                        "dynamically so that small gradients do not flush to zero")
    return "fp32", f"auto: fp32 on {dev.type} (half precision is slow or partly unsupported there)"


def check_device(device: str | torch.device, input_name: str = "device") -> torch.device:
    """``device`` as a torch device this machine has (cpu, cuda, cuda:1, mps), else a clear error."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise VideoMageInputError(input_name, f"'{device}' is not a device (expected cpu, cuda, cuda:1, "
                                  "mps, ...)") from exc
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        require(count > 0, input_name, f"'{device}' was asked for but this machine (or this torch build) "
                "has no CUDA device; use cpu")
        require(dev.index is None or dev.index < count, input_name,
                f"'{device}': there are only {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    if dev.type == "mps":
        require(torch.backends.mps.is_available(), input_name, f"'{device}' is not available on this machine")
    return dev


def load_model(path: str | os.PathLike, dtype: str | torch.dtype = "auto",
               device: str | torch.device = "cpu") -> VideoMageModel:
    """Load unet, vae, text_encoder, tokenizer and scheduler from a local diffusers folder.

    Nothing is downloaded. ``dtype`` ``auto`` is :func:`choose_dtype`'s choice for ``device`` (the
    reason is kept as ``model.dtype_reason``). The VAE stays in fp32 when ``dtype`` is fp16 (its
    decoder overflows in fp16), the others take ``dtype``. Every module is frozen and in eval mode.
    """
    folder, fam = check_model_folder(path)
    device = check_device(device)
    dtype, dtype_reason = choose_dtype(device, dtype)
    torch_dtype = resolve_dtype(dtype)
    try:
        c = fam.load_components(folder, torch_dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise VideoMageInputError("model_path", f"could not load '{path}' as a {fam.TITLE} "
                                  f"diffusers folder: {exc}") from exc
    return assemble_model(c, str(folder), device, torch_dtype, dtype_reason, read_model_settings(folder))


def assemble_model(c: dict, path: str, device: torch.device, torch_dtype: torch.dtype, dtype_reason: str,
                   settings: dict | None = None) -> VideoMageModel:
    """A :class:`VideoMageModel` from loaded components (``unet``, ``vae``, ``text_encoder``,
    ``tokenizer``, ``scheduler``): frozen, in eval mode, on ``device``."""
    for module in (c["unet"], c["vae"], c["text_encoder"]):
        module.requires_grad_(False).eval().to(device)
    fingerprint = model_fingerprint(c["unet"], c["text_encoder"])
    return VideoMageModel(unet=c["unet"], vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"],
                          scheduler=c["scheduler"], path=path, fingerprint=fingerprint,
                          device=device, dtype=torch_dtype, settings=dict(settings or {}),
                          dtype_reason=dtype_reason)


def load_animatediff_files(checkpoint: str | os.PathLike, motion_module: str | os.PathLike,
                           tokenizer: str | os.PathLike, dtype: str | torch.dtype = "auto",
                           device: str | torch.device = "cpu") -> VideoMageModel:
    """AnimateDiff from the files ComfyUI users have: an SD1.5 single-file checkpoint, an AnimateDiff
    motion module and a CLIP tokenizer folder (:mod:`videomage_core.bases.animatediff_files`)."""
    from .bases.animatediff_files import load_single_files

    device = check_device(device)
    dtype, dtype_reason = choose_dtype(device, dtype)
    torch_dtype = resolve_dtype(dtype)
    c = load_single_files(checkpoint, motion_module, tokenizer, torch_dtype)
    label = f"{Path(checkpoint).name} + {Path(motion_module).name}"
    return assemble_model(c, label, device, torch_dtype, dtype_reason)


def load_wan_files(diffusion_model: str | os.PathLike, text_encoder: str | os.PathLike, vae: str | os.PathLike,
                   dtype: str | torch.dtype = "auto", device: str | torch.device = "cpu") -> VideoMageModel:
    """Wan from ComfyUI's three files: the diffusion model, the umT5 text encoder (its tokenizer inside)
    and the Wan VAE (:mod:`videomage_core.bases.wan_files`)."""
    from .bases.wan_files import load_single_files

    device = check_device(device)
    dtype, dtype_reason = choose_dtype(device, dtype)
    torch_dtype = resolve_dtype(dtype)
    c = load_single_files(diffusion_model, text_encoder, vae, torch_dtype)
    return assemble_model(c, Path(diffusion_model).name, device, torch_dtype, dtype_reason)
