"""Shared fixtures: one tiny ZeroScope-layout model folder per session, loaded through the real path."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from videomage_core.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny_zeroscope", seed=0)


@pytest.fixture()
def model(tiny_model_dir):
    """A freshly loaded tiny model (tests may add tokens and adapters)."""
    from videomage_core.model import load_model

    return load_model(tiny_model_dir)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory):
    from videomage_core.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny2") / "other", seed=1)


@pytest.fixture(scope="session")
def animatediff_model_dir(tmp_path_factory):
    """A tiny AnimateDiff folder: an SD1.5-layout UNet2D + motion adapter, the AnimateDiffPipeline layout."""
    from videomage_core.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_ad") / "tiny_animatediff", seed=0, base="animatediff")


@pytest.fixture(scope="session")
def animatediff_files(tmp_path_factory):
    """The same tiny AnimateDiff as single files in the original layouts: ``checkpoint`` (SD1.5 LDM keys),
    ``motion_module`` (.safetensors), ``motion_module_ckpt`` (a weights-only .ckpt), ``tokenizer``."""
    from videomage_core.bases.animatediff_files import build_tiny_single_files

    return build_tiny_single_files(tmp_path_factory.mktemp("tiny_ad_files"), seed=0)


@pytest.fixture(scope="session")
def wan_model_dir(tmp_path_factory):
    """A tiny Wan folder (WanPipeline layout: transformer/, Wan VAE, umT5, UniPC flow scheduler)."""
    from videomage_core.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_wan") / "tiny_wan", seed=0, base="wan")


@pytest.fixture(params=["zeroscope", "animatediff"])
def any_base_model(request, tiny_model_dir, animatediff_model_dir):
    """A freshly loaded tiny model of each base family (the test runs once per base)."""
    from videomage_core.model import load_model

    return load_model(tiny_model_dir if request.param == "zeroscope" else animatediff_model_dir)


@pytest.fixture()
def one_thread():
    """Run a test on one CPU thread. Bit-exact comparisons of two training runs need it: with two
    threads some CPU backward kernels reduce in a schedule-dependent order (measured: two identical
    uninterrupted motion runs, textual inversion included, differ in the last bit of the learned
    token rows), which says nothing about what those tests check (resuming, determinism of seeds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def wan_files(tmp_path_factory):
    """The tiny Wan (the same weights as ``wan_model_dir``) as ComfyUI's three files: ``diffusion_model``
    (original Wan keys), ``text_encoder`` (umT5 keys + ``spiece_model``), ``vae`` (Wan 2.1 VAE keys)."""
    from videomage_core.bases.wan_files import build_tiny_single_files

    return build_tiny_single_files(tmp_path_factory.mktemp("tiny_wan_files"), seed=0)
