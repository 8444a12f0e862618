"""``bench/fusion_recipe.py``: both subjects at each two-subject stage; a missing subject scores 0; rows merge."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import fusion_recipe as FR


def _pair_clip(pair):
    from videomage_core.shapesworld.generator import sample_interaction

    return sample_interaction(np.random.default_rng(0), "approach", subjects=list(pair), frames=8, height=32, width=32)


def test_two_subject_scores_count_a_missing_subject_as_zero():
    from videomage_core.shapesworld import customization as C

    pair = C.subject_pairs(1000, 1)[0]
    both = FR.two_subject_scores(torch.from_numpy(_pair_clip(pair).frames).float(), pair)
    assert both["objects"] == 2 and both["weaker"] > 0.3  # each subject drawn as the generator draws it
    assert both["fidelity"] >= both["weaker"]
    # the same clip with the second subject painted out (background = the frame's corner colour)
    frames = _pair_clip(pair)
    video = torch.from_numpy(frames.frames).float().clone()
    gone = torch.from_numpy(frames.masks[1] > 0.5)
    video[gone] = video[:, :1, :1].expand_as(video)[gone]
    one = FR.two_subject_scores(video, pair)
    assert one["objects"] == 1 and one["weaker"] < 0.5 * both["weaker"]
    assert FR.two_subject_scores(torch.zeros(8, 32, 32, 3), pair) == {"fidelity": 0.0, "weaker": 0.0, "objects": 0}


def test_probe_scores_every_stage_and_rows_merge(tmp_path):
    from bench.quality import SCALES
    from videomage_core.model import load_model
    from videomage_core.pretrained import shapesworld_model_dir
    from videomage_core.shapesworld import customization as C

    model = load_model(shapesworld_model_dir())
    recipe = C.Recipe.for_model(model, **SCALES["test"])
    row = FR.probe(model, recipe, tmp_path / "out", pairs=1, seeds=1, log=lambda _: None)
    assert {k: len(v) for k, v in row["scores"].items()} == {s: 1 for s in FR.STAGES} and model.adapters == {}
    assert set(row["mean"]["scs"]) >= {"fidelity", "weaker", "motion_fidelity", "interaction"}
    assert all(0.0 <= row["mean"][s]["weaker"] <= row["mean"][s]["fidelity"] <= 1.0 for s in FR.STAGES)
    trained = sorted(p.name.split("-")[0] for p in (tmp_path / "out" / "artifacts").iterdir())
    assert trained == ["fused_p0", "motion_orbit", "subject_p0s0", "subject_p0s1"]
    path = tmp_path / "fusion.json"
    FR.record(path, row)
    assert len(FR.record(path, {**row, "scores": {}})) == 1  # same model, recipe and samples: replaced
    rows = FR.record(path, {**row, "recipe": {**row["recipe"], "lambda2": 1.5}})
    assert len(rows) == 2 and "| 1.5 |" in path.with_suffix(".md").read_text()


@pytest.mark.parametrize("argv", [["--pairs", "0"], ["--recipe", "lambda2=lots"], ["--seeds", "0"]])
def test_cli_refuses_bad_arguments(argv):
    with pytest.raises(SystemExit):
        FR.main(argv)


@pytest.mark.parametrize("interaction, prompt, expected", [
    ("", "a <a> orbits a <b>", ""),  # the paper: the subject branch reads the target prompt
    ("chase", "a <a> orbits a <b>", "a <a> chases a <b>"),
    ("approach", "a <b> jumps over a <a>", "a <b> and a <a> approach each other"),  # the target's order
    ("still_pair", "a <b> jumps over a <a>", "a <b> and a <a>"),  # fusion's L_attn caption, verbless
])
def test_subject_branch_prompt_is_a_pretraining_caption_of_the_two_tokens(interaction, prompt, expected):
    from videomage_core.shapesworld import customization as C

    assert C.subject_branch_prompt(C.Recipe(subject_interaction=interaction), prompt) == expected


@pytest.mark.parametrize("interaction, prompt, name", [
    ("orbit", "a <a> orbits a <b>", "subject_interaction"),  # held out: its verb is the untrained word
    ("chase", "a <a> orbits a shape", "prompt"),
])
def test_subject_branch_prompt_refuses_what_it_cannot_build(interaction, prompt, name):
    from videomage_core.errors import VideoMageInputError
    from videomage_core.shapesworld import customization as C

    with pytest.raises(VideoMageInputError, match=name):
        C.subject_branch_prompt(C.Recipe(subject_interaction=interaction), prompt)
