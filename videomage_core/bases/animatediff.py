"""AnimateDiff: an SD1.5 ``UNet2DConditionModel`` plus a ``MotionAdapter`` (motion modules), run as
diffusers' ``UNetMotionModel``, with the SD VAE, the CLIP ViT-L text encoder and DDIM.

Spatial layers are the SD1.5 UNet's ``attentions`` (self- and cross-attention on each frame); temporal
layers are the motion modules (``motion_modules``: self-attention across frames, which sees no text),
the split VideoMage learns on. A diffusers folder is either an ``AnimateDiffPipeline`` as diffusers
saves it (``unet/`` a ``UNetMotionModel``) or an SD1.5 folder with a ``motion_adapter/`` beside its
``unet/`` (a ``UNet2DConditionModel``); both load offline.
"""
from __future__ import annotations

from pathlib import Path

import torch

from . import SD_VAE, init_defaults, match_attention_layers, quiet_diffusers, read_json

NAME = "animatediff"
TITLE = "AnimateDiff (SD1.5 + motion module)"
UNET_CLASSES = ("UNetMotionModel",)
PIPELINE_CLASS = "AnimateDiffPipeline"

#: AnimateDiff's usual settings: 16 frames of 512 x 512, 25 DDIM steps, CFG 7.5.
DEFAULTS = {"width": 512, "height": 512, "frames": 16, "steps": 25, "cfg": 7.5}
#: SD1.5's 16x16 level at 512 x 512 (a quarter of the latent side, as ZeroScope's default level).
DEFAULT_LEVELS = ("down_blocks.2", "up_blocks.1")

_PROJ = r"(to_q|to_k|to_v|to_out\.0)"
LORA_TARGETS = {
    "spatial": rf".*\.attentions\.\d+\.transformer_blocks\.\d+\.attn[12]\.{_PROJ}",
    "temporal": rf".*\.motion_modules\.\d+\.transformer_blocks\.\d+\.attn[12]\.{_PROJ}",
}
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def attention_layer_names(unet, levels) -> tuple[list[str], list[str]]:
    """SCA: each spatial transformer's cross-attention ``attn2``; TSA: the motion modules'
    self-attentions ``attn1`` and ``attn2`` (both attend across frames)."""
    return match_attention_layers(unet, levels, r"attentions\.\d+\.transformer_blocks\.\d+\.attn2",
                                  r"motion_modules\.\d+\.transformer_blocks\.\d+\.attn[12]")


def denoise(unet, latents, timesteps, text):
    """The denoiser's output for latents ``(B, C, F, h, w)`` and text ``(B, 77, D)``: the motion
    UNet runs its frames as a batch, so each text embedding is repeated per frame (as
    ``AnimateDiffPipeline`` does)."""
    text = text.repeat_interleave(latents.shape[2], dim=0)
    return unet(latents, timesteps, encoder_hidden_states=text, return_dict=False)[0]


def checkpointed_modules(unet):
    """Each block's resnets, spatial transformers and motion modules."""
    for block in list(unet.down_blocks) + [unet.mid_block] + list(unet.up_blocks):
        for part in ("resnets", "attentions", "motion_modules"):
            yield from getattr(block, part, None) or []


def recognizes(folder: Path) -> bool:
    index = read_json(folder / "model_index.json")
    unet = read_json(folder / "unet" / "config.json")
    return (index.get("_class_name") == PIPELINE_CLASS or unet.get("_class_name") in UNET_CLASSES
            or (unet.get("_class_name") == "UNet2DConditionModel" and (folder / "motion_adapter").is_dir()))


def motion_unet(unet2d, adapter):
    """``UNetMotionModel`` = the SD1.5 UNet's weights + the adapter's motion modules."""
    from diffusers import UNetMotionModel

    return UNetMotionModel.from_unet2d(unet2d, adapter)


def load_components(folder: Path, torch_dtype: torch.dtype) -> dict:
    """The components of a local folder (nothing downloaded). The VAE stays fp32 under fp16."""
    with quiet_diffusers():
        return _load_components(folder, torch_dtype)


def _load_components(folder: Path, torch_dtype: torch.dtype) -> dict:
    from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel, UNetMotionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet_class = read_json(folder / "unet" / "config.json").get("_class_name")
    if unet_class == "UNetMotionModel":
        unet = UNetMotionModel.from_pretrained(folder / "unet", local_files_only=True)
    else:
        if not (folder / "motion_adapter").is_dir():
            raise ValueError("an SD1.5 folder needs a motion_adapter/ sub-folder (a MotionAdapter) beside unet/")
        unet2d = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True)
        adapter = MotionAdapter.from_pretrained(folder / "motion_adapter", local_files_only=True)
        unet = motion_unet(unet2d, adapter)
    vae_dtype = torch.float32 if torch_dtype == torch.float16 else torch_dtype
    return {
        "unet": unet.to(torch_dtype),
        "vae": AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=vae_dtype, local_files_only=True),
        "text_encoder": CLIPTextModel.from_pretrained(folder / "text_encoder",
                                                      local_files_only=True).to(torch_dtype),
        "tokenizer": CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
        "scheduler": DDIMScheduler.from_pretrained(folder / "scheduler", local_files_only=True),
    }


def scheduler():
    """AnimateDiff's DDIM schedule: linear betas 0.00085..0.012, linspace timesteps."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, timestep_spacing="linspace")


SD15_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
    attention_head_dim=8, sample_size=64,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)


TINY_TEXT_DIM = 64  # one head of SD1.5's head width 64, so the single-file reader infers its config


def tiny_parts(seed: int = 0, text_dim: int = TINY_TEXT_DIM):
    """A random tiny SD1.5-layout UNet (four levels, cross-attention on the first three; SD1.5's 8 heads
    and 32 norm groups) and a matching tiny motion adapter (a motion module per resnet, one in the
    middle block, mm_sd_v15_v2's 8 heads, 32 groups and 32 positions)."""
    from diffusers import MotionAdapter, UNet2DConditionModel

    torch.manual_seed(seed)
    unet2d = UNet2DConditionModel(
        sample_size=64, block_out_channels=(32, 32, 64, 64), layers_per_block=1, cross_attention_dim=text_dim,
        attention_head_dim=8, norm_num_groups=32,
        down_block_types=SD15_UNET["down_block_types"], up_block_types=SD15_UNET["up_block_types"],
    )
    adapter = MotionAdapter(block_out_channels=(32, 32, 64, 64), motion_layers_per_block=1,
                            motion_num_attention_heads=8, motion_norm_num_groups=32, motion_max_seq_length=32,
                            use_motion_mid_block=True)
    return unet2d, adapter


SD15_VOCAB = 49408  # CLIP's: the tiny text encoder has every row, so ComfyUI's own SD1.5 tokenizer fits it


def tiny_components(seed: int = 0, vocab_size: int = 400, text_dim: int = TINY_TEXT_DIM) -> dict:
    """Random tiny components, the denoiser kept as its two parts (``unet`` an SD1.5-layout
    ``UNet2DConditionModel``, ``motion_adapter``), as a user's SD1.5 folder plus a motion module. The
    text encoder has CLIP's 49408 rows whatever ``vocab_size`` (the tiny tokenizer's ids fit too)."""
    from ..tiny import tiny_text_encoder, tiny_vae

    vocab_size = max(vocab_size, SD15_VOCAB)
    unet2d, adapter = tiny_parts(seed, text_dim)
    return {"unet": unet2d, "motion_adapter": adapter, "vae": tiny_vae((32, 32, 32, 32), groups=32),
            # SD1.5's text config names bos 0, eos 2, pad 1 (what its single files are read with)
            "text_encoder": tiny_text_encoder(vocab_size, text_dim, heads=1, eos_token_id=2),
            "scheduler": scheduler()}


def save_folder(folder: Path, components: dict, tokenizer_dir) -> None:
    """Write an ``AnimateDiffPipeline`` folder (what ``AnimateDiffPipeline.from_pretrained`` loads)."""
    from ..tiny import save_components

    save_components(folder, components, tokenizer_dir, PIPELINE_CLASS)


# CLIP ViT-L/14's text tower (SD1.5's text encoder)
REAL_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, projection_dim=768, max_position_embeddings=77,
                 hidden_act="quick_gelu", bos_token_id=0, eos_token_id=2, pad_token_id=1)
#: SD1.5's UNet with mm_sd_v15_v2's motion modules (two per down block, three per up block, a mid one)
REAL_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
    num_attention_heads=8, sample_size=64, motion_max_seq_length=32, motion_num_attention_heads=8,
    use_motion_mid_block=True,
)


def real_size() -> dict:
    """SD1.5 + mm_sd_v15_v2 as one ``UNetMotionModel``, the CLIP ViT-L text tower, the SD VAE, DDIM."""
    from diffusers import AutoencoderKL, UNetMotionModel

    return {"unet": {**init_defaults(UNetMotionModel), **REAL_UNET}, "text": dict(REAL_TEXT),
            "vae": {**init_defaults(AutoencoderKL), **SD_VAE}, "scheduler": scheduler(),
            "title": "AnimateDiff: SD1.5 UNet + mm_sd_v15_v2 motion modules, CLIP ViT-L, SD VAE"}


def export_files(artifact, name: str) -> list:
    """``[(ComfyUI models kind, file name, tensors, metadata)]``: a subject as an SD1.5 kohya LoRA and
    its tokens as embeddings, a motion as an AnimateDiff motion LoRA (:mod:`.animatediff_export`)."""
    from .animatediff_export import export_files as files

    return files(artifact, name)


def unet_from_config(config: dict):
    from diffusers import UNetMotionModel

    return UNetMotionModel.from_config(config)
