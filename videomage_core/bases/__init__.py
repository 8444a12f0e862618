"""Base-model families: everything that depends on a model's architecture, one module per family.

The method modules (subject, motion, fusion, sampling, losses, attention, lora) name no layer of any
base: they ask the family of the model's denoiser (:func:`family_of`) for what differs. A family module
provides:

- ``NAME``, ``TITLE``; ``UNET_CLASSES`` (class names of its denoiser, how a loaded model is recognised);
- ``DEFAULTS``: sampling defaults (``width``, ``height``, ``frames``, ``steps``, ``cfg``) and
  ``DEFAULT_LEVELS``: the blocks whose attention maps the losses and SCS read;
- ``denoise(unet, latents, timesteps, text)``: the denoiser's call on latents ``(B, C, F, h, w)``;
- ``LORA_TARGETS``: ``{"spatial": regex, "temporal": regex}`` of the projections each LoRA trains;
  optionally ``LORA_COVERAGES``: ``{scope: {coverage: regex}}``, wider coverages a LoRA may choose
  (:data:`videomage_core.bases.COVERAGES`; ZeroScope: ``all_linear`` for motions);
- ``attention_layer_names(unet, levels) -> (spatial cross-attention, temporal self-attention)``;
- ``checkpointed_modules(unet)``: the modules gradient checkpointing wraps;
- ``recognizes(folder) -> bool`` and ``load_components(folder, dtype) -> dict`` (``unet``, ``vae``,
  ``text_encoder``, ``tokenizer``, ``scheduler``) for a local diffusers folder, offline;
- ``tiny_components(seed, vocab_size)`` and ``save_folder(folder, components, tokenizer_dir)``: a tiny
  random model of the family's real layout, saved as the family's diffusers folder (tests, demos);
- ``real_size()`` -> the configs of the full-size model, and ``unet_from_config(config)``: the cost
  model's fake twin (:mod:`videomage_core.cost`);
- optionally ``export_files(artifact, name)``: the files ComfyUI's own nodes load
  (:mod:`videomage_core.export`); a family without it has no export.

Optional, for bases unlike the SD-VAE / CLIP / epsilon-prediction UNets (defaults in
:mod:`videomage_core.diffusion`; Wan defines them all): ``PREDICTION`` ("epsilon" or "flow"),
``FRAME_STEP`` (the VAE's temporal compression), ``encode_video`` / ``decode_latents`` /
``encode_text`` / ``vae_scale_factor``, ``default_levels(unet)``, ``RecordingProcessor`` (the
attention-map recorder's processor for its attention class), ``FINGERPRINT_WEIGHTS``,
``tiny_tokenizer(folder)`` and ``TINY_DEFAULTS``.

Adding a base: its module, and one line in :data:`FAMILIES`.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

#: Which layers of a scope a LoRA covers: "attention", the attention projections (the paper's and every
#: family's default, ``LORA_TARGETS``); "all_linear", every Linear of those transformers (MotionDirector's
#: coverage), where the family defines it (``LORA_COVERAGES``). Here, not in ``lora``: the nodes and the
#: CLI list them without importing torch.
COVERAGES = ("attention", "all_linear")

FAMILIES = {
    "zeroscope": "videomage_core.bases.zeroscope",
    "animatediff": "videomage_core.bases.animatediff",
    "wan": "videomage_core.bases.wan",
}


def family(name: str) -> ModuleType:
    """The family module called ``name`` (a key of :data:`FAMILIES`)."""
    from ..errors import require

    require(name in FAMILIES, "base", f"expected one of {sorted(FAMILIES)}, got '{name}'")
    return importlib.import_module(FAMILIES[name])


def families() -> list[ModuleType]:
    return [family(n) for n in FAMILIES]


_BY_CLASS: dict[str, ModuleType] = {}  # denoiser class name -> family (family_of runs on every UNet call)


def family_of(model_or_unet) -> ModuleType:
    """The family of a loaded model (or of its denoiser), recognised by the denoiser's class."""
    cls = type(getattr(model_or_unet, "unet", model_or_unet)).__name__
    if cls not in _BY_CLASS:
        found = [fam for fam in families() if cls in fam.UNET_CLASSES]
        if not found:
            raise TypeError(f"no base family knows a denoiser of class {cls}")
        _BY_CLASS[cls] = found[0]
    return _BY_CLASS[cls]


def default_levels(unet) -> tuple[str, ...]:
    """The blocks whose attention maps the losses and SCS read when the model names none."""
    fam = family_of(unet)
    return tuple(fam.default_levels(unet)) if hasattr(fam, "default_levels") else tuple(fam.DEFAULT_LEVELS)


def detect_family(folder: Path) -> ModuleType | None:
    """The family whose diffusers folder layout ``folder`` has, or None."""
    for fam in families():
        if fam.recognizes(Path(folder)):
            return fam
    return None


def match_attention_layers(unet, levels, spatial: str, temporal: str) -> tuple[list[str], list[str]]:
    """Module names ``<level>.<spatial>`` and ``<level>.<temporal>`` (regexes) for ``levels`` (block
    names such as ``down_blocks.2``): the helper families use for :func:`attention_layer_names`."""
    import re

    level_re = "|".join(re.escape(lv) for lv in levels)
    found_s, found_t = [], []
    for name, _ in unet.named_modules():
        if re.fullmatch(rf"({level_re})\.{spatial}", name):
            found_s.append(name)
        elif re.fullmatch(rf"({level_re})\.{temporal}", name):
            found_t.append(name)
    return found_s, found_t


def quiet_diffusers():
    """A context that silences diffusers' informational warnings (e.g. "modules that should be kept in
    float32: []" on every ``.to(dtype)`` of a model that has none)."""
    import contextlib

    @contextlib.contextmanager
    def quiet():
        from diffusers.utils import logging as dlog

        level = dlog.get_verbosity()
        dlog.set_verbosity_error()
        try:
            yield
        finally:
            dlog.set_verbosity(level)

    return quiet()


def init_defaults(cls) -> dict:
    """A diffusers class's constructor defaults (its default config)."""
    import inspect

    sig = inspect.signature(cls.__init__)
    return {k: p.default for k, p in sig.parameters.items() if k != "self" and p.default is not p.empty}


#: The Stable Diffusion VAE (ZeroScope's and SD1.5's): four levels of 128, 256, 512, 512 channels.
SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
