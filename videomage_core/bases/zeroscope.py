"""ZeroScope / ModelScope text-to-video (the paper's base): ``UNet3DConditionModel``, the SD VAE and a
CLIP text encoder, in a ``TextToVideoSDPipeline`` diffusers folder.

Spatial layers are the UNet's ``attentions`` (self- and cross-attention on each frame), temporal layers
its ``temp_attentions`` and ``transformer_in`` (self-attention across frames, no text).
"""
from __future__ import annotations

from pathlib import Path

import torch

from . import SD_VAE, init_defaults, match_attention_layers, read_json

NAME = "zeroscope"
TITLE = "ZeroScope / ModelScope T2V (UNet3D)"
UNET_CLASSES = ("UNet3DConditionModel",)
PIPELINE_CLASS = "TextToVideoSDPipeline"

#: The paper's settings on ZeroScope v2 576w.
DEFAULTS = {"width": 576, "height": 320, "frames": 24, "steps": 50, "cfg": 9.0}
#: The quarter-resolution level (10x18 at 320x576), as ``method.md`` section 4 decides.
DEFAULT_LEVELS = ("down_blocks.2", "up_blocks.1")

_PROJ = r"(to_q|to_k|to_v|to_out\.0)"
LORA_TARGETS = {
    "spatial": rf".*\.attentions\.\d+\.transformer_blocks\.\d+\.attn[12]\.{_PROJ}",
    "temporal": rf"(transformer_in|.*\.temp_attentions\.\d+)\.transformer_blocks\.\d+\.attn[12]\.{_PROJ}",
}
#: Every Linear of the temporal transformers (proj_in, attention, feed-forward, proj_out): what
#: MotionDirector's LoRA injector covers in its temporal path; ``bench/motion_capacity.py`` compares it
#: with ``LORA_TARGETS["temporal"]``.
TEMPORAL_LINEAR = (r"(transformer_in|.*\.temp_attentions\.\d+)\.(proj_in|proj_out|transformer_blocks\.\d+\."
                   rf"(attn[12]\.{_PROJ}|ff\.net\.0\.proj|ff\.net\.2))")
#: Beyond the attention projections (``videomage_core.bases.COVERAGES``): a motion LoRA on every Linear
#: of the temporal transformers (MotionDirector's coverage).
LORA_COVERAGES = {"temporal": {"all_linear": TEMPORAL_LINEAR}}
#: Every weight of the temporal layers (full fine-tuning in ``bench/motion_capacity.py``).
TEMPORAL_MODULES = r"(transformer_in|.*\.temp_attentions|.*\.temp_convs)\..*"
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def attention_layer_names(unet, levels) -> tuple[list[str], list[str]]:
    """SCA: each spatial transformer's cross-attention ``attn2``; TSA: the temporal transformers'
    self-attentions ``attn1`` and ``attn2`` (both attend across frames)."""
    return match_attention_layers(unet, levels, r"attentions\.\d+\.transformer_blocks\.\d+\.attn2",
                                  r"temp_attentions\.\d+\.transformer_blocks\.\d+\.attn[12]")


def denoise(unet, latents, timesteps, text):
    """The denoiser's output for latents ``(B, C, F, h, w)`` and text ``(B, 77, D)``."""
    return unet(latents, timesteps, encoder_hidden_states=text, return_dict=False)[0]


def checkpointed_modules(unet):
    """Each block's resnets, temp_convs, attentions and temp_attentions, and ``transformer_in``
    (``UNet3DConditionModel``'s own gradient-checkpointing flag refuses)."""
    yield unet.transformer_in
    for block in list(unet.down_blocks) + [unet.mid_block] + list(unet.up_blocks):
        for part in ("resnets", "temp_convs", "attentions", "temp_attentions"):
            yield from getattr(block, part, None) or []


def recognizes(folder: Path) -> bool:
    index = read_json(folder / "model_index.json")
    unet = read_json(folder / "unet" / "config.json")
    return index.get("_class_name") == PIPELINE_CLASS or unet.get("_class_name") in UNET_CLASSES


def load_components(folder: Path, torch_dtype: torch.dtype) -> dict:
    """The five components of a local folder (nothing downloaded). The VAE stays fp32 under fp16."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    vae_dtype = torch.float32 if torch_dtype == torch.float16 else torch_dtype
    return {
        "unet": UNet3DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch_dtype,
                                                     local_files_only=True),
        "vae": AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=vae_dtype, local_files_only=True),
        # cast after loading: the keyword is ``torch_dtype`` before transformers 4.56 and ``dtype`` after
        "text_encoder": CLIPTextModel.from_pretrained(folder / "text_encoder",
                                                      local_files_only=True).to(torch_dtype),
        "tokenizer": CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
        "scheduler": DDIMScheduler.from_pretrained(folder / "scheduler", local_files_only=True),
    }


def scheduler():
    """ZeroScope's DDIM schedule (scaled-linear betas 0.00085..0.012)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def tiny_components(seed: int = 0, vocab_size: int = 400, text_dim: int = 32) -> dict:
    """Random tiny UNet3D / VAE / CLIP text encoder with the real four-level layout."""
    from diffusers import UNet3DConditionModel

    from ..tiny import tiny_text_encoder, tiny_vae

    torch.manual_seed(seed)
    unet = UNet3DConditionModel(
        sample_size=8, block_out_channels=(32, 32, 64, 64), layers_per_block=1,
        cross_attention_dim=text_dim, attention_head_dim=8, norm_num_groups=8,
    )
    return {"unet": unet, "vae": tiny_vae(), "text_encoder": tiny_text_encoder(vocab_size, text_dim),
            "scheduler": scheduler()}


def save_folder(folder: Path, components: dict, tokenizer_dir) -> None:
    """Write a ``TextToVideoSDPipeline`` folder (model_index.json + one sub-folder each)."""
    from ..tiny import save_components

    save_components(folder, components, tokenizer_dir, PIPELINE_CLASS)


# ZeroScope v2 576w (= ModelScope's T2V): UNet3D defaults, the SD VAE, OpenCLIP-H's text tower
REAL_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                 num_attention_heads=16, projection_dim=1024, max_position_embeddings=77,
                 hidden_act="gelu", bos_token_id=0, eos_token_id=1, pad_token_id=1)


def real_size() -> dict:
    """ZeroScope v2 576w's configs: ``unet`` (UNet3D defaults, 1.41 B parameters), ``text`` (CLIP
    config), ``vae`` and its DDIM ``scheduler``; what the cost model builds its fake twin from."""
    from diffusers import AutoencoderKL, UNet3DConditionModel

    return {"unet": init_defaults(UNet3DConditionModel), "text": dict(REAL_TEXT),
            "vae": {**init_defaults(AutoencoderKL), **SD_VAE}, "scheduler": scheduler(),
            "title": "ZeroScope v2 576w (UNet3D 1.41 B, OpenCLIP-H text tower, SD VAE)"}


def unet_from_config(config: dict):
    from diffusers import UNet3DConditionModel

    return UNet3DConditionModel.from_config(config)
