"""Wan from ComfyUI's own files: the diffusion model (``models/diffusion_models``), the umT5-XXL text
encoder with its ``spiece_model`` tokenizer (``models/text_encoders``) and the Wan VAE (``models/vae``), in
the original Wan key layouts; and the same layouts written, for the tiny single files of the tests.

Configs come from the tensors' shapes (as ComfyUI's own detection reads them: a head of 128, etc.), so
nothing is fetched. fp8 files (plain ``float8_e4m3fn`` / ``e5m2``, or ComfyUI's "scaled" fp8 with a
``scale_weight`` / ``weight_scale`` per layer) are dequantised to the requested precision; other
quantisations are refused by name.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import VideoMageInputError, require
from .sd15_files import read_state_dict

PREFIXES = ("model.diffusion_model.", "diffusion_model.")
FP8 = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))
HEAD_DIM = 128  # Wan's head width (ComfyUI: num_heads = dim // 128)


def dequantize(sd: dict, name: str, input_name: str, dtype: torch.dtype) -> dict:
    """fp8 weights (with their per-layer scales, if any) as ``dtype``; markers and scales removed."""
    out = {}
    for key, t in sd.items():
        if key in ("scaled_fp8", "spiece_model") or key.endswith((".scale_weight", ".weight_scale", ".scale_input",
                                                                   ".input_scale", ".comfy_quant")):
            continue
        if t.dtype in FP8:
            stem = key[: -len(".weight")] if key.endswith(".weight") else key
            scale = sd.get(f"{stem}.scale_weight", sd.get(f"{stem}.weight_scale"))
            t = t.float() * (scale.float() if scale is not None else 1.0)
        elif not (t.is_floating_point()):
            raise VideoMageInputError(input_name, f"'{name}': tensor {key} is {t.dtype}; VideoMage reads fp32, "
                                      "fp16, bf16 and fp8 (plain or ComfyUI's scaled) files, not other "
                                      "quantisations (GGUF, int8, nf4)")
        out[key] = t.to(dtype)
    return out


# ---- diffusion model ---------------------------------------------------------------------------
def strip_prefix(sd: dict) -> dict:
    for p in PREFIXES:
        if any(k.startswith(p) for k in sd):
            return {k[len(p):] if k.startswith(p) else k: v for k, v in sd.items()}
    return sd


def transformer_config(sd: dict, name: str, input_name: str) -> dict:
    """``WanTransformer3DModel`` arguments from an original-layout state dict (text-to-video only)."""
    require("head.modulation" in sd and "patch_embedding.weight" in sd, input_name,
            f"'{name}' is not a Wan diffusion model (no head.modulation / patch_embedding): Wan 2.1 T2V 1.3B "
            "or 14B from models/diffusion_models, e.g. wan2.1_t2v_1.3B_bf16.safetensors")
    dim = sd["head.modulation"].shape[-1]
    in_dim, out_dim = sd["patch_embedding.weight"].shape[1], sd["head.head.weight"].shape[0] // 4
    require(not any(".k_img." in k or k.startswith(("img_emb.", "vace_", "motion_encoder.")) for k in sd),
            input_name, f"'{name}' is an image-to-video / VACE / Animate Wan; VideoMage runs on the "
            "text-to-video models (Wan 2.1 T2V 1.3B / 14B)")
    require(out_dim == 16, input_name, f"'{name}' has {out_dim} latent channels: Wan 2.2 TI2V 5B (48 channels) "
            "needs the Wan 2.2 VAE, which this release does not read from single files; use its diffusers "
            "folder (Wan2.2-TI2V-5B-Diffusers) in models/diffusers with Load Model")
    require(in_dim == out_dim, input_name, f"'{name}' takes {in_dim} input channels for {out_dim} latent "
            "ones: an image-conditioned Wan; VideoMage runs on the text-to-video models")
    layers = len({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    return dict(patch_size=(1, 2, 2), num_attention_heads=dim // HEAD_DIM, attention_head_dim=HEAD_DIM,
                in_channels=in_dim, out_channels=out_dim, text_dim=sd["text_embedding.0.weight"].shape[1],
                freq_dim=sd["time_embedding.0.weight"].shape[1], ffn_dim=sd["blocks.0.ffn.0.weight"].shape[0],
                num_layers=layers, cross_attn_norm="blocks.0.norm3.weight" in sd, qk_norm="rms_norm_across_heads",
                eps=1e-6, rope_max_seq_len=1024)


_TO_ORIGINAL = (
    (r"condition_embedder\.time_embedder\.linear_1", "time_embedding.0"),
    (r"condition_embedder\.time_embedder\.linear_2", "time_embedding.2"),
    (r"condition_embedder\.text_embedder\.linear_1", "text_embedding.0"),
    (r"condition_embedder\.text_embedder\.linear_2", "text_embedding.2"),
    (r"condition_embedder\.time_proj", "time_projection.1"),
    (r"^proj_out", "head.head"), (r"^scale_shift_table", "head.modulation"),
    (r"(blocks\.\d+)\.scale_shift_table", r"\1.modulation"),
    (r"\.attn1\.", ".self_attn."), (r"\.attn2\.", ".cross_attn."), (r"\.to_out\.0\.", ".o."),
    (r"\.to_([qkv])\.", r".\1."), (r"(blocks\.\d+)\.norm2\.", r"\1.norm3."),
    (r"\.ffn\.net\.0\.proj\.", ".ffn.0."), (r"\.ffn\.net\.2\.", ".ffn.2."),
)


def transformer_to_original(state: dict) -> dict:
    """A diffusers ``WanTransformer3DModel`` state dict in the original Wan (ComfyUI) key layout."""
    out = {}
    for key, t in state.items():
        new = key
        for pattern, repl in _TO_ORIGINAL:
            new = re.sub(pattern, repl, new)
        out[new] = t
    return out


def transformer_from_file(path, dtype: torch.dtype, input_name: str = "diffusion_model"):
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    name = Path(path).name
    raw = strip_prefix(read_state_dict(path, input_name))
    config = transformer_config(raw, name, input_name)
    sd = convert_wan_transformer_to_diffusers(dequantize(raw, name, input_name, torch.float32))
    with torch.no_grad():
        model = WanTransformer3DModel(**config)
    _load(model, sd, name, input_name)
    return model.to(dtype)


def _load(module, state: dict, name: str, input_name: str) -> None:
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise VideoMageInputError(input_name, f"'{name}' does not fit the model its shapes describe: {exc}") from exc
    missing = [k for k in missing if not k.endswith("embed_tokens.weight")]  # tied to shared.weight in T5
    require(not missing and not unexpected, input_name, f"'{name}': missing {missing[:4]}, unexpected "
            f"{unexpected[:4]} (of {len(missing)} / {len(unexpected)})")


# ---- VAE ---------------------------------------------------------------------------------------
VAE_KEYS = Path(__file__).parent / "configs" / "wan21_vae_keys.txt"  # the Wan 2.1 VAE's 194 key names


def _vae_key_map() -> dict[str, str]:
    """diffusers key -> original key: diffusers' own converter run over the original names."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    return convert_wan_vae_to_diffusers({n: n for n in VAE_KEYS.read_text().split()})


def vae_from_file(path, dtype: torch.dtype, input_name: str = "vae"):
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    name = Path(path).name
    raw = read_state_dict(path, input_name)
    require("decoder.middle.0.residual.0.gamma" in raw, input_name,
            f"'{name}' is not a Wan VAE (no decoder.middle...): expected wan_2.1_vae.safetensors from models/vae")
    require("decoder.upsamples.0.upsamples.0.residual.2.weight" not in raw, input_name,
            f"'{name}' is the Wan 2.2 VAE (for the TI2V 5B model), which this release does not read from "
            "single files; Wan 2.1 models (1.3B, 14B) use wan_2.1_vae.safetensors")
    expected = set(VAE_KEYS.read_text().split())
    require(set(raw) == expected, input_name, f"'{name}' has the Wan VAE's names but not its 2.1 layout "
            f"(differs in {sorted(set(raw) ^ expected)[:4]})")
    config = {"base_dim": raw["encoder.conv1.weight"].shape[0], "z_dim": raw["conv2.weight"].shape[0]}
    with torch.no_grad():
        vae = AutoencoderKLWan(**config)
    _load(vae, convert_wan_vae_to_diffusers(dequantize(raw, name, input_name, torch.float32)), name, input_name)
    return vae.to(dtype)


def vae_to_original(state: dict) -> dict:
    back = _vae_key_map()
    return {back[k]: v for k, v in state.items()}


# ---- umT5 ----------------------------------------------------------------------------------------
def umt5_config(sd: dict, name: str, input_name: str) -> dict:
    require("shared.weight" in sd and "encoder.block.0.layer.0.SelfAttention.q.weight" in sd, input_name,
            f"'{name}' is not a T5 encoder file (no shared.weight / encoder.block.0...): expected umT5-XXL "
            "from models/text_encoders, e.g. umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    bias = "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"
    require(bias in sd or "encoder.block.1.layer.0.SelfAttention.q.weight" not in sd, input_name,
            f"'{name}' is a T5 encoder with one shared position bias (T5 / T5 v1.1, e.g. Flux's t5xxl); "
            "Wan's is umT5 (a position bias in every layer)")
    rel = sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    heads = rel.shape[1]
    vocab, d_model = sd["shared.weight"].shape
    return dict(vocab_size=vocab, d_model=d_model, d_kv=sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
                // heads, d_ff=sd["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0],
                num_layers=len({int(m.group(1)) for k in sd if (m := re.match(r"encoder\.block\.(\d+)\.", k))}),
                num_heads=heads, relative_attention_num_buckets=rel.shape[0], feed_forward_proj="gated-gelu",
                pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


def text_encoder_from_file(path, dtype: torch.dtype, input_name: str = "text_encoder"):
    """``(UMT5EncoderModel, tokenizer)``: the tokenizer from the file's ``spiece_model`` (as ComfyUI's
    own Wan text encoder loader reads it)."""
    from transformers import UMT5Config, UMT5EncoderModel

    from .wan_tokenizer import tokenizer_from_model_proto

    name = Path(path).name
    raw = read_state_dict(path, input_name)
    raw = {k[len("encoder."):] if k.startswith("encoder.encoder.") else k: v for k, v in raw.items()}
    require("spiece_model" in raw, input_name, f"'{name}' carries no tokenizer (spiece_model), as ComfyUI's "
            "umT5 files do; use ComfyUI's umt5_xxl_fp16 / fp8_e4m3fn_scaled file")
    try:
        tokenizer = tokenizer_from_model_proto(raw["spiece_model"].cpu().numpy().tobytes())
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise VideoMageInputError(input_name, f"'{name}': its spiece_model is not a SentencePiece model: "
                                  f"{exc}") from exc
    config = umt5_config(raw, name, input_name)
    with torch.no_grad():
        model = UMT5EncoderModel(UMT5Config(**config))
    _load(model, dequantize(raw, name, input_name, torch.float32), name, input_name)
    return model.to(dtype), tokenizer


def text_encoder_to_original(model, tokenizer_bytes: bytes) -> dict:
    state = {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    state["spiece_model"] = torch.frombuffer(bytearray(tokenizer_bytes), dtype=torch.uint8).clone()
    return state


# ---- all three --------------------------------------------------------------------------------
def load_single_files(diffusion_model, text_encoder, vae, torch_dtype: torch.dtype) -> dict:
    from . import quiet_diffusers
    from .wan import require_diffusers, scheduler

    require_diffusers("diffusion_model")
    vae_dtype = torch.float32 if torch_dtype == torch.float16 else torch_dtype
    with quiet_diffusers():
        unet = transformer_from_file(diffusion_model, torch_dtype)
        text, tokenizer = text_encoder_from_file(text_encoder, torch_dtype)
        require(unet.config.text_dim == text.config.d_model, "text_encoder",
                f"'{Path(text_encoder).name}' gives {text.config.d_model}-wide states, '{Path(diffusion_model).name}' "
                f"reads {unet.config.text_dim}-wide ones: use umT5-XXL with Wan")
        return {"unet": unet, "text_encoder": text, "tokenizer": tokenizer,
                "vae": vae_from_file(vae, vae_dtype), "scheduler": scheduler()}


def save_single_files(folder, components: dict, tokenizer_bytes: bytes) -> dict:
    """Write ``components`` as ComfyUI's three Wan files; returns their paths."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"diffusion_model": folder / "wan_t2v_tiny.safetensors", "text_encoder": folder / "umt5_tiny.safetensors",
             "vae": folder / "wan_vae_tiny.safetensors"}
    save_file({k: v.contiguous() for k, v in transformer_to_original(components["unet"].state_dict()).items()},
              str(paths["diffusion_model"]))
    save_file(text_encoder_to_original(components["text_encoder"], tokenizer_bytes), str(paths["text_encoder"]))
    save_file({k: v.contiguous() for k, v in vae_to_original(components["vae"].state_dict()).items()},
              str(paths["vae"]))
    return paths


def build_tiny_single_files(folder, seed: int = 0, comfy_width: bool = False) -> dict:
    """The tiny Wan as ComfyUI's three files. ``comfy_width``: the widths ComfyUI's own Wan model assumes
    (heads of 128, 4096-wide text, 256 time frequencies), so that ComfyUI loads the diffusion model."""
    from .wan import tiny_components
    from .wan_tokenizer import tiny_pieces, write_model_proto

    data = write_model_proto(tiny_pieces(), unk_id=2)
    c = tiny_components(seed=seed, vocab_size=len(tiny_pieces()), text_dim=4096 if comfy_width else 32,
                        comfy_width=comfy_width)
    return save_single_files(folder, c, data)
