"""Wan from ComfyUI's own files (diffusion model, umT5 with its spiece_model, Wan VAE), its tokenizer read
without sentencepiece, and its LoRAs in the layout ComfyUI's native Wan loading maps
(``diffusion_model.blocks.N.<module>.lora_A/B``)."""
from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import randomize_lora_b
from videomage_core.artifacts import LoraArtifact
from videomage_core.bases.wan_export import comfy_lora_tensors
from videomage_core.bases.wan_files import transformer_to_original
from videomage_core.bases.wan_tokenizer import parse_model_proto, tokenizer_from_model_proto, tiny_pieces, write_model_proto
from videomage_core.diffusion import encode_prompts, predict_noise
from videomage_core.errors import VideoMageInputError
from videomage_core.lora import delete_lora, inject_lora, lora_delta, lora_state_dict
from videomage_core.model import load_model, load_wan_files


def test_the_three_files_load_as_the_same_model_as_the_folder(wan_files, wan_model_dir):
    """The files hold the folder model's weights in the original layouts: every tensor comes back equal,
    so the denoiser's output and the text states are bit-identical."""
    files = load_wan_files(wan_files["diffusion_model"], wan_files["text_encoder"], wan_files["vae"])
    folder = load_model(wan_model_dir)
    for part in ("unet", "vae", "text_encoder"):
        a, b = getattr(files, part).state_dict(), getattr(folder, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    assert files.fingerprint == folder.fingerprint
    prompts = ["a toy rides a dog", "two dogs, 3 cats"]
    assert torch.equal(encode_prompts(files, prompts), encode_prompts(folder, prompts))
    x = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500.0)
    text = encode_prompts(folder, prompts[:1])
    assert torch.equal(predict_noise(files, x, t, text), predict_noise(folder, x, t, text))


def test_the_original_keys_are_the_ones_comfyui_detects_wan_by():
    from videomage_core.bases.wan import tiny_components

    keys = set(transformer_to_original(tiny_components(seed=0)["unet"].state_dict()))
    # comfy/model_detection.py reads these; diffusers' own converter maps them back (round trip above)
    assert {"head.modulation", "head.head.weight", "patch_embedding.weight", "blocks.0.ffn.0.weight",
            "blocks.0.self_attn.q.weight", "blocks.0.cross_attn.o.weight", "blocks.0.norm3.weight",
            "blocks.0.modulation", "text_embedding.0.weight", "time_projection.1.weight"} <= keys


def test_the_tokenizer_is_read_from_sentencepiece_bytes_as_the_folder_tokenizer_tokenizes(wan_model):
    data = write_model_proto(tiny_pieces(), unk_id=2)
    spec = parse_model_proto(data)
    assert [p["piece"] for p in spec["pieces"]] == [p[0] for p in tiny_pieces()] and spec["unk_id"] == 2
    tok = tokenizer_from_model_proto(data)
    for text in ["A toy  rides a dog ", "two dogs, 3 cats!", "xq zz"]:
        assert tok(text).input_ids == wan_model.tokenizer(text).input_ids, text
    assert tok("a").input_ids[-1] == 1 and tok.pad_token_id == 0  # umT5: end token 1, pad 0, no start token


@pytest.fixture()
def wan_model(wan_model_dir):
    return load_model(wan_model_dir)


def _rewrite(src, dst, change):
    sd = load_file(str(src))
    change(sd)
    save_file(sd, str(dst))
    return dst


def test_fp8_files_load_dequantized_and_other_quantisations_are_refused(wan_files, tmp_path):
    """Plain fp8 (e4m3fn) weights and ComfyUI's scaled fp8 (weight * scale_weight) load as the model those
    numbers give: the loaded weight equals the fp8 value times its scale exactly (both are exact in fp32)."""
    fp8 = torch.float8_e4m3fn
    key = "blocks.0.self_attn.q.weight"

    def scaled(sd):
        sd[key] = (sd[key] / 0.5).to(fp8)
        sd["blocks.0.self_attn.q.scale_weight"] = torch.tensor(0.5)
        sd["scaled_fp8"] = torch.zeros(0, dtype=fp8)

    path = _rewrite(wan_files["diffusion_model"], tmp_path / "wan_fp8_scaled.safetensors", scaled)
    m = load_wan_files(path, wan_files["text_encoder"], wan_files["vae"])
    stored = load_file(str(path))[key]
    assert torch.equal(m.unet.blocks[0].attn1.to_q.weight, stored.float() * 0.5)
    bad = _rewrite(wan_files["diffusion_model"], tmp_path / "wan_int8.safetensors",
                   lambda sd: sd.update({key: sd[key].to(torch.int8)}))
    with pytest.raises(VideoMageInputError, match="diffusion_model.*int8.*GGUF"):
        load_wan_files(bad, wan_files["text_encoder"], wan_files["vae"])


@pytest.mark.parametrize("which, change, message", [
    ("diffusion_model", lambda sd: sd.update({"blocks.0.cross_attn.k_img.weight": torch.zeros(1)}), "image-to-video"),
    ("diffusion_model", lambda sd: sd.pop("head.modulation"), "not a Wan diffusion model"),
    ("vae", lambda sd: sd.update({"decoder.upsamples.0.upsamples.0.residual.2.weight": torch.zeros(1)}), "Wan 2.2 VAE"),
    ("vae", lambda sd: sd.pop("decoder.middle.0.residual.0.gamma"), "not a Wan VAE"),
    ("text_encoder", lambda sd: sd.pop("spiece_model"), "no tokenizer"),
    ("text_encoder", lambda sd: sd.pop("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"),
     "one shared position bias"),
])
def test_wrong_files_get_one_clear_error_naming_the_input(wan_files, tmp_path, which, change, message):
    paths = dict(wan_files)
    paths[which] = _rewrite(wan_files[which], tmp_path / f"bad_{which}.safetensors", change)
    with pytest.raises(VideoMageInputError, match=message) as err:
        load_wan_files(paths["diffusion_model"], paths["text_encoder"], paths["vae"])
    assert err.value.input_name == which


def _artifact(model, kind, rank=4, alpha=2.0):
    scope = "spatial" if kind == "subject" else "temporal"
    inject_lora(model, "x", scope, rank=rank, alpha=alpha)
    randomize_lora_b(model, "x", std=0.2)
    art = LoraArtifact(kind=kind, scope=scope, rank=rank, alpha=alpha, lora=lora_state_dict(model, "x"),
                       tokens={}, superclasses={}, base_fingerprint=model.fingerprint, base="wan")
    delete_lora(model, "x")
    return art


@pytest.mark.parametrize("kind, modules", [
    ("subject", {"cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2"}),
    ("motion", {"self_attn.q", "self_attn.k"}),
])
def test_loras_take_comfyuis_wan_names_and_strength_one_is_our_delta(wan_model, kind, modules):
    """ComfyUI maps ``diffusion_model.<key>`` onto each weight of the original Wan model (comfy/lora.py's
    generic rule) and adds ``strength * alpha / rank * B @ A``: every exported module is a weight of the
    original layout, and that delta is ours (one float32 product, one scalar multiply: equal to a rounding)."""
    art = _artifact(wan_model, kind)
    tensors = comfy_lora_tensors(art.lora, art.alpha, art.rank)
    from videomage_core.bases.wan import tiny_components

    original = set(transformer_to_original(tiny_components(seed=0)["unet"].state_dict()))  # no peft wrappers
    stems = {k[: -len(".lora_A.weight")] for k in tensors if k.endswith(".lora_A.weight")}
    assert {s.split(".", 3)[3] for s in stems} == modules and len(stems) == 4 * len(modules)
    ours = {k[: -len(".lora_A.weight")] for k in art.lora if k.endswith(".lora_A.weight")}
    from videomage_core.bases.wan_export import wan_module_name

    for module in ours:
        stem = "diffusion_model." + wan_module_name(module)
        assert stem[len("diffusion_model."):] + ".weight" in original
        a, b, alpha = tensors[f"{stem}.lora_A.weight"], tensors[f"{stem}.lora_B.weight"], tensors[f"{stem}.alpha"]
        comfy = (float(alpha) / a.shape[0]) * (b @ a)
        assert torch.allclose(comfy, lora_delta(art.lora, module, art.scaling), rtol=2**-22, atol=0)


def test_export_writes_a_wan_lora_and_says_how_to_use_it(wan_model, tmp_path):
    from videomage_core.export import export_artifact, usage

    art = _artifact(wan_model, "subject")
    art.tokens, art.superclasses = {"<my_toy>": torch.zeros(32)}, {"<my_toy>": "toy"}
    paths = export_artifact(art, "my_toy", lambda kind: tmp_path / kind)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["loras/my_toy.safetensors"]
    (line,) = usage(paths)
    assert "LoraLoaderModelOnly" in line and "(toy)" in line


def test_load_wan_node_reads_comfyuis_three_folders(wan_files, tmp_path, monkeypatch):
    import nodes

    for kind, key, name in (("diffusion_models", "diffusion_model", "wan_tiny.safetensors"),
                            ("text_encoders", "text_encoder", "umt5_tiny.safetensors"),
                            ("vae", "vae", "wan_vae_tiny.safetensors")):
        (tmp_path / kind).mkdir()
        shutil.copy(wan_files[key], tmp_path / kind / name)
    monkeypatch.setenv("VIDEOMAGE_MODELS_DIR", str(tmp_path))
    loader = nodes.NODE_CLASS_MAPPINGS["VideoMageLoadWan"]
    spec = loader.INPUT_TYPES()["required"]
    assert spec["unet_name"][0] == ["wan_tiny.safetensors"] and spec["vae_name"][0] == ["wan_vae_tiny.safetensors"]
    model = loader().load("wan_tiny.safetensors", "umt5_tiny.safetensors", "wan_vae_tiny.safetensors", "auto", "cpu")[0]
    assert model.family.NAME == "wan" and model.dtype == torch.float32
    with pytest.raises(VideoMageInputError) as err:
        loader().load("missing.safetensors", "umt5_tiny.safetensors", "wan_vae_tiny.safetensors", "auto", "cpu")
    assert err.value.input_name == "unet_name"
