"""``bench/motion_recipe.py``: the recipe's motion stage alone, with the recipe's coverage and rank; rows merge by key."""
from __future__ import annotations

import pytest

from bench import motion_recipe as MR


def test_probe_trains_the_recipes_motion_and_rows_merge(tmp_path):
    from videomage_core.model import load_model
    from videomage_core.pretrained import shapesworld_model_dir
    from videomage_core.shapesworld import customization as C

    model = load_model(shapesworld_model_dir())
    recipe = C.Recipe.for_model(model, size=32, motion_steps=2, inversion_steps=1, sample_steps=2,
                                motion_coverage="all_linear", motion_rank=2)
    row = MR.probe(model, "swap", recipe, seeds=1)
    assert row["recipe"]["motion_coverage"] == "all_linear" and row["recipe"]["motion_rank"] == 2
    # rank 2 on every temporal Linear: more parameters than rank 2 on the attention projections alone
    attention = MR.probe(model, "swap", C.Recipe.for_model(model, size=32, motion_steps=2, inversion_steps=1,
                                                             sample_steps=2, motion_rank=2,
                                                             motion_coverage="attention"), seeds=1)
    assert row["lora_parameters"] > attention["lora_parameters"] > 0
    assert {k: len(v) for k, v in row["motion_fidelity"].items()} == {"lora_only": 1, "with_prior": 1}
    assert all(0.0 <= v <= 1.0 for v in row["mean"].values()) and model.adapters == {}
    path = tmp_path / "recipe.json"
    MR.record(path, row)
    rows = MR.record(path, {**row, "final_loss": 0.5})  # same model, motion and motion settings: replaced
    assert len(rows) == 1 and rows[0]["final_loss"] == 0.5
    rows = MR.record(path, attention)
    md = path.with_suffix(".md").read_text()
    assert len(rows) == 2 and "| all_linear | 2 |" in md and "| attention | 2 |" in md


@pytest.mark.parametrize("argv", [["--motions", "moonwalk"], ["--recipe", "motion_rank=big"], ["--seeds", "0"]])
def test_cli_refuses_bad_arguments(argv):
    with pytest.raises(SystemExit):
        MR.main(argv)
