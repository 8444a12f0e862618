"""Wan 2.1 / 2.2 text-to-video: ``WanTransformer3DModel`` (a diffusion transformer), the causal Wan VAE
(4x in time, 8x in space, 16 channels), the umT5-XXL text encoder, flow matching.

A DiT has no temporal layers, so the split VideoMage learns on is a choice (README, "Wan"):

- subject LoRA ("spatial"): each block's cross-attention (``attn2``) and feed-forward (``ffn``): per
  token, no mixing between positions or frames, where text meets appearance;
- motion LoRA ("temporal"): each block's self-attention query and key (``attn1.to_q``, ``attn1.to_k``):
  they change only *where* each token attends (across frames too), never *what* it reads (the values),
  so the motion LoRA cannot write appearance; :func:`attn1_output_is_base_value_mixture` in the tests.

Attention maps for the losses and SCS (:class:`RecordingProcessor`): SCA is each text token's
cross-attention probability; TSA is the self-attention restricted to one spatial position across latent
frames (an F x F map per position, from the rotated query and key), so the full 3-D attention matrix is
never materialised. The recorded blocks are the model's ``attention_levels`` (``blocks.N``), by default
the two middle blocks (:func:`default_levels`).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from . import init_defaults, match_attention_layers, quiet_diffusers, read_json

NAME = "wan"
TITLE = "Wan 2.1 / 2.2 text-to-video (DiT, umT5, flow matching)"
UNET_CLASSES = ("WanTransformer3DModel",)
PIPELINE_CLASS = "WanPipeline"
PREDICTION = "flow"  # the denoiser predicts the velocity v = eps - x_0 (diffusion.py)
FRAME_STEP = 4  # the VAE's temporal compression: videos of 4k + 1 frames
TEXT_LENGTH = 512  # umT5 sequence length, as WanPipeline pads it
FINGERPRINT_WEIGHTS = ("patch_embedding.weight", "proj_out.weight")
PARK_TEXT_ENCODER = True  # umT5-XXL (11 GB in bf16) leaves the GPU while a stage runs on cached text

#: WanPipeline's settings, with 33 frames (about 2 s at 16 fps) instead of 81 for customization.
DEFAULTS = {"width": 832, "height": 480, "frames": 33, "steps": 50, "cfg": 5.0}
DEFAULT_LEVELS = ()  # depends on the depth: default_levels(unet)

_ATTN = r"(to_q|to_k|to_v|to_out\.0)"
LORA_TARGETS = {
    "spatial": rf"blocks\.\d+\.(attn2\.{_ATTN}|ffn\.net\.0\.proj|ffn\.net\.2)",
    "temporal": r"blocks\.\d+\.attn1\.(to_q|to_k)",
}
COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")


MIN_DIFFUSERS = (0, 35)  # WanAttention and its (cos, sin) rotary embedding, which RecordingProcessor mirrors


def require_diffusers(input_name: str = "model") -> None:
    """Wan needs diffusers 0.35 or newer (0.34's Wan attention is another class); a clear error otherwise."""
    import diffusers

    from ..errors import require

    version = tuple(int(x) for x in diffusers.__version__.split(".")[:2] if x.isdigit())
    require(version >= MIN_DIFFUSERS, input_name, f"Wan needs diffusers >= 0.35 (installed: {diffusers.__version__});"
            " upgrade it with the torch you have pinned: pip install -U 'diffusers>=0.35' -c torch-pin.txt")


def default_levels(unet) -> tuple[str, ...]:
    """The two middle blocks (14 and 15 of the 1.3B model's 30): mid-depth DiT attention carries the
    layout (cleanest maps), and the guided pass stops after them, at half the model's cost."""
    n = len(unet.blocks)
    return tuple(f"blocks.{i}" for i in sorted({max(n // 2 - 1, 0), n // 2 if n > 1 else 0}))


def attention_layer_names(unet, levels) -> tuple[list[str], list[str]]:
    """SCA: the blocks' cross-attention ``attn2``; TSA: their 3-D self-attention ``attn1``."""
    return match_attention_layers(unet, levels, r"attn2", r"attn1")


def denoise(unet, latents, timesteps, text):
    """The velocity for latents ``(B, 16, F, h, w)`` and umT5 text ``(B, 512, 4096)``."""
    return unet(hidden_states=latents, timestep=timesteps, encoder_hidden_states=text, return_dict=False)[0]


def checkpointed_modules(unet):
    yield from unet.blocks


def vae_scale_factor(vae) -> int:
    return int(vae.config.scale_factor_spatial)


def _latent_stats(vae, like: torch.Tensor):
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(like.device, like.dtype)
    std = torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(like.device, like.dtype)
    return mean, std


@torch.no_grad()
def encode_video(model, frames: torch.Tensor) -> torch.Tensor:
    """Frames ``[F, H, W, 3]`` in 0..1 (F = 1 or 4k + 1) -> normalised latents ``(1, 16, 1 + (F-1)/4, h, w)``
    (an image is a one-latent-frame video: the causal VAE encodes the first frame alone)."""
    vae = model.vae
    x = frames.to(model.device, vae.dtype).permute(3, 0, 1, 2)[None] * 2 - 1
    lat = vae.encode(x).latent_dist.mean
    mean, std = _latent_stats(vae, lat)
    return ((lat - mean) / std).to(model.dtype)


@torch.no_grad()
def decode_latents(model, latents: torch.Tensor) -> torch.Tensor:
    """Latents ``(B, 16, f, h, w)`` -> frames ``[B * (4(f-1) + 1), H, W, 3]`` in 0..1."""
    vae = model.vae
    out = []
    for lat in latents.to(vae.dtype).split(1):
        mean, std = _latent_stats(vae, lat)
        video = vae.decode(lat * std + mean, return_dict=False)[0]  # (1, 3, F, H, W)
        out.append(video[0].permute(1, 2, 3, 0))
    return ((torch.cat(out).float().clamp(-1, 1) + 1) / 2).cpu()


def encode_text(model, prompts: list[str]) -> torch.Tensor:
    """umT5 embeddings ``(N, 512, D)`` as ``WanPipeline`` makes them: each prompt's own tokens (with its
    end token), zeros after. The encoder runs on the prompts' own lengths, not 512: its attention mask
    keeps padding out of every real token's state, so the states are the pipeline's, at a fraction of
    the encoder's activations (what a token's gradient must keep)."""
    tok = model.tokenizer(prompts, padding="longest", max_length=TEXT_LENGTH, truncation=True,
                          add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    where = model.text_encoder.get_input_embeddings().weight.device  # the GPU, or the CPU while parked
    ids, mask = tok.input_ids.to(where), tok.attention_mask.to(where)
    hidden = model.text_encoder(ids, mask).last_hidden_state * mask[..., None].to(model.text_encoder.dtype)
    hidden = torch.nn.functional.pad(hidden, (0, 0, 0, TEXT_LENGTH - hidden.shape[1]))
    return hidden.to(model.device, model.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``WanAttnProcessor``'s rotary embedding, on ``(B, S, heads, D)``."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def spatial_cross_attention_map(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """SCA ``(B, S, T)``: ``softmax(q k^T / sqrt(D))`` over the text tokens, mean over heads, one head
    at a time (the graph keeps S x T per head, never S x S). ``q (B, S, H, D)``, ``k (B, T, H, D)``."""
    acc = torch.promote_types(q.dtype, torch.float32)
    scale = q.shape[-1] ** -0.5
    total = 0
    for h in range(q.shape[2]):
        total = total + ((q[:, :, h].to(acc) @ k[:, :, h].to(acc).transpose(1, 2)) * scale).softmax(-1)
    return total / q.shape[2]


def temporal_self_attention_map(q: torch.Tensor, k: torch.Tensor, frames: int) -> torch.Tensor:
    """TSA ``(B * P, F, F)``: the self-attention of each spatial position ``p`` to the same position
    in every latent frame, ``softmax_g(q[f, p] . k[g, p] / sqrt(D))``, mean over heads; P = S / F
    positions, tokens ordered (frame, row, column) as the DiT patches them."""
    acc = torch.promote_types(q.dtype, torch.float32)
    b, s, h, d = q.shape
    qf = q.to(acc).reshape(b, frames, s // frames, h, d)
    kf = k.to(acc).reshape(b, frames, s // frames, h, d)
    scores = torch.einsum("bfphd,bgphd->bphfg", qf, kf) * d ** -0.5
    return scores.softmax(-1).mean(2).reshape(b * (s // frames), frames, frames)


class RecordingProcessor:
    """``WanAttnProcessor`` (text-to-video: no image keys) that also stores this layer's map: SCA for a
    cross-attention, TSA for a self-attention (:class:`videomage_core.attention.AttentionRecorder`)."""

    def __init__(self, recorder, name: str, kind: str):
        self.recorder, self.name, self.kind = recorder, name, kind

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 rotary_emb=None, **kwargs):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        k = attn.norm_k(attn.to_k(context)).unflatten(2, (attn.heads, -1))
        v = attn.to_v(context).unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            q, k = _rotate(q, *rotary_emb), _rotate(k, *rotary_emb)
        frames = self.recorder._frames
        if self.kind == "spatial":
            p = spatial_cross_attention_map(q, k)  # (B, F*P, T) -> (B*F, P, T)
            self.recorder._store(self.name, self.kind, p.reshape(p.shape[0] * frames, -1, p.shape[-1]))
        else:
            self.recorder._store(self.name, self.kind, temporal_self_attention_map(q, k, frames))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=attention_mask)
        out = attn.to_out[1](attn.to_out[0](out.transpose(1, 2).flatten(2, 3).type_as(q)))
        self.recorder._after(self.name)
        return out


def recognizes(folder: Path) -> bool:
    index = read_json(folder / "model_index.json")
    denoiser = read_json(folder / "transformer" / "config.json")
    return index.get("_class_name") == PIPELINE_CLASS or denoiser.get("_class_name") in UNET_CLASSES


def check_text_to_video(config: dict, input_name: str = "model") -> None:
    from ..errors import require

    require(config.get("in_channels", 16) == config.get("out_channels", 16) and not config.get("image_dim"),
            input_name, "this Wan model is an image-to-video or control variant (it takes more input "
            "channels or image embeddings); VideoMage runs on the text-to-video models (Wan 2.1 T2V 1.3B / "
            "14B, Wan 2.2 TI2V 5B)")


def load_components(folder: Path, torch_dtype: torch.dtype) -> dict:
    """The components of a local ``WanPipeline`` folder (nothing downloaded). The VAE stays fp32
    under fp16 (as diffusers' Wan examples run it)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    from ..errors import require

    require_diffusers("model_path")
    check_text_to_video(read_json(folder / "transformer" / "config.json"), "model_path")
    require(not (folder / "transformer_2").is_dir() and read_json(folder / "model_index.json").get("boundary_ratio")
            is None, "model_path", f"'{folder.name}' is a two-expert Wan 2.2 model (A14B: transformer_2, "
            "boundary_ratio), which VideoMage does not run yet; use Wan 2.1 T2V (1.3B, 14B) or Wan 2.2 TI2V 5B")
    vae_dtype = torch.float32 if torch_dtype == torch.float16 else torch_dtype
    with quiet_diffusers():
        return {
            "unet": WanTransformer3DModel.from_pretrained(folder / "transformer", torch_dtype=torch_dtype,
                                                          local_files_only=True),
            "vae": AutoencoderKLWan.from_pretrained(folder / "vae", torch_dtype=vae_dtype, local_files_only=True),
            "text_encoder": UMT5EncoderModel.from_pretrained(folder / "text_encoder",
                                                             local_files_only=True).to(torch_dtype),
            "tokenizer": AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
            "scheduler": UniPCMultistepScheduler.from_pretrained(folder / "scheduler", local_files_only=True),
        }


def scheduler(flow_shift: float = 3.0):
    """Wan 2.1's sampler as its diffusers folders ship it: UniPC on flow sigmas, shift 3 (480p)."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                   num_train_timesteps=1000, flow_shift=flow_shift)


def tiny_tokenizer(folder) -> int:
    from .wan_tokenizer import build_tiny_umt5_tokenizer

    return len(build_tiny_umt5_tokenizer(folder))


TINY_DEFAULTS = {"width": 64, "height": 64, "frames": 9}


def tiny_components(seed: int = 0, vocab_size: int = 400, text_dim: int = 32, comfy_width: bool = False) -> dict:
    """A random tiny Wan: a 4-block DiT (2 heads of Wan's 128, patch 1x2x2, 16 latent channels), a Wan 2.1
    VAE of the real layout at 1/12 the width (8x / 4x compression), a 2-layer umT5. ``comfy_width``: a
    4096-wide text and 256 time frequencies, the widths ComfyUI's own Wan model assumes."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    require_diffusers("base")
    text_dim = 4096 if comfy_width else text_dim
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=text_dim, freq_dim=256 if comfy_width else 32, ffn_dim=128, num_layers=4, cross_attn_norm=True,
        rope_max_seq_len=1024)
    vae = AutoencoderKLWan(base_dim=8, z_dim=16)  # Wan 2.1's layout: dim_mult 1,2,4,4, 2 resnets, middle attention
    text = UMT5EncoderModel(UMT5Config(
        vocab_size=vocab_size, d_model=text_dim, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0))
    return {"unet": transformer, "vae": vae, "text_encoder": text, "scheduler": scheduler()}


def save_folder(folder: Path, components: dict, tokenizer_dir) -> None:
    """Write a ``WanPipeline`` folder (``transformer/`` holds the denoiser)."""
    from ..tiny import save_components

    parts = {("transformer" if k == "unet" else k): v for k, v in components.items()}
    save_components(folder, parts, tokenizer_dir, PIPELINE_CLASS, tokenizer_class="T5TokenizerFast")
    index_path = Path(folder) / "model_index.json"
    import json

    index = json.loads(index_path.read_text())
    index.update({"transformer_2": [None, None], "boundary_ratio": None, "expand_timesteps": False})
    index_path.write_text(json.dumps(dict(sorted(index.items())), indent=2))


# Wan 2.1 T2V 1.3B (transformer config of Wan-AI/Wan2.1-T2V-1.3B-Diffusers), umT5-XXL's encoder, the Wan VAE
REAL_TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                        out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
                        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
REAL_TEXT = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                 relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", pad_token_id=0,
                 eos_token_id=1, decoder_start_token_id=0)


def text_from_config(config: dict):
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(UMT5Config(**config))


def vae_from_config(config: dict):
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan.from_config(config)


def real_size() -> dict:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    return {"unet": {**init_defaults(WanTransformer3DModel), **REAL_TRANSFORMER}, "text": dict(REAL_TEXT),
            "vae": init_defaults(AutoencoderKLWan), "scheduler": scheduler(),
            "title": "Wan 2.1 T2V 1.3B (DiT 1.42 B, umT5-XXL encoder 5.7 B, Wan VAE)"}


def unet_from_config(config: dict):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel.from_config(config)


def export_files(artifact, name: str) -> list:
    """A LoRA in the layout ComfyUI's native Wan loading accepts (:mod:`.wan_export`)."""
    from .wan_export import export_files as files

    return files(artifact, name)
