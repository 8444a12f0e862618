"""The demo's motion LoRA, checked against its own reference and retrained with the next seed when it fails
(videomage_core/shapesworld/motion_check.py). Training and checking are replaced by scripted stand-ins: what
is tested is which trainings run, which artifact is kept and what the record says; the real path runs in
test_cli's demo test on the built-in model."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from videomage_core.errors import VideoMageInputError
from videomage_core.shapesworld import customization as C
from videomage_core.shapesworld import motion_check as MC


def _scripted(monkeypatch, scores_per_training):
    """Training ``k`` returns artifact ``k``; its check returns ``scores_per_training[k]``."""
    trained, checked = [], []

    def train(model, reference, recipe, seed, callback=None):
        trained.append(seed)
        return SimpleNamespace(index=len(trained) - 1, info={})

    def check(model, motion, reference, recipe, seeds):
        checked.append(list(seeds))
        return scores_per_training[motion.index]

    monkeypatch.setattr(C, "train_motion_artifact", train)
    monkeypatch.setattr(MC, "check_motion", check)
    return trained, checked


@pytest.mark.parametrize("scores, attempts, trained_seeds, kept", [
    # the first training passes: nothing retrained (the demo's cost stays one training)
    ([[0.9, 0.8, 0.0]], 3, [7], 0),
    # the demo's draw: the seed-0 LoRA drops the still centre, the next seed's passes (session 21's scores)
    ([[0.0, 0.0, 0.0], [0.0, 0.96, 0.73], [1.0, 1.0, 1.0]], 3, [7, 8], 1),
    # none passes: every attempt trained, the best median kept (not the last, not the best single sample)
    ([[0.0, 0.0, 0.99], [0.3, 0.4, 0.0], [0.2, 0.0, 0.0]], 3, [7, 8, 9], 1),
    # the median, not the mean: one perfect sample among failures does not pass
    ([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], 2, [7, 8], 1),
])
def test_retrains_until_a_check_passes(monkeypatch, scores, attempts, trained_seeds, kept):
    trained, checked = _scripted(monkeypatch, scores)
    artifact = MC.train_checked_motion(None, None, None, seed=7, attempts=attempts, checks=3)
    assert trained == trained_seeds
    assert artifact.index == kept
    record = artifact.info["motion_checks"]
    assert [a["training_seed"] for a in record] == trained_seeds
    assert [a["kept"] for a in record] == [k == kept for k in range(len(trained_seeds))]
    assert [a["passed"] for a in record] == [sorted(s)[1] >= MC.PASSING for s in scores[:len(trained_seeds)]]
    # every check samples the same seeds, apart from the seed the demo shows its videos with
    assert checked == [[MC.CHECK_SEED + 7 + i for i in range(3)]] * len(trained_seeds)
    assert 7 not in checked[0]


@pytest.mark.parametrize("name, kwargs", [("attempts", dict(attempts=0)), ("checks", dict(checks=0))])
def test_attempts_and_checks_must_be_positive(monkeypatch, name, kwargs):
    trained, _ = _scripted(monkeypatch, [[1.0]])
    with pytest.raises(VideoMageInputError, match=f"^{name}: expected at least 1"):
        MC.train_checked_motion(None, None, None, seed=0, **kwargs)
    assert trained == []  # nothing trained before the error
