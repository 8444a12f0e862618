"""The CLI and the demo, run for real at test scale."""
import json
import subprocess
import sys

import pytest
import torch

from videomage_core.cli import build_parser, main
from videomage_core.video_io import load_video, save_animation

COMMANDS = ["tiny-model", "export", "train-subject", "train-motion", "fuse", "sample", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_says_what_it_does_and_its_default(command):
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    text = sub.format_help()
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{command} {action.option_strings[-1]} has no help"
            if action.default not in (None, False) and not action.required:
                assert f"(default: {action.default})" in " ".join(text.split()), (command, action.dest)


def test_module_entry_point_runs_from_any_folder(tmp_path):
    """`make` installs the engine into the venv: `python -m videomage_core` is not tied to the repository root."""
    out = subprocess.run([sys.executable, "-m", "videomage_core", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and "train-subject" in out.stdout, out.stderr


def test_the_builtin_model_has_its_node_name_on_the_command_line(tmp_path, monkeypatch):
    from videomage_core.cli import _load
    from videomage_core.pretrained import SHAPESWORLD_DIR

    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["sample", "--model", "shapesworld_builtin", "--subject", "s.safetensors",
                                      "--prompt", "a <s>", "--out", "x.webp", "--dtype", "fp32"])
    model = _load(args)
    assert model.path == str(SHAPESWORLD_DIR)


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
    video = tmp_path / "ref.webp"
    save_animation(torch.rand(3, 64, 64, 3), video)
    # L_reg from a given video (the prior videos' generation and its cache are tested in test_progress)
    assert main(["train-subject", *common, "--images", str(imgs), "--token", "<toy>", "--superclass", "toy",
                 "--aux-video", str(video), "a toy", "--out", str(sub)]) == 0
    assert load_video(video).shape == (3, 64, 64, 3)
    mot = tmp_path / "mot.safetensors"
    assert main(["train-motion", *common, "--video", str(video), "--prompt", "a toy moving",
                 "--subjects", "toy", "--inversion-steps", "1", "--coverage", "all_linear", "--out", str(mot)]) == 0
    from videomage_core.artifacts import load_artifact
    assert load_artifact(mot).coverage == "all_linear"  # and SCS below samples with every temporal Linear
    out = tmp_path / "video.webp"
    assert main(["sample", "--model", str(tiny_model_dir), "--size", "64x64", "--subject", str(sub),
                 "--motion", str(mot), "--prompt", "A <toy> jumps", "--frames", "3", "--steps", "2",
                 "--tau", "1", "--out", str(out)]) == 0
    assert load_video(out).shape == (3, 64, 64, 3)
    # beyond the paper: a second motion and CustomCrafter's early subject scale
    assert main(["sample", "--model", str(tiny_model_dir), "--size", "64x64", "--subject", str(sub),
                 "--motion", str(mot), "--motion-2", str(mot), "--motion-2-weight", "0.5",
                 "--subject-early-scale", "0.5", "--subject-early-steps", "1", "--prompt", "A <toy> jumps",
                 "--frames", "3", "--steps", "2", "--tau", "1", "--out", str(tmp_path / "two.webp")]) == 0
    capsys.readouterr()
    assert main(["sample", "--model", str(tiny_model_dir), "--size", "64x64", "--subject", str(sub),
                 "--motion", str(mot), "--motion-2", str(mot), "--motion-2-weight", "5", "--prompt",
                 "A <toy> jumps", "--out", str(tmp_path / "bad.webp")]) == 2
    assert "--motion-2-weight" in capsys.readouterr().err and not (tmp_path / "bad.webp").exists()
    # clear errors, exit code 2, nothing written
    assert main(["sample", "--model", str(tiny_model_dir), "--subject", str(sub), "--motion", str(mot),
                 "--prompt", "A toy jumps", "--out", str(tmp_path / "x.webp")]) == 2
    assert "--prompt: the prompt 'A toy jumps' does not contain the tokens ['<toy>']" in capsys.readouterr().err
    assert main(["sample", "--model", str(tiny_model_dir), "--subject", str(mot), "--prompt", "A <toy>",
                 "--out", str(tmp_path / "x.webp")]) == 2
    assert "--subject: 'mot.safetensors' holds a motion, expected a subject" in capsys.readouterr().err
    assert main(["train-subject", "--model", str(tmp_path / "nope"), "--images", str(imgs), "--token", "<t>",
                 "--superclass", "toy", "--out", str(tmp_path / "y.safetensors")]) == 2
    assert "error: --model: no model folder" in capsys.readouterr().err  # the flag typed, not `model_path`
    assert not (tmp_path / "x.webp").exists() and not (tmp_path / "y.safetensors").exists()
    # flags checked before any model loads or any training starts
    sample = ["sample", "--model", str(tiny_model_dir), "--subject", str(sub), "--prompt", "A <toy>"]
    for flags, message in [
        (["--fps", "0", "--out", str(tmp_path / "x.webp")], "--fps: expected a positive frame rate, got 0.0"),
        (["--out", str(tmp_path / "x.mp4")], "--out: expected a .webp or .gif file"),
        (["--device", "gpu7", "--out", str(tmp_path / "x.webp")], "device: 'gpu7' is not a device"),
    ]:
        assert main([*sample, *flags]) == 2
        assert message in capsys.readouterr().err
    assert main(["fuse", "--model", str(tiny_model_dir), "--subject", str(sub), "--subject", str(sub),
                 "--out", str(tmp_path / "pair.webp")]) == 2
    assert "--out: expected a .safetensors file" in capsys.readouterr().err
    (imgs / "broken.png").write_bytes(b"not a png")
    assert main(["train-subject", *common, "--images", str(imgs), "--token", "<t2>", "--superclass", "toy",
                 "--out", str(tmp_path / "y.safetensors")]) == 2
    assert "--images: '" in (err := capsys.readouterr().err) and "broken.png' is not a readable image" in err
    assert not list(tmp_path.glob("x.*")) and not (tmp_path / "y.safetensors").exists()


def _model_with(settings: dict):
    """What the CLI reads of a loaded model to fill its defaults (``model.default``)."""
    return type("M", (), {"default": staticmethod(lambda name, fallback: settings.get(name, fallback))})()


def test_cli_sampling_defaults_come_from_the_model():
    from videomage_core.cli import _or_model, _size_for
    from videomage_core.model import read_model_settings
    from videomage_core.pretrained import shapesworld_model_dir

    builtin_model = _model_with(read_model_settings(shapesworld_model_dir()))

    flags = ["sample", "--model", "m", "--subject", "s", "--prompt", "p", "--out", "o.webp"]
    args = build_parser().parse_args(flags)
    assert (args.size, args.frames, args.steps, args.cfg, args.alpha) == (None,) * 5
    assert _size_for(args, builtin_model) == (32, 32)  # the built-in model's videomage.json
    paper = [("frames", 24), ("steps", 50), ("cfg", 9.0)]
    assert [_or_model(None, builtin_model, k, v) for k, v in paper] == [8, 30, 3.0]
    assert _or_model(12, builtin_model, "frames", 24) == 12
    assert _size_for(args, _model_with({})) == (576, 320)  # no videomage.json: the paper's
    args = build_parser().parse_args([*flags, "--size", "64x48"])
    assert _size_for(args, builtin_model) == (64, 48)


def test_demo_runs_end_to_end_at_test_scale(tmp_path):
    from videomage_core.demo import run_demo

    out = tmp_path / "demo"
    report = run_demo(out, scale="test")  # on the built-in ShapesWorld model
    for name in ("videomage.webp", "videomage_paper_scs.webp", "wo_scs.webp", "side_by_side.webp", "report.json", "motion.safetensors",
                 "fused_subjects.safetensors", "subject_1.safetensors", "inputs/reference.webp",
                 "inputs/subject_1_0.png", "inputs/subject_2_1.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "report.json").read_text())
    assert set(saved["losses"]) == {"subject_1", "subject_2", "motion", "motion_inversion", "fusion"}
    assert all(len(v) >= 2 for v in saved["losses"].values())
    assert saved["timings_s"]["total"] > 0 and report["timings"]["total"] == saved["timings_s"]["total"]
    assert set(saved["measures"]) == {"videomage", "videomage_paper_scs", "wo_scs", "motion_stage", "subjects_stage"}
    # the VideoMage column weights SCS's step by region (beyond the paper); the paper's SCS is measured beside it
    assert saved["sampling"] == "scs_regions" and "videomage_paper_scs" in saved["recipe_note"]
    for name in ("videomage", "videomage_paper_scs", "wo_scs"):
        assert set(saved["measures"][name]) >= {"subject_fidelity", "motion_fidelity", "leakage", "binding",
                                                "temporal_consistency"}
    # the motion LoRA alone, scored against the reference: one motion fidelity, whatever the tiny steps drew
    assert 0.0 <= saved["measures"]["motion_stage"] <= 1.0 and "motion_stage" in saved["measures_note"]
    # and the fused subjects alone on "a <subject1> and a <subject2>": one pair subject fidelity
    assert 0.0 <= saved["measures"]["subjects_stage"] <= 1.0
    assert '"a <subject1> and a <subject2>"' in saved["measures_note"]
    assert saved["model"]["kind"].startswith("built-in ShapesWorld")
    assert saved["inputs"]["reference_motion"] == "orbit"
    # the motion LoRA's check against its own reference: one or two trainings (seeds 0, 1), exactly one kept
    checks = saved["motion_checks"]
    assert [c["training_seed"] for c in checks] in ([0], [0, 1]) and sum(c["kept"] for c in checks) == 1
    assert checks[-1]["passed"] or len(checks) == 2  # a second training only after a failed check
    frames = load_video(out / "side_by_side.webp")  # reference | subjects | VideoMage | w/o SCS, 4x upscaled
    assert frames.shape[0] == 8 and frames.shape[2] > 4 * 4 * 32


def test_tiny_model_never_writes_into_a_folder_in_use(tmp_path, capsys):
    folder = tmp_path / "real_model"
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "tokenizer" / "vocab.json").write_text("{}")
    assert main(["tiny-model", str(folder)]) == 2
    assert f"folder: '{folder}' exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in folder.rglob("*")] == ["tokenizer", "vocab.json"]


def _image_folder(tmp_path, n=2):
    """A folder of ``n`` random 64 x 64 RGB images (``--images``)."""
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(n):
        Image.fromarray((torch.rand(64, 64, 3) * 255).byte().numpy()).save(imgs / f"{i}.png")
    return imgs


def test_cli_trains_and_exports_on_comfyuis_wan_files(wan_files, tmp_path, capsys):
    """``--model`` a Wan diffusion model file with ``--text-encoder`` and ``--vae``; a missing one is named."""
    imgs = _image_folder(tmp_path)
    video = tmp_path / "ref.webp"
    save_animation(torch.rand(5, 64, 64, 3), video)
    files = ["--model", str(wan_files["diffusion_model"]), "--text-encoder", str(wan_files["text_encoder"]),
             "--vae", str(wan_files["vae"]), "--size", "64x64", "--steps", "1"]
    sub = tmp_path / "toy.safetensors"
    assert main(["train-subject", *files, "--images", str(imgs), "--token", "<toy>", "--superclass", "toy",
                 "--aux-video", str(video), "a toy", "--out", str(sub)]) == 0
    assert main(["export", str(sub), "--out", str(tmp_path / "models")]) == 0
    assert (tmp_path / "models" / "loras" / "toy.safetensors").is_file()
    assert "LoraLoaderModelOnly" in capsys.readouterr().out
    assert main(["train-subject", *files[:4], "--images", str(imgs), "--token", "<t>", "--superclass", "toy",
                 "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "--vae" in capsys.readouterr().err


def test_cli_train_subject_image_captions(tiny_model_dir, tmp_path, capsys):
    from videomage_core.artifacts import load_artifact

    imgs = _image_folder(tmp_path)
    captions = tmp_path / "captions.txt"
    captions.write_text("a {token} by a red cup\n\n<toy> on grass\n")  # blank lines are not captions
    base = ["train-subject", "--model", str(tiny_model_dir), "--size", "64x64", "--steps", "1",
            "--images", str(imgs), "--token", "<toy>", "--superclass", "toy"]
    out, video = tmp_path / "toy.safetensors", tmp_path / "aux.webp"
    save_animation(torch.rand(3, 64, 64, 3), video)
    assert main([*base, "--image-captions", str(captions), "--aux-video", str(video), "a toy",
                 "--out", str(out)]) == 0
    assert load_artifact(out).train_args["image_captions"] == ["a {token} by a red cup", "<toy> on grass"]
    assert main([*base, "--image-captions", str(tmp_path / "none.txt"), "--out", str(tmp_path / "y.safetensors")]) == 2
    assert "--image-captions: cannot read" in capsys.readouterr().err
    captions.write_text("a {token}\n")
    assert main([*base, "--image-captions", str(captions), "--out", str(tmp_path / "y.safetensors")]) == 2
    assert "error: --image-captions: expected one caption per image (2), got 1" in capsys.readouterr().err
    assert not (tmp_path / "y.safetensors").exists()


def test_demo_draws_every_look_from_its_seed():
    """The demo's subjects come from its seed, shapes too: two distinct subject shapes per draw, the same seed the
    same draw, and over seeds every subject shape and more than one pair (``make quality``'s pairs keep cycling the
    shapes, so its first pair is always a star and a ring)."""
    from videomage_core.demo import draw_inputs
    from videomage_core.shapesworld import customization as C

    pairs = [tuple(o.shape for o in draw_inputs(seed, 32, 8)[0]) for seed in range(24)]
    assert all(a != b for a, b in pairs)
    assert pairs == [tuple(o.shape for o in draw_inputs(seed, 32, 8)[0]) for seed in range(24)]
    assert {s for p in pairs for s in p} == set(C.SUBJECT_SHAPES)
    assert len({frozenset(p) for p in pairs}) > 3
    assert [tuple(o.shape for o in p) for p in C.subject_pairs(1000, 2)] == [("star", "ring"), ("ring", "cross")]
