import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from videomage_core.artifacts import LoraArtifact, apply_artifact, load_artifact, save_artifact
from videomage_core.errors import IncompatibleArtifactError
from videomage_core.lora import inject_lora, lora_state_dict
from videomage_core.model import load_model
from videomage_core.tokens import add_token, get_token_embedding

from helpers import randomize_lora_b


def _artifact(model, kind="subject"):
    scope = "spatial" if kind == "subject" else "temporal"
    inject_lora(model, "x", scope, rank=4, alpha=4.0)
    randomize_lora_b(model, "x")
    add_token(model, "<toy>", init_word="toy")
    return LoraArtifact(kind=kind, scope=scope, rank=4, alpha=4.0, lora=lora_state_dict(model, "x"),
                        tokens={"<toy>": get_token_embedding(model, "<toy>") + 0.5},
                        superclasses={"<toy>": "toy"}, base_fingerprint=model.fingerprint,
                        train_args={"steps": 3}, losses=[0.5, 0.25],
                        reference_latents=torch.randn(1, 4, 3, 8, 8) if kind == "motion" else None)


@pytest.mark.parametrize("kind", ["subject", "motion"])
def test_save_load_round_trip_is_bit_exact(model, tmp_path, kind):
    art = _artifact(model, kind)
    path = save_artifact(art, tmp_path / "a.safetensors")
    back = load_artifact(path, kind)
    assert back.lora.keys() == art.lora.keys()
    assert all(torch.equal(back.lora[k], art.lora[k]) for k in art.lora)
    assert torch.equal(back.tokens["<toy>"], art.tokens["<toy>"])
    assert back.metadata() == art.metadata()
    if kind == "motion":
        assert torch.equal(back.reference_latents, art.reference_latents)
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file may stay behind"
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        assert all(k.startswith(("unet.", "text_encoder.token.", "reference.")) for k in f.keys())
    info = json.loads(meta["videomage"])
    for field in ("kind", "rank", "alpha", "scope", "tokens", "superclasses", "base_fingerprint",
                  "train_args", "version"):
        assert field in info
    assert json.loads(meta["lora_config"])["r"] == 4


def test_applied_artifact_restores_weights_and_tokens(model, tiny_model_dir, tmp_path):
    art = _artifact(model)
    path = save_artifact(art, tmp_path / "a.safetensors")
    fresh = load_model(tiny_model_dir)
    apply_artifact(fresh, load_artifact(path), "loaded")
    state = lora_state_dict(fresh, "loaded")
    assert all(torch.equal(state[k], art.lora[k]) for k in art.lora)
    assert torch.equal(get_token_embedding(fresh, "<toy>"), art.tokens["<toy>"])


def test_file_for_another_base_model_is_refused(model, other_model_dir, tmp_path):
    path = save_artifact(_artifact(model), tmp_path / "a.safetensors")
    other = load_model(other_model_dir)
    with pytest.raises(IncompatibleArtifactError, match="another base model"):
        apply_artifact(other, load_artifact(path), "x")


def test_bad_files_give_clear_errors(model, tmp_path):
    path = save_artifact(_artifact(model), tmp_path / "a.safetensors")
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(IncompatibleArtifactError, match="not a readable safetensors"):
        load_artifact(tmp_path / "trunc.safetensors")
    (tmp_path / "text.safetensors").write_text("hello, not a tensor file")
    with pytest.raises(IncompatibleArtifactError, match="not a readable safetensors"):
        load_artifact(tmp_path / "text.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(IncompatibleArtifactError, match="not a VideoMage"):
        load_artifact(tmp_path / "plain.safetensors")
    with pytest.raises(IncompatibleArtifactError, match="no file"):
        load_artifact(tmp_path / "missing.safetensors")
    with pytest.raises(IncompatibleArtifactError, match="expected a motion"):
        load_artifact(path, "motion")
    # a VideoMage header that is damaged, or a token tensor that is missing
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    for name, bad_meta, bad_tensors in [
        ("json", {**meta, "videomage": "{not json"}, tensors),
        ("kind", {**meta, "videomage": json.dumps({"tokens": []})}, tensors),
        ("token", meta, {k: v for k, v in tensors.items() if not k.startswith("text_encoder.token")}),
    ]:
        save_file(bad_tensors, str(tmp_path / f"{name}.safetensors"), metadata=bad_meta)
        with pytest.raises(IncompatibleArtifactError, match=r"^artifact: .*damaged VideoMage metadata"):
            load_artifact(tmp_path / f"{name}.safetensors")


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    from videomage_core.atomic import atomic_write, atomic_write_json

    path = atomic_write_json(tmp_path / "sub" / "r.json", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}

    def half_then_fail(tmp):
        Path(tmp).write_text('{"a": 2')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]


def test_written_files_take_the_users_umask_not_the_temporary_files_0600(tmp_path):
    import os

    from videomage_core.artifacts import atomic_save_safetensors
    from videomage_core.atomic import atomic_write_text

    old = os.umask(0o027)
    try:
        text = atomic_write_text(tmp_path / "a.txt", "x")
        tensors = atomic_save_safetensors({"w": torch.zeros(2)}, tmp_path / "b.safetensors", {"k": "v"})
        os.umask(0o002)
        shared = atomic_write_text(tmp_path / "c.txt", "x")
    finally:
        os.umask(old)
    assert (text.stat().st_mode & 0o777) == 0o640  # 0666 less 027, as open(path, "w") would give
    assert (Path(tensors).stat().st_mode & 0o777) == 0o640
    assert (shared.stat().st_mode & 0o777) == 0o664


def test_a_motion_of_every_linear_round_trips_and_loads_with_its_coverage(model, tiny_model_dir, tmp_path):
    from videomage_core.bases.zeroscope import TEMPORAL_LINEAR

    inject_lora(model, "w", "temporal", rank=4, alpha=4.0, coverage="all_linear")
    randomize_lora_b(model, "w")
    art = LoraArtifact(kind="motion", scope="temporal", rank=4, alpha=4.0, lora=lora_state_dict(model, "w"),
                       tokens={}, superclasses={}, base_fingerprint=model.fingerprint,
                       reference_latents=torch.randn(1, 4, 3, 8, 8), coverage="all_linear")
    assert any(k.endswith("ff.net.2.lora_A.weight") for k in art.lora)
    path = save_artifact(art, tmp_path / "m.safetensors")
    back = load_artifact(path, "motion")
    assert back.coverage == "all_linear"
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:  # peft's LoraConfig names the layers the file covers
        assert json.loads(f.metadata()["lora_config"])["target_modules"] == TEMPORAL_LINEAR
    fresh = load_model(tiny_model_dir)
    apply_artifact(fresh, back, "loaded")
    state = lora_state_dict(fresh, "loaded")
    assert state.keys() == art.lora.keys() and all(torch.equal(state[k], art.lora[k]) for k in art.lora)


def test_a_file_written_before_coverages_existed_loads_as_attention(model, tiny_model_dir, tmp_path):
    art = _artifact(model, "motion")
    path = save_artifact(art, tmp_path / "old.safetensors")
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    info = json.loads(meta["videomage"])
    del info["coverage"]
    save_file(tensors, str(path), metadata={**meta, "videomage": json.dumps(info)})
    back = load_artifact(path)
    assert back.coverage == "attention"
    fresh = load_model(tiny_model_dir)
    apply_artifact(fresh, back, "loaded")
    assert lora_state_dict(fresh, "loaded").keys() == art.lora.keys()
