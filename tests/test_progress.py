"""Long phases report progress: the prior videos of subject training, the videos fusion generates, and
the terminal line shows losses of any size (issue 15, item 7)."""
from __future__ import annotations

import json

import torch

from videomage_core.fusion import FusionSettings, fuse_subjects, generation_steps
from videomage_core.subject import SubjectSettings, train_subject
from videomage_core.training import StepInfo


def _images(n=3, size=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, size, size, 3, generator=gen)


def _steps_by_stage(infos):
    out = {}
    for info in infos:
        out.setdefault(info.stage, []).append((info.step, info.total, info.has_loss))
    return out


def test_subject_training_reports_its_prior_videos_then_its_steps(model, tmp_path):
    seen = []
    settings = SubjectSettings(token="<toy>", superclass="toy", steps=2, height=64, width=64, prior_videos=2,
                               prior_frames=3, prior_steps=3)
    train_subject(model, _images(), settings, callback=seen.append, cache_dir=tmp_path)
    stages = _steps_by_stage(seen)
    assert list(stages) == ["prior_videos", "subject"], "generation first, then training, nothing silent"
    # 2 videos x 3 sampling steps: one stage counting 1..6 of 6, without a loss
    assert stages["prior_videos"] == [(i, 6, False) for i in range(1, 7)]
    assert stages["subject"] == [(1, 2, True), (2, 2, True)]

    seen.clear()  # the same request again: the prior videos come from the cache, so no generation steps
    train_subject(model, _images(), settings, callback=seen.append, cache_dir=tmp_path)
    assert list(_steps_by_stage(seen)) == ["subject"]


def _subject(model, token, word, seed):
    from videomage_core.artifacts import LoraArtifact
    from videomage_core.lora import delete_lora, inject_lora, lora_state_dict
    from videomage_core.tokens import add_token, get_token_embedding

    add_token(model, token, init_word=word)
    inject_lora(model, "tmp", "spatial", seed=seed)
    art = LoraArtifact(kind="subject", scope="spatial", rank=4, alpha=4.0, lora=lora_state_dict(model, "tmp"),
                       tokens={token: get_token_embedding(model, token)}, superclasses={token: word},
                       base_fingerprint=model.fingerprint)
    delete_lora(model, "tmp")
    return art


def test_fusion_reports_the_videos_it_generates(model, tmp_path):
    subjects = [_subject(model, "<toy>", "toy", 1), _subject(model, "<dog>", "dog", 2)]
    settings = FusionSettings(steps=1, frames=3, height=64, width=64, generation_steps=2, videos_per_subject=1,
                              cutmix_videos=1)
    # each subject's video (2 x 2 steps) and the CutMix background (2 steps)
    assert generation_steps(settings, 2) == 6
    seen = []
    fuse_subjects(model, subjects, settings, callback=seen.append, cache_dir=tmp_path)
    stages = _steps_by_stage(seen)
    assert list(stages) == ["fusion_videos", "fusion"]
    assert stages["fusion_videos"] == [(i, 6, False) for i in range(1, 7)]
    assert [s for s, _, _ in stages["fusion"]] == [1]


def test_the_terminal_line_keeps_small_losses_and_shows_generation_speed(capsys):
    from videomage_core.cli import terminal_progress

    terminal_progress(StepInfo("fusion", 3, 3, 1.234e-5, {"L_fusion": 1.234e-5, "L_attn": 0.5}))
    line = capsys.readouterr().out
    assert "loss 1.234e-05" in line and "L_fusion 1.234e-05" in line and "0.0000" not in line
    terminal_progress(StepInfo("prior_videos", 2, 8, 0.0, seconds=1.5, has_loss=False))
    line = capsys.readouterr().out
    assert "[prior_videos] 2/8 1.50 s/step" in line and "loss" not in line


def test_the_node_progress_draws_no_loss_curve_for_generation_steps(monkeypatch):
    from nodes import common

    updates = []
    monkeypatch.setattr(common.bridge.Progress, "update", lambda self, *a: updates.append(a))
    live = common.LiveLoss("Train Subject", {"prior_videos": 4, "subject": 2})
    live(StepInfo("prior_videos", 1, 4, 0.0, has_loss=False))
    live(StepInfo("subject", 1, 2, 0.25))
    assert updates[0] == ("prior_videos", 1, 4, None)
    assert live.losses == {"subject": [0.25]}, "a generation step is not a loss of 0"


def test_a_tiny_model_says_its_own_small_size(tiny_model_dir):
    from videomage_core.cli import _size_for, build_parser
    from videomage_core.model import load_model

    assert json.loads((tiny_model_dir / "videomage.json").read_text())["width"] == 64
    args = build_parser().parse_args(["sample", "--model", str(tiny_model_dir), "--prompt", "a toy",
                                      "--subject", "s.safetensors", "--out", "v.webp"])
    assert _size_for(args, load_model(tiny_model_dir)) == (64, 64), "not ZeroScope's 576 x 320"


def test_a_subject_outside_the_papers_3_to_5_images_gets_a_note():
    """The method runs on any number of images (not an error), but the docs' "3-5" is checked: outside it,
    the CLI and the node's info say what the paper uses and what to expect."""
    from videomage_core.subject import image_count_note

    assert [image_count_note(n) is None for n in (1, 2, 3, 4, 5, 6)] == [False, False, True, True, True, False]
    assert "2 image(s)" in image_count_note(2) and "3-5" in image_count_note(2)
    assert "slower" in image_count_note(8)
