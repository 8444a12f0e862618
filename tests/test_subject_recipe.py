"""``bench/subject_recipe.py``: the recipe's subject stage alone; fidelity split into its parts; rows merge by key."""
from __future__ import annotations

import pytest
import torch

from bench import subject_recipe as SR


def test_score_parts_splits_fidelity_into_hue_and_shape():
    from videomage_core.shapesworld import customization as C

    subject = C.subject_pairs(1000, 1)[0][0]
    images, _ = C.subject_images(subject, 0, 32, 1)
    exact = SR.score_parts(images[0][None].repeat(8, 1, 1, 1), subject)  # the subject's own image, as a still video
    # a textured subject averages three parts; a plain one two (measures.object_fidelity)
    parts = [exact["hue"], exact["shape"]] + ([] if exact["texture"] is None else [exact["texture"]])
    assert exact["fidelity"] == pytest.approx(sum(parts) / len(parts), abs=1e-3)  # each part rounded to 1e-4
    assert exact["hue"] == 1.0 and exact["fidelity"] >= 0.5
    empty = SR.score_parts(torch.zeros(8, 32, 32, 3), subject)  # nothing to detect: every part 0
    assert empty["fidelity"] == 0.0 and empty["hue"] == 0.0 and empty["shape"] == 0.0


def test_probe_trains_the_recipes_subjects_and_rows_merge(tmp_path):
    from videomage_core.model import load_model
    from videomage_core.pretrained import shapesworld_model_dir
    from videomage_core.shapesworld import customization as C

    model = load_model(shapesworld_model_dir())
    recipe = C.Recipe.for_model(model, subject_steps=2, sample_steps=2, prior_videos=1, prior_steps=2)
    row = SR.probe(model, recipe, pairs=1, seeds=1, log=lambda _: None)
    assert row["subjects"] == 2 and {k: len(v) for k, v in row["scores"].items()} == {"before": 2, "after": 2}
    assert row["recipe"]["subject_steps"] == 2 and model.adapters == {}
    assert all(v is None or 0.0 <= v <= 1.0 for side in row["mean"].values() for v in side.values())
    path = tmp_path / "subject.json"
    SR.record(path, row)
    rows = SR.record(path, {**row, "final_loss": 0.5})  # same model, settings and samples: replaced
    assert len(rows) == 1 and rows[0]["final_loss"] == 0.5
    other = {**row, "recipe": {**row["recipe"], "lambda1": 0.0}}
    rows = SR.record(path, other)
    md = path.with_suffix(".md").read_text()
    assert len(rows) == 2 and "| 0.25 |" in md and "| 0 |" in md


@pytest.mark.parametrize("argv", [["--pairs", "0"], ["--recipe", "subject_steps=many"], ["--seeds", "0"]])
def test_cli_refuses_bad_arguments(argv):
    with pytest.raises(SystemExit):
        SR.main(argv)
