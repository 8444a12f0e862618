"""The nodes on an AnimateDiff base: Load AnimateDiff from models/checkpoints + models/animatediff_models
(the tiny single files), the training nodes unchanged, and the export nodes writing into ComfyUI's folders."""
from __future__ import annotations

import os
import shutil

import pytest
import torch


@pytest.fixture(scope="module")
def env(tmp_path_factory, animatediff_files):
    root = tmp_path_factory.mktemp("comfy_ad")
    (root / "models" / "checkpoints").mkdir(parents=True)
    (root / "models" / "animatediff_models").mkdir(parents=True)
    shutil.copy(animatediff_files["checkpoint"], root / "models" / "checkpoints" / "sd15_tiny.safetensors")
    shutil.copy(animatediff_files["motion_module_ckpt"], root / "models" / "animatediff_models" / "mm_tiny.ckpt")
    keys = ("VIDEOMAGE_MODELS_DIR", "VIDEOMAGE_OUTPUT_DIR", "VIDEOMAGE_TEMP_DIR", "VIDEOMAGE_SD1_TOKENIZER")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({"VIDEOMAGE_MODELS_DIR": str(root / "models"), "VIDEOMAGE_OUTPUT_DIR": str(root / "output"),
                       "VIDEOMAGE_TEMP_DIR": str(root / "temp"),
                       "VIDEOMAGE_SD1_TOKENIZER": str(animatediff_files["tokenizer"])})
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def N(env):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS


def test_load_animatediff_train_and_export(N, env):
    loader = N["VideoMageLoadAnimateDiff"]
    spec = loader.INPUT_TYPES()["required"]
    assert spec["ckpt_name"][0] == ["sd15_tiny.safetensors"] and spec["motion_module"][0] == ["mm_tiny.ckpt"]
    model = loader().load("sd15_tiny.safetensors", "mm_tiny.ckpt", "auto", "cpu")[0]
    assert model.family.NAME == "animatediff"

    imgs, masks, _ = N["VideoMageShapesWorldSubject"]().draw("star", "red", "stripes", 3, 64, 64, 0)
    out = N["VideoMageTrainSubject"]().train(
        model=model, images=imgs, token="<my_toy>", superclass="toy", steps=2, rank=2, lr_lora=1e-3, lr_token=1e-3,
        lambda1=0.25, seed=0, width=64, height=64, prior_videos=1, prior_frames=2, prior_steps=1, masks=masks)
    subject = out["result"][0]
    assert subject.base == "animatediff"
    video, vmasks, _ = N["VideoMageShapesWorldMotion"]().draw("chase", "circle", "blue", "square", "yellow", 4,
                                                               64, 64, 0)
    motion = N["VideoMageTrainMotion"]().train(
        model=model, video=video, motion_prompt="a circle chases a square", reference_words="circle, square",
        omega=0.5, steps=2, inversion_steps=1, rank=2, lr_lora=1e-3, lr_token=1e-3, seed=0, width=64, height=64,
        frames=4, frame_index=-1, masks=vmasks)["result"][0]

    exported = N["VideoMageExportSubject"]().export(name="my_toy", subject=subject)
    text = exported["result"][0]
    assert "embedding:my_toy" in text
    assert (env / "models" / "loras" / "my_toy_lora.safetensors").is_file()
    assert (env / "models" / "embeddings" / "my_toy.safetensors").is_file()
    N["VideoMageExportMotion"]().export(name="riding", motion=motion)
    assert (env / "models" / "animatediff_motion_lora" / "riding_motion_lora.safetensors").is_file()
    again = N["VideoMageExportSubject"]().export(name="my_toy", subject=subject)["result"][0]
    assert "my_toy_lora_00001.safetensors" in again, "a second export never overwrites the first"
    assert N["VideoMageExportSubject"].VALIDATE_INPUTS("../x").startswith("name:")
