"""AnimateDiff from a ComfyUI user's files: an SD1.5 single-file checkpoint + a motion module + a tokenizer
folder, in their original key layouts (tiny files this project writes), and one clear error for each
file that is not what its picker expects."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from videomage_core.errors import VideoMageInputError
from videomage_core.model import load_animatediff_files, load_model


def test_single_files_load_the_same_model_as_the_diffusers_folder(animatediff_files, animatediff_model_dir):
    files = animatediff_files
    from_files = load_animatediff_files(files["checkpoint"], files["motion_module"], files["tokenizer"])
    folder = load_model(animatediff_model_dir)
    assert from_files.family.NAME == "animatediff"
    # the same weights and configs (diffusers' LDM converter inverts our writer exactly), hence the same
    # fingerprint: a subject trained on one loads on the other
    assert from_files.fingerprint == folder.fingerprint
    a, b = from_files.unet.state_dict(), folder.unet.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    a, b = from_files.vae.state_dict(), folder.vae.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a .ckpt motion module is read with torch.load(weights_only=True) and gives the same weights
    ckpt = load_animatediff_files(files["checkpoint"], files["motion_module_ckpt"], files["tokenizer"])
    assert ckpt.fingerprint == folder.fingerprint


def _variant(tmp_path, files, key, change, suffix=".safetensors"):
    """A copy of one of the tiny files, changed into something its picker does not expect."""
    sd = load_file(str(files[key]))
    sd = change(sd)
    out = tmp_path / f"{key}_variant{suffix}"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out))
    return out


def _sdxl_motion_module(sd):  # SDXL motion modules have 3 down blocks
    return {k: v for k, v in sd.items() if not k.startswith(("down_blocks.3", "up_blocks.3"))}


def _motion_lora(sd):  # what a motion LoRA's keys look like (AnimateDiff v2 motion LoRAs)
    k = next(k for k in sd if k.endswith("attention_blocks.0.to_q.weight"))
    base = k[: -len("to_q.weight")]
    return {f"{base}processor.to_q_lora.down.weight": torch.zeros(4, 32),
            f"{base}processor.to_q_lora.up.weight": torch.zeros(32, 4)}


CHECKPOINT_CASES = [
    ("an SDXL checkpoint", lambda sd: {**sd, "conditioner.embedders.0.transformer.x": torch.zeros(1)}, "SDXL"),
    ("an SD2 checkpoint", lambda sd: {**sd, "cond_stage_model.model.ln_final.weight": torch.zeros(1)}, "SD2"),
    ("a LoRA", lambda sd: {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 4)},
     "is a LoRA"),
    ("a UNet-only file", lambda sd: {k: v for k, v in sd.items() if k.startswith("model.diffusion_model.")},
     "has no VAE"),
]
MOTION_CASES = [
    ("an SDXL motion module", _sdxl_motion_module, "SDXL motion module has 3"),
    ("a motion LoRA", _motion_lora, "is a LoRA"),
]


@pytest.mark.parametrize("what,change,message", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_a_file_that_is_not_an_sd15_checkpoint_is_refused_by_name(animatediff_files, tmp_path, what, change,
                                                                     message):
    bad = _variant(tmp_path, animatediff_files, "checkpoint", change)
    with pytest.raises(VideoMageInputError, match=rf"^checkpoint_file: '{bad.name}' .*{message}"):
        load_animatediff_files(bad, animatediff_files["motion_module"], animatediff_files["tokenizer"])


@pytest.mark.parametrize("what,change,message", MOTION_CASES, ids=[c[0] for c in MOTION_CASES])
def test_a_file_that_is_not_an_sd15_motion_module_is_refused_by_name(animatediff_files, tmp_path, what, change,
                                                                       message):
    bad = _variant(tmp_path, animatediff_files, "motion_module", change)
    with pytest.raises(VideoMageInputError, match=rf"^motion_module: '{bad.name}' .*{message}"):
        load_animatediff_files(animatediff_files["checkpoint"], bad, animatediff_files["tokenizer"])


def test_swapped_truncated_and_pickled_files_are_refused(animatediff_files, tmp_path):
    files = animatediff_files
    with pytest.raises(VideoMageInputError, match="^motion_module: .*is a Stable Diffusion checkpoint"):
        load_animatediff_files(files["checkpoint"], files["checkpoint"], files["tokenizer"])
    with pytest.raises(VideoMageInputError, match="^checkpoint_file: .*is an AnimateDiff motion module"):
        load_animatediff_files(files["motion_module"], files["motion_module"], files["tokenizer"])
    cut = tmp_path / "truncated.safetensors"
    cut.write_bytes(files["checkpoint"].read_bytes()[:5000])
    with pytest.raises(VideoMageInputError, match="^checkpoint_file: 'truncated.safetensors' is not a readable"):
        load_animatediff_files(cut, files["motion_module"], files["tokenizer"])
    # a pickle that would run code on a full unpickle: weights_only refuses it
    evil = tmp_path / "evil.ckpt"
    torch.save({"x": torch.zeros(1), "payload": _Payload()}, str(evil))
    with pytest.raises(VideoMageInputError, match="^motion_module: 'evil.ckpt' is not a readable"):
        load_animatediff_files(files["checkpoint"], evil, files["tokenizer"])
    assert not _Payload.ran
    with pytest.raises(VideoMageInputError, match="^tokenizer: .*not a CLIP tokenizer folder"):
        load_animatediff_files(files["checkpoint"], files["motion_module"], tmp_path)


class _Payload:
    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran():
    _Payload.ran = True
    return None


def test_the_cli_takes_a_checkpoint_and_a_motion_module(animatediff_files, tmp_path, capsys):
    from videomage_core.cli import main

    files = animatediff_files
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    from PIL import Image

    for i in range(3):
        Image.fromarray((torch.rand(64, 64, 3) * 255).byte().numpy()).save(imgs / f"{i}.png")
    out = tmp_path / "toy.safetensors"
    from videomage_core.video_io import save_animation

    aux = save_animation(torch.rand(2, 64, 64, 3), tmp_path / "aux.webp")  # L_reg data: no prior videos to make
    common = ["--model", str(files["checkpoint"]), "--motion-module", str(files["motion_module"]),
              "--tokenizer", str(files["tokenizer"]), "--size", "64x64", "--steps", "1"]
    assert main(["train-subject", *common, "--images", str(imgs), "--token", "<toy>", "--superclass", "toy",
                 "--aux-video", str(aux), "a toy", "--out", str(out)]) == 0
    from videomage_core.artifacts import load_artifact

    assert load_artifact(out).base == "animatediff"
    capsys.readouterr()
    assert main(["train-subject", "--model", str(files["checkpoint"]), "--images", str(imgs), "--token", "<t>",
                 "--superclass", "toy", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "--motion-module: " in capsys.readouterr().err
