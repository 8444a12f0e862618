"""Exports in the formats ComfyUI's own nodes load: a subject as a kohya SD1.5 LoRA + embeddings, a motion as
an AnimateDiff-Evolved motion LoRA. Checked against the loaders' documented rules (ComfyUI's comfy/lora.py
key map and delta ``strength * alpha / rank * up @ down``; ADE's load_motion_lora_as_patches key rewrite and
delta ``strength * up @ down``) and against the key names of the SD1.5 UNet and of the motion module file.
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from helpers import randomize_lora_b
from videomage_core.artifacts import LoraArtifact
from videomage_core.bases.animatediff_export import (ade_model_key, motion_lora_ade, subject_lora_kohya,
                                                     token_embeddings)
from videomage_core.errors import VideoMageInputError
from videomage_core.export import export_artifact
from videomage_core.lora import delete_lora, inject_lora, lora_delta, lora_state_dict
from videomage_core.tokens import add_token, get_token_embedding


@pytest.fixture()
def ad_model(animatediff_model_dir):
    from videomage_core.model import load_model

    return load_model(animatediff_model_dir)


def _artifact(model, kind, rank=4, alpha=2.0):
    """A trained-looking artifact (B randomised: a fresh LoRA's delta is zero, which proves nothing)."""
    scope = "spatial" if kind == "subject" else "temporal"
    inject_lora(model, "x", scope, rank=rank, alpha=alpha)
    randomize_lora_b(model, "x", std=0.2)
    tokens = {}
    if kind == "subject":
        add_token(model, "<my_toy>", init_word="toy")
        tokens = {"<my_toy>": get_token_embedding(model, "<my_toy>")}
    art = LoraArtifact(kind=kind, scope=scope, rank=rank, alpha=alpha, lora=lora_state_dict(model, "x"),
                       tokens=tokens, superclasses={}, base_fingerprint=model.fingerprint, base=model.family.NAME)
    delete_lora(model, "x")
    return art


def test_subject_lora_has_comfyuis_kohya_names_and_strength_one_is_our_delta(ad_model):
    art = _artifact(ad_model, "subject")
    kohya = subject_lora_kohya(art)
    # ComfyUI (comfy/lora.py model_lora_keys_unet) names each SD1.5 UNet weight
    # "lora_unet_" + its diffusers module name with "." -> "_": those of the SD1.5 UNet2D the model is made of
    unet2d_modules = {k[: -len(".weight")].replace(".base_layer", "")  # (peft's wrapper of a LoRA'd layer)
                      for k in ad_model.unet.state_dict() if k.endswith(".weight")}
    comfy_names = {"lora_unet_" + m.replace(".", "_"): m for m in unet2d_modules if ".motion_modules." not in m}
    modules = {k[: -len(".lora_A.weight")] for k in art.lora if k.endswith(".lora_A.weight")}
    assert len(kohya) == 3 * len(modules)
    for module in modules:
        name = "lora_unet_" + module.replace(".", "_")
        assert comfy_names.get(name) == module, f"{name} maps to no SD1.5 UNet weight"
        up, down, alpha = kohya[f"{name}.lora_up.weight"], kohya[f"{name}.lora_down.weight"], kohya[f"{name}.alpha"]
        comfy_delta = 1.0 * (float(alpha) / down.shape[0]) * (up @ down)  # ComfyUI's, at strength 1.0
        # the same two float32 matrices multiplied, then one scalar multiply each: equal up to one rounding
        assert torch.allclose(comfy_delta, lora_delta(art.lora, module, art.scaling), rtol=2**-22, atol=0)


def test_token_embedding_is_the_learned_row():
    art = LoraArtifact(kind="subject", scope="spatial", rank=4, alpha=4.0, lora={},
                       tokens={"<my_toy>": torch.arange(64.0), "<my_dog>": torch.ones(64)}, superclasses={},
                       base_fingerprint="f", base="animatediff")
    emb = token_embeddings(art)
    assert set(emb) == {"my_toy", "my_dog"}
    assert emb["my_toy"]["emb_params"].shape == (1, 64) and torch.equal(emb["my_toy"]["emb_params"][0],
                                                                         torch.arange(64.0))


def test_motion_lora_maps_onto_the_motion_module_by_ade_rules(ad_model, animatediff_files):
    art = _artifact(ad_model, "motion", rank=4, alpha=8.0)
    lora = motion_lora_ade(art)
    module_keys = set(load_file(str(animatediff_files["motion_module"])))  # the original motion module file
    downs = [k for k in lora if k.endswith(".down.weight")]
    assert len(lora) == 2 * len(downs) == len(art.lora)
    for key in downs:
        target = ade_model_key(key)
        assert target in module_keys, f"{key} -> {target}: no such motion module weight"
        assert "temporal" in key  # ADE drops every key without "temporal"
    # ADE's delta at strength 1.0 is up @ down: our scaling * B @ A, for every module
    from videomage_core.bases.animatediff_export import ade_lora_prefix

    for module in {k[: -len(".lora_A.weight")] for k in art.lora if k.endswith(".lora_A.weight")}:
        prefix = ade_lora_prefix(module)
        up, down = lora[f"{prefix}.up.weight"], lora[f"{prefix}.down.weight"]
        assert torch.allclose(up @ down, lora_delta(art.lora, module, art.scaling), rtol=2**-22, atol=1e-9)


def test_export_writes_into_comfyuis_folders_and_never_overwrites(ad_model, tmp_path):
    sub, mot = _artifact(ad_model, "subject"), _artifact(ad_model, "motion")
    folder = lambda kind: tmp_path / "models" / kind  # noqa: E731
    first = export_artifact(sub, "my_toy", folder) + export_artifact(mot, "riding", folder)
    assert sorted(p.relative_to(tmp_path / "models").as_posix() for p in first) == [
        "animatediff_motion_lora/riding_motion_lora.safetensors", "embeddings/my_toy.safetensors",
        "loras/my_toy_lora.safetensors"]
    again = export_artifact(sub, "my_toy", folder)
    assert [p.name for p in again] == ["my_toy_lora_00001.safetensors", "my_toy_00001.safetensors"]
    assert all(torch.equal(load_file(str(first[0]))[k], v) for k, v in load_file(str(again[0])).items())
    assert not list((tmp_path / "models").rglob("*.tmp"))


def test_a_zeroscope_artifact_has_no_export_and_says_why(model, tmp_path):
    art = _artifact(model, "subject")
    with pytest.raises(VideoMageInputError, match="^artifact: .*ComfyUI's own nodes cannot load"):
        export_artifact(art, "x", lambda kind: tmp_path / kind)
    with pytest.raises(VideoMageInputError, match="^name: expected a file name"):
        export_artifact(art, "../x", lambda kind: tmp_path / kind)
    assert not list(tmp_path.iterdir())


def test_the_cli_exports(ad_model, tmp_path, capsys):
    from videomage_core.artifacts import save_artifact
    from videomage_core.cli import main

    src = save_artifact(_artifact(ad_model, "subject"), tmp_path / "toy.safetensors")
    assert main(["export", str(src), "--out", str(tmp_path / "models")]) == 0
    out = capsys.readouterr().out
    assert "embedding:my_toy" in out and (tmp_path / "models" / "loras" / "toy_lora.safetensors").is_file()
