"""The node classes without ComfyUI: each node's function on the tiny model, validation, the store."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY = dict(width=64, height=64)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a small shared CPU two spinning threads make tiny ops much slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A models/diffusers folder holding the tiny model as zeroscope_v2_576w, and an output folder."""
    from videomage_core.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("comfy")
    build_tiny_model(root / "models" / "diffusers" / "zeroscope_v2_576w", seed=0)
    old = {
        k: os.environ.get(k) for k in ("VIDEOMAGE_MODELS_DIR", "VIDEOMAGE_OUTPUT_DIR", "VIDEOMAGE_TEMP_DIR")
    }
    os.environ["VIDEOMAGE_MODELS_DIR"] = str(root / "models")
    os.environ["VIDEOMAGE_OUTPUT_DIR"] = str(root / "output")
    os.environ["VIDEOMAGE_TEMP_DIR"] = str(root / "temp")
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


@pytest.fixture(scope="module")
def model(N):
    return N["VideoMageLoadModel"]().load("zeroscope_v2_576w", "auto", "auto")[0]


def _run(node, *args, **kwargs):
    out = getattr(node, node.FUNCTION)(*args, **kwargs)
    return out if isinstance(out, dict) else {"result": out, "ui": {}}


def _subject(N, model, token="<toy>", superclass="toy", seed=0, colour="red", **kw):
    imgs, masks, _ = N["VideoMageShapesWorldSubject"]().draw("star", colour, "stripes", 3, 64, 64, seed)
    args = dict(
        model=model,
        images=imgs,
        token=token,
        superclass=superclass,
        steps=2,
        rank=2,
        lr_lora=1e-3,
        lr_token=1e-3,
        lambda1=0.25,
        seed=seed,
        prior_videos=1,
        prior_frames=2,
        prior_steps=1,
        **TINY,
    )
    args.update(kw)
    return _run(N["VideoMageTrainSubject"](), **args)


def _motion(N, model, **kw):
    video, masks, caption = N["VideoMageShapesWorldMotion"]().draw(
        "chase", "circle", "blue", "square", "yellow", 4, 64, 64, 0
    )
    args = dict(
        model=model,
        video=video,
        motion_prompt="a circle chases a square",
        reference_words="circle, square",
        omega=0.5,
        steps=2,
        inversion_steps=1,
        rank=2,
        lr_lora=1e-3,
        lr_token=1e-3,
        seed=0,
        frames=0,
        frame_index=-1,
        masks=masks,
        **TINY,
    )
    args.update(kw)
    return _run(N["VideoMageTrainMotion"](), **args)


def test_root_package_imports_without_comfy():
    spec = importlib.util.spec_from_file_location(
        "videomage_pack_under_test", REPO / "__init__.py", submodule_search_locations=[str(REPO)]
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    assert "VideoMageTrainSubject" in mod.NODE_CLASS_MAPPINGS
    assert set(mod.NODE_CLASS_MAPPINGS) == set(mod.NODE_DISPLAY_NAME_MAPPINGS)


def test_nodes_with_a_ui_result_keep_it_when_cached(N):
    """ComfyUI >= 0.3.68 re-sends a cached node's UI (preview, status text) only for output nodes and nodes
    with HAS_INTERMEDIATE_OUTPUT (0.19.0's flag); without it a re-queued training shows nothing."""
    import inspect

    with_ui = [name for name, cls in N.items() if "ui_result(" in inspect.getsource(getattr(cls, cls.FUNCTION))]
    assert len(with_ui) >= 5, with_ui  # train subject, train motion, fuse, sampler, the loaders
    missing = [n for n in with_ui if not (getattr(N[n], "OUTPUT_NODE", False)
                                          or getattr(N[n], "HAS_INTERMEDIATE_OUTPUT", False))]
    assert not missing, missing


def test_every_input_has_a_tooltip_and_category(N):
    for name, cls in N.items():
        assert cls.CATEGORY.startswith("VideoMage"), name
        assert cls.DESCRIPTION
        spec = cls.INPUT_TYPES()
        for group in ("required", "optional"):
            for inp, s in spec.get(group, {}).items():
                assert len(s) > 1 and s[1].get("tooltip"), f"{name}.{inp} has no tooltip"
        assert hasattr(cls, cls.FUNCTION)


# bad values for every input some node's VALIDATE_INPUTS takes (a new one fails here until it is listed)
BAD_INPUTS = {
    "width": [60, 0, 5000],
    "height": [60, 4],
    "model_name": ["nope"],
    "filename_prefix": ["../escape", "/abs/path"],
    "subject_file": ["../../etc/passwd", "videomage/none.safetensors"],
    "motion_file": ["../../etc/passwd", "videomage/none.safetensors"],
    "name": ["../x", "", "a b"],
}
GOOD_INPUTS = {"width": 64, "height": 64}


def test_a_validation_error_is_about_every_input_comfyui_shows_it_under(N, env):
    """ComfyUI shows a VALIDATE_INPUTS error under every argument of VALIDATE_INPUTS (execution.py attaches
    the one result to each), so each error must name exactly those inputs: a missing model under
    ``model_name`` alone, not again under ``device``; a size error under ``width`` and ``height``."""
    import inspect

    checked = 0
    for name, cls in N.items():
        validate = getattr(cls, "VALIDATE_INPUTS", None)
        if validate is None:
            continue
        args = list(inspect.signature(validate).parameters)
        for arg in args:
            for value in BAD_INPUTS[arg]:
                msg = validate(**{**{a: GOOD_INPUTS.get(a) for a in args}, arg: value})
                assert isinstance(msg, str), f"{name}: {arg}={value!r} passed validation"
                named = msg.split(":", 1)[0].split("/")
                assert sorted(named) == sorted(args), f"{name}: shown under {args}, says {msg!r}"
                checked += 1
    assert checked >= 15


def test_load_model_lists_models_and_validates(N, env):
    cls = N["VideoMageLoadModel"]
    assert "zeroscope_v2_576w" in cls.INPUT_TYPES()["required"]["model_name"][0]
    assert cls.VALIDATE_INPUTS("zeroscope_v2_576w") is True
    msg = cls.VALIDATE_INPUTS("nope")
    assert msg.startswith("model_name:") and "models/diffusers" in msg
    if not torch.cuda.is_available():  # no GPU: the node says so for its device input, when it runs
        from videomage_core.errors import VideoMageInputError

        with pytest.raises(VideoMageInputError, match="^device: 'cuda' was asked for"):
            cls().load("zeroscope_v2_576w", "auto", "cuda")


def test_builtin_model_hook(N, env, tmp_path):
    from nodes import model_loader

    model_loader.register_builtin_model("builtin_tiny", env / "models" / "diffusers" / "zeroscope_v2_576w")
    try:
        assert "builtin_tiny" in N["VideoMageLoadModel"].INPUT_TYPES()["required"]["model_name"][0]
    finally:
        model_loader.BUILTIN_MODEL_FOLDERS.pop("builtin_tiny")


@pytest.fixture(scope="module")
def shapesworld(tmp_path_factory):
    """A stand-in for the built-in ShapesWorld model (the pretraining's smoke preset, seconds)."""
    from helpers import build_shapesworld_standin

    return build_shapesworld_standin(tmp_path_factory.mktemp("builtin") / "shapesworld")


def test_builtin_model_is_listed_and_is_the_default(N, env, shapesworld, monkeypatch, tmp_path):
    from nodes import model_loader
    from videomage_core import pretrained

    assert model_loader.BUILTIN_NAME == pretrained.BUILTIN_NAME == "shapesworld_builtin"
    cls = N["VideoMageLoadModel"]
    monkeypatch.setattr(pretrained, "SHAPESWORLD_DIR", shapesworld)
    names, opts = cls.INPUT_TYPES()["required"]["model_name"]
    assert {"shapesworld_builtin", "zeroscope_v2_576w"} <= set(names)
    assert opts["default"] == "shapesworld_builtin" and "shapesworld_builtin" in opts["tooltip"]
    assert "shapesworld_builtin" in cls.DESCRIPTION and "CPU" in cls.DESCRIPTION
    assert cls.VALIDATE_INPUTS("shapesworld_builtin") is True
    msg = cls.VALIDATE_INPUTS("nope")
    assert msg.startswith("model_name:") and "models/diffusers" in msg and "'shapesworld_builtin'" in msg
    loaded = cls().load("shapesworld_builtin", "auto", "cpu")[0]
    assert loaded.settings["width"] == loaded.settings["height"] == 32
    assert loaded.default("cfg", 9.0) == 3.0 and loaded.settings["superclass"] == "shape"

    monkeypatch.setattr(pretrained, "SHAPESWORLD_DIR", tmp_path / "absent")  # installed without it
    names, opts = cls.INPUT_TYPES()["required"]["model_name"]
    assert "shapesworld_builtin" not in names and "default" not in opts
    msg = cls.VALIDATE_INPUTS("shapesworld_builtin")
    assert msg.startswith("model_name:") and "built-in 'shapesworld_builtin' is missing" in msg


def test_train_subject_saves_then_reuses(N, model, env):
    out = _subject(N, model)
    art, curve, info = out["result"]
    assert art.kind == "subject" and list(art.tokens) == ["<toy>"]
    assert curve.shape[0] == 1 and curve.shape[-1] == 3 and 0 <= curve.min() and curve.max() <= 1
    assert "trained" in info and "subject_toy_00001_.safetensors" in info
    assert len(repr(art)) < 200
    saved = sorted((env / "output" / "loras" / "videomage").glob("*.safetensors"))
    assert [p.name for p in saved] == ["subject_toy_00001_.safetensors"]
    again = _subject(N, model)
    assert "not retrained" in again["result"][2] and again["ui"]["text"][0] == again["result"][2]
    assert len(list((env / "output" / "loras" / "videomage").glob("*.safetensors"))) == 1
    changed = _subject(N, model, steps=3)
    assert "trained in" in changed["result"][2]
    assert not list((env / "output" / "loras" / "videomage").glob(".*"))


def test_train_subject_validation(N, model):
    from videomage_core.errors import VideoMageInputError

    cls = N["VideoMageTrainSubject"]
    assert cls.VALIDATE_INPUTS(64, 64) is True
    assert cls.VALIDATE_INPUTS(60, 64).startswith("width/height:") and "multiples of 8" in cls.VALIDATE_INPUTS(60, 64)
    assert cls.VALIDATE_INPUTS(0, 64).startswith("width/height:")
    # text inputs are checked when the node starts, before any work, and name their own input
    with pytest.raises(VideoMageInputError, match="^token:"):
        _subject(N, model, token="toy")
    with pytest.raises(VideoMageInputError, match="^superclass:"):
        _subject(N, model, superclass=" ")
    imgs = N["VideoMageShapesWorldSubject"]().draw("star", "red", "stripes", 2, 64, 64, 0)[0]
    info = _subject(N, model, token="<two>", images=imgs, masks=None)["result"][2]
    assert "note: 2 image(s); the paper learns a subject from 3-5" in info  # the docs' 3-5, checked


def test_train_subject_errors_name_the_input(N, model):
    from videomage_core.errors import VideoMageInputError

    with pytest.raises(VideoMageInputError, match="^images:"):
        _subject(N, model, images=torch.zeros(0, 64, 64, 3))
    with pytest.raises(VideoMageInputError, match="^masks:"):
        _subject(N, model, masks=torch.ones(3, 32, 32))
    with pytest.raises(VideoMageInputError, match="^aux_caption:"):
        _subject(N, model, aux_video=torch.rand(2, 64, 64, 3))


def test_train_subject_image_captions(N, model):
    """One caption per line, per image; empty lines are not captions; the empty input keys a trained file
    exactly as before the input existed (files trained then still load)."""
    from dataclasses import asdict

    from nodes.train_subject import caption_lines, keyed_settings
    from videomage_core.errors import VideoMageInputError
    from videomage_core.subject import SubjectSettings

    assert caption_lines("") is None and caption_lines(" \n \n") is None
    assert caption_lines("a {token} by a cup\n\n  <cap> on grass \n") == ("a {token} by a cup", "<cap> on grass")
    plain = asdict(SubjectSettings())
    plain.pop("image_captions")
    assert keyed_settings(SubjectSettings()) == plain
    assert keyed_settings(SubjectSettings(image_captions=("a {token}",)))["image_captions"] == ("a {token}",)
    with pytest.raises(VideoMageInputError, match=r"^image_captions: expected one caption per image \(3\), got 2"):
        _subject(N, model, token="<cap>", image_captions="a {token}\na {token} by a cup")
    art = _subject(N, model, token="<cap>", image_captions="a {token}\na {token} by a cup\n<cap> on grass")
    assert art["result"][0].train_args["image_captions"] == ("a {token}", "a {token} by a cup", "<cap> on grass")


def test_runs_under_inference_mode(N, model):
    """ComfyUI runs nodes under torch.inference_mode(): training must still work."""
    with torch.inference_mode():
        out = _subject(N, model, token="<inf>", seed=5)
    assert out["result"][0].kind == "subject"


def test_motion_fuse_sample_and_artifact_io(N, model, env):
    motion, curve, info = _motion(N, model)["result"]
    assert motion.kind == "motion" and "motion_circle-square_00001_" in info
    assert "not retrained" in _motion(N, model)["result"][2]
    a = _subject(N, model, token="<toy>")["result"][0]
    b = _subject(N, model, token="<dog>", superclass="dog", colour="green")["result"][0]
    fuse = N["VideoMageFuseSubjects"]()
    out = _run(
        fuse,
        model=model,
        subject_1=a,
        subject_2=b,
        steps=2,
        lambda2=0.6,
        lr_lora=1e-3,
        seed=0,
        frames=2,
        generation_steps=1,
        videos_per_subject=1,
        cutmix_videos=1,
        **TINY,
    )
    fused, fcurve, preview, finfo = out["result"]
    assert (
        set(fused.tokens) == {"<toy>", "<dog>"} and preview.shape[1:] == (64, 64, 3) and preview.shape[0] == 2
    )
    again = _run(
        fuse,
        model=model,
        subject_1=a,
        subject_2=b,
        steps=2,
        lambda2=0.6,
        lr_lora=1e-3,
        seed=0,
        frames=2,
        generation_steps=1,
        videos_per_subject=1,
        cutmix_videos=1,
        **TINY,
    )
    assert "not retrained" in again["result"][3] and again["result"][2].shape == preview.shape

    sampler = N["VideoMageCollaborativeSampler"]()
    common = dict(
        model=model,
        subject=fused,
        prompt="a <toy> chases a <dog>",
        frames=3,
        steps=2,
        cfg=9.0,
        seed=0,
        tau=1,
        alpha=1e4,
        beta_s=0.5,
        beta_m=0.5,
        noise_prior_beta=0.3,
        **TINY,
    )
    frames, gcurve, sinfo = _run(sampler, mode="SCS", motion=motion, **common)["result"]
    assert frames.shape == (3, 64, 64, 3) and 0 <= frames.min() and frames.max() <= 1
    frames2 = _run(sampler, mode="w/o SCS", motion=motion, **common)["result"][0]
    assert frames2.shape == frames.shape
    from videomage_core.errors import VideoMageInputError

    with pytest.raises(VideoMageInputError, match="^motion:"):
        _run(sampler, mode="SCS", **common)
    with pytest.raises(VideoMageInputError, match="^prompt:"):
        _run(sampler, mode="SCS", motion=motion, **{**common, "prompt": "a <toy> alone"})
    with pytest.raises(VideoMageInputError, match="^prompt: 'a toy' has no subject token"):
        _run(sampler, mode="SCS", motion=motion, **{**common, "prompt": "a toy"})

    save = N["VideoMageSaveMotion"]()
    r1 = save.save(motion=motion, filename_prefix="mine/walk")
    r2 = save.save(motion=motion, filename_prefix="mine/walk")
    assert r1["ui"]["videomage_files"] != r2["ui"]["videomage_files"]
    assert (env / "output" / "loras" / "videomage" / "mine" / "walk_00002_.safetensors").is_file()
    assert N["VideoMageSaveMotion"].VALIDATE_INPUTS("../escape").startswith("filename_prefix:")

    load = N["VideoMageLoadMotion"]
    files = load.INPUT_TYPES()["required"]["motion_file"][0]
    assert "videomage/mine/walk_00001_.safetensors" in files
    assert all("subject" not in f for f in files)
    assert load.VALIDATE_INPUTS("videomage/mine/walk_00001_.safetensors") is True
    assert load.VALIDATE_INPUTS("../../etc/passwd").startswith("motion_file:")
    assert "does not exist" in load.VALIDATE_INPUTS(
        "videomage/none.safetensors"
    ) or "no file" in load.VALIDATE_INPUTS("videomage/none.safetensors")
    assert "holds a subject" in load.VALIDATE_INPUTS("videomage/subject_toy_00001_.safetensors")
    loaded = _run(load(), motion_file="videomage/mine/walk_00001_.safetensors", model=model)["result"][0]
    assert loaded.kind == "motion" and loaded.base_fingerprint == model.fingerprint


def test_artifact_from_another_model_is_refused(N, model, env, tmp_path):
    from videomage_core.errors import IncompatibleArtifactError
    from videomage_core.tiny import build_tiny_model

    other = N["VideoMageLoadModel"]().load.__self__  # noqa: F841 (same class; load another folder below)
    from videomage_core.model import load_model

    m2 = load_model(build_tiny_model(tmp_path / "other", seed=1))
    art = _subject(N, model, token="<cat>", superclass="cat")["result"][0]
    N["VideoMageSaveSubject"]().save(subject=art, filename_prefix="cat")
    with pytest.raises(IncompatibleArtifactError, match="^subject_file:"):
        _run(N["VideoMageLoadSubject"](), subject_file="videomage/cat_00001_.safetensors", model=m2)
    with pytest.raises(IncompatibleArtifactError, match="^subject:"):
        _run(
            N["VideoMageCollaborativeSampler"](),
            model=m2,
            subject=art,
            prompt="a <cat>",
            mode="w/o SCS",
            frames=2,
            steps=1,
            cfg=1.0,
            seed=0,
            tau=0,
            alpha=0.0,
            beta_s=0.5,
            beta_m=0.5,
            noise_prior_beta=0.0,
            **TINY,
        )


def test_cancel_stops_and_leaves_no_artifact(N, model, env, monkeypatch):
    from nodes import comfy_bridge
    from videomage_core.errors import TrainingCancelled

    calls = {"n": 0}

    def interrupted():
        calls["n"] += 1
        return calls["n"] > 2

    monkeypatch.setattr(comfy_bridge, "interrupted", interrupted)
    before = set((env / "output" / "loras" / "videomage").rglob("*"))
    with pytest.raises(TrainingCancelled):
        _subject(N, model, token="<stop>", superclass="toy", steps=6)
    assert set((env / "output" / "loras" / "videomage").rglob("*")) == before
    ckpts = list((env / "output" / "videomage_cache" / "checkpoints").glob("subject_*"))
    assert ckpts, "a cancelled run leaves a resumable checkpoint in the cache folder"
    monkeypatch.setattr(comfy_bridge, "interrupted", lambda: False)
    out = _subject(N, model, token="<stop>", superclass="toy", steps=6)
    assert "resumed" in out["result"][2]
    assert not list((env / "output" / "videomage_cache" / "checkpoints").glob("subject_*"))


def test_example_data_nodes(N):
    imgs, masks, desc = N["VideoMageShapesWorldSubject"]().draw("circle", "blue", "plain", 2, 64, 48, 1)
    assert imgs.shape == (2, 48, 64, 3) and masks.shape == (2, 48, 64) and masks.max() == 1
    video, vmasks, caption = N["VideoMageShapesWorldMotion"]().draw(
        "orbit", "star", "red", "ring", "green", 5, 64, 64, 1
    )
    assert video.shape == (5, 64, 64, 3) and vmasks.shape == (2, 64, 64) and "orbits" in caption


def test_loss_curve_renderer():
    from videomage_core.plots import render_loss_curve

    img = render_loss_curve(
        [1.0, 0.5, float("nan"), 0.25], "t", parts=[{"a": 1.0}] * 4, notes=["n"], width=300, height=200
    )
    assert img.shape == (1, 200, 300, 3) and img.dtype == torch.float32
    assert render_loss_curve([]).shape == (1, 320, 512, 3)


def run_api_graph(api: dict) -> dict:
    """Executes an API-format workflow with the pack's nodes (core output nodes skipped): id -> outputs."""
    import nodes

    results = {}

    def run(nid):
        if nid not in results:
            node = api[nid]
            cls = nodes.NODE_CLASS_MAPPINGS.get(node["class_type"])
            if cls is None:  # PreviewImage, SaveAnimatedWEBP
                results[nid] = None
                return None
            kw = {k: run(v[0])[v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()}
            out = getattr(cls(), cls.FUNCTION)(**kw)
            results[nid] = out["result"] if isinstance(out, dict) else out
        return results[nid]

    for nid in api:
        run(nid)
    return results


def test_quick_start_workflow_runs_on_the_builtin_model(N, env, shapesworld, monkeypatch, tmp_path):
    """The quick-start workflow as shipped (sizes, frames, prompts), step counts made small, on the
    stand-in built-in model; its own output folder (the store tests above count files)."""
    import json

    sys.path.insert(0, str(REPO / "scripts"))
    from workflow_tools import step_overrides

    from videomage_core import pretrained

    monkeypatch.setattr(pretrained, "SHAPESWORLD_DIR", shapesworld)
    monkeypatch.setenv("VIDEOMAGE_OUTPUT_DIR", str(tmp_path / "output"))
    api = step_overrides(
        json.loads((REPO / "workflows" / "api" / "videomage_quick_start_shapesworld.json").read_text())
    )
    results = run_api_graph(api)
    sampler = next(k for k, v in api.items() if v["class_type"] == "VideoMageCollaborativeSampler")
    frames, _, info = results[sampler]
    assert tuple(frames.shape) == (8, 32, 32, 3) and "SCS" in info
    store = tmp_path / "output" / "loras" / "videomage"
    names = {p.relative_to(store).as_posix() for p in store.rglob("*.safetensors")}
    # kept apart from ZeroScope's files, which the sample workflows name (videomage/fused_..._00001_)
    assert "shapesworld_builtin/fused_red_star+green_ring_00001_.safetensors" in names, names
    assert not [n for n in names if "/" not in n], names


def test_train_motion_offers_the_engines_coverages_and_trains_the_chosen_one(N, model, env):
    from videomage_core.bases import COVERAGES

    spec = N["VideoMageTrainMotion"].INPUT_TYPES()["optional"]["coverage"]
    assert tuple(spec[0]) == COVERAGES and spec[1]["default"] == "attention"
    motion = _motion(N, model, coverage="all_linear")["result"][0]
    assert motion.coverage == "all_linear" and any(k.endswith("ff.net.2.lora_A.weight") for k in motion.lora)
    default = _motion(N, model)["result"][0]
    assert default.coverage == "attention" and not any(".ff." in k for k in default.lora)
