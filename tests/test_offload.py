"""Sharing the GPU with ComfyUI (issue 16, item 6): unless Load Model's keep_loaded is on, the engine's
weights sit on the CPU and go to the GPU only while a VideoMage node runs, so a ComfyUI node after ours
finds the memory free. No GPU here: the moves are recorded instead of made (``_move_weights``), which
checks the policy; the freed memory itself needs a GPU run."""
from __future__ import annotations

import pytest
import torch

from videomage_core import model as M


@pytest.fixture()
def moves(monkeypatch):
    made = []
    monkeypatch.setattr(M, "_move_weights", lambda m, device: made.append(str(device)))
    return made


def _gpu_model(model, keep_loaded):
    model.device, model.offloaded, model.keep_loaded = torch.device("cuda"), True, keep_loaded
    return model


def test_a_node_brings_the_weights_and_sends_them_back(model, moves):
    from nodes import common

    m = _gpu_model(model, keep_loaded=False)
    during = []
    common.run_engine(lambda cb, cancel: during.append(m.offloaded), "t", {"x": 1}, m)
    assert during == [False], "the node computes with the weights on the GPU"
    assert moves == ["cuda", "cpu"] and m.offloaded, "and gives the memory back when it finishes"
    moves.clear()

    def fails(cb, cancel):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        common.run_engine(fails, "t", {"x": 1}, m)
    assert moves == ["cuda", "cpu"], "a failed node gives it back too"


def test_keep_loaded_keeps_the_weights_on_the_gpu_between_nodes(model, moves):
    from nodes import common

    m = _gpu_model(model, keep_loaded=True)
    for _ in range(3):
        common.run_engine(lambda cb, cancel: None, "t", {"x": 1}, m)
    assert moves == ["cuda"] and not m.offloaded


def test_on_the_cpu_nothing_moves(model, moves):
    from nodes import common

    model.keep_loaded = False
    common.run_engine(lambda cb, cancel: None, "t", {"x": 1}, model)
    assert moves == [] and not M.offload(model)


def test_the_loader_leaves_the_weights_on_the_cpu_until_a_node_needs_them(model):
    from nodes.model_loader import place

    m = place(model, "cuda", keep_loaded=False)
    assert m.offloaded and m.device.type == "cuda" and not m.keep_loaded
    assert next(m.unet.parameters()).device.type == "cpu"
    kept = place(model, "cpu", keep_loaded=True)
    assert kept.keep_loaded
