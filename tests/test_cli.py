"""The CLI and the demo, run for real at test scale."""
import json
import subprocess
import sys

import pytest
import torch

from videomage_core.cli import build_parser, main
from videomage_core.video_io import load_video, save_animation

COMMANDS = ["tiny-model", "train-subject", "train-motion", "fuse", "sample", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "videomage_core", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "train-subject" in out.stdout


def test_cli_pipeline_and_clear_errors(tiny_model_dir, tmp_path, capsys):
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        arr = (torch.rand(48, 48, 4) * 255).byte().numpy()
        arr[..., 3] = 0
        arr[8:40, 8:40, 3] = 255  # the alpha channel is the subject mask
        Image.fromarray(arr, "RGBA").save(imgs / f"{i}.png")
    common = ["--model", str(tiny_model_dir), "--size", "64x64", "--steps", "2"]
    sub = tmp_path / "toy.safetensors"
    assert main(["train-subject", *common, "--images", str(imgs), "--token", "<toy>", "--superclass", "toy",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(sub)]) == 0
    video = tmp_path / "ref.webp"
    save_animation(torch.rand(3, 64, 64, 3), video)
    assert load_video(video).shape == (3, 64, 64, 3)
    mot = tmp_path / "mot.safetensors"
    assert main(["train-motion", *common, "--video", str(video), "--prompt", "a toy moving",
                 "--subjects", "toy", "--inversion-steps", "1", "--out", str(mot)]) == 0
    out = tmp_path / "video.webp"
    assert main(["sample", "--model", str(tiny_model_dir), "--size", "64x64", "--subject", str(sub),
                 "--motion", str(mot), "--prompt", "A <toy> jumps", "--frames", "3", "--steps", "2",
                 "--tau", "1", "--out", str(out)]) == 0
    assert load_video(out).shape == (3, 64, 64, 3)
    capsys.readouterr()
    # clear errors, exit code 2, nothing written
    assert main(["sample", "--model", str(tiny_model_dir), "--subject", str(sub), "--motion", str(mot),
                 "--prompt", "A toy jumps", "--out", str(tmp_path / "x.webp")]) == 2
    assert "prompt: the prompt 'A toy jumps' does not contain the tokens ['<toy>']" in capsys.readouterr().err
    assert main(["sample", "--model", str(tiny_model_dir), "--subject", str(mot), "--prompt", "A <toy>",
                 "--out", str(tmp_path / "x.webp")]) == 2
    assert "--subject: 'mot.safetensors' holds a motion, expected a subject" in capsys.readouterr().err
    assert main(["train-subject", "--model", str(tmp_path / "nope"), "--images", str(imgs), "--token", "<t>",
                 "--superclass", "toy", "--out", str(tmp_path / "y.safetensors")]) == 2
    assert "model_path: no model folder" in capsys.readouterr().err
    assert not (tmp_path / "x.webp").exists() and not (tmp_path / "y.safetensors").exists()


def test_demo_runs_end_to_end_at_test_scale(tmp_path):
    from videomage_core.demo import run_demo

    out = tmp_path / "demo"
    report = run_demo(out, scale="test")  # on the built-in ShapesWorld model
    for name in ("videomage.webp", "wo_scs.webp", "side_by_side.webp", "report.json", "motion.safetensors",
                 "fused_subjects.safetensors", "subject_1.safetensors", "inputs/reference.webp",
                 "inputs/subject_1_0.png", "inputs/subject_2_1.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "report.json").read_text())
    assert set(saved["losses"]) == {"subject_1", "subject_2", "motion", "motion_inversion", "fusion"}
    assert all(len(v) >= 2 for v in saved["losses"].values())
    assert saved["timings_s"]["total"] > 0 and report["timings"]["total"] == saved["timings_s"]["total"]
    assert set(saved["measures"]) == {"videomage", "wo_scs"}
    for m in saved["measures"].values():
        assert set(m) >= {"subject_fidelity", "motion_fidelity", "leakage", "binding", "temporal_consistency"}
    assert saved["model"]["kind"].startswith("built-in ShapesWorld")
    assert saved["inputs"]["reference_motion"] == "orbit"
    frames = load_video(out / "side_by_side.webp")  # reference | subjects | VideoMage | w/o SCS, 4x upscaled
    assert frames.shape[0] == 8 and frames.shape[2] > 4 * 4 * 32
