"""Every bundled workflow, without ComfyUI: node types exist, widget values match the nodes' inputs in
count, order and range (a seed with a control widget is followed by its control value), links join
matching types, the UI file and its API twin agree, thumbnails exist, and the files are up to date."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from workflow_tools import (  # noqa: E402
    CORE_NODES,
    link_inputs,
    node_spec,
    step_overrides,
    tiny_overrides,
    ui_to_api,
    widget_layout,
)

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize", "image")
# Combos whose choices depend on the user's folders (models, saved files): any string is fine here.
ENV_COMBOS = {"model_name", "subject_file", "motion_file", "image", "file", "ckpt_name", "motion_module", "lora_name",
              "unet_name", "clip_name", "vae_name"}


def test_there_are_workflows_with_thumbnails_and_api_twins():
    stems = {p.stem for p in WORKFLOWS}
    assert {
        "videomage_full_pipeline",
        "videomage_train_subject",
        "videomage_train_motion",
        "videomage_sample_saved",
        "videomage_scs_vs_wo_scs",
        "videomage_quick_start_shapesworld",
    } <= stems
    for p in WORKFLOWS:
        assert p.with_suffix(".jpg").is_file(), f"{p.name} has no thumbnail"
        assert (REPO / "workflows" / "api" / p.name).is_file(), f"{p.name} has no API twin"
    assert {p.stem for p in (REPO / "workflows" / "api").glob("*.json")} == stems


def test_files_are_up_to_date():
    import build_workflows

    assert build_workflows.main(["--check"]) == 0, "run python scripts/build_workflows.py"


def check_value(where, name, entry, value):
    kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
    if isinstance(kind, list):
        if name in ENV_COMBOS:
            assert isinstance(value, str) and value, where
        else:
            assert value in kind, f"{where}: {value!r} not in {kind}"
    elif kind == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), where
        assert opts.get("min", value) <= value <= opts.get("max", value), f"{where}: {value} out of range"
    elif kind == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
        assert opts.get("min", value) <= value <= opts.get("max", value), f"{where}: {value} out of range"
    elif kind == "STRING":
        assert isinstance(value, str), where
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), where


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_ui_workflow(path):
    ui = json.loads(path.read_text())
    assert ui.get("version") == 0.4 and {"nodes", "links", "last_node_id", "last_link_id"} <= set(ui)
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert len(nodes) == len(ui["nodes"]) and max(nodes) <= ui["last_node_id"]
    for node in ui["nodes"]:
        where = f"{path.stem} node {node['id']} {node['type']}"
        spec = node_spec(node["type"])
        assert spec is not None, f"{where}: unknown node type"
        layout = widget_layout(spec)
        values = node.get("widgets_values", [])
        assert len(values) == len(layout), f"{where}: {len(values)} widget values for {len(layout)} widgets"
        for (name, entry, control), value in zip(layout, values):
            if control:
                assert value in CONTROL_VALUES, f"{where}: control value of {name} is {value!r}"
            else:
                check_value(f"{where}.{name}", name, entry, value)
        slots = link_inputs(spec)
        assert [i["name"] for i in node["inputs"]] == [n for n, _, _ in slots], where
        for inp, (name, typ, required) in zip(node["inputs"], slots):
            assert inp["type"] == typ, where
            if required:
                assert inp["link"] is not None, f"{where}: required input {name} is not connected"
        assert [o["type"] for o in node["outputs"]] == list(spec["output"]), where
    link_ids = set()
    for lid, src, sslot, dst, dslot, ltype in ui["links"]:
        link_ids.add(lid)
        s, d = nodes[src], nodes[dst]
        assert s["outputs"][sslot]["type"] == ltype and lid in (s["outputs"][sslot]["links"] or [])
        assert d["inputs"][dslot]["type"] == ltype and d["inputs"][dslot]["link"] == lid
    assert max(link_ids, default=0) <= ui["last_link_id"]
    for node in ui["nodes"]:
        for inp in node["inputs"]:
            assert inp["link"] is None or inp["link"] in link_ids


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_api_twin_matches_and_validates(path):
    ui = json.loads(path.read_text())
    api = json.loads((REPO / "workflows" / "api" / path.name).read_text())
    assert api == ui_to_api(ui)
    from workflow_tools import pack_nodes

    classes, _ = pack_nodes()
    for variant in (api, tiny_overrides(api), step_overrides(api)):
        for nid, node in variant.items():
            cls = classes.get(node["class_type"])
            if cls is None:
                assert node["class_type"] in CORE_NODES
                continue
            validate = getattr(cls, "VALIDATE_INPUTS", None)
            if validate is None:
                continue
            import inspect

            names = inspect.getfullargspec(validate).args[1:]
            if set(names) & {"model_name", "subject_file", "motion_file"}:
                continue  # depends on the user's folders (checked by the server test)
            args = {k: node["inputs"].get(k) for k in names}
            assert validate(**args) is True, f"{path.stem} node {nid}: {validate(**args)}"


QUICK_START = "videomage_quick_start_shapesworld"
# What the built-in model was trained for (videomage_core/models/shapesworld/videomage.json), for a
# checkout without the model files; the file itself is checked when present.
BUILTIN_SETTINGS = {"frames": 8, "height": 32, "width": 32, "cfg": 3.0, "superclass": "shape"}


def builtin_settings() -> dict:
    from videomage_core.pretrained import SHAPESWORLD_DIR

    path = SHAPESWORLD_DIR / "videomage.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        assert {k: saved[k] for k in BUILTIN_SETTINGS} == BUILTIN_SETTINGS, "update BUILTIN_SETTINGS"
        return saved
    return dict(BUILTIN_SETTINGS)


def test_only_the_quick_start_uses_the_builtin_model():
    for path in WORKFLOWS:
        api = json.loads((REPO / "workflows" / "api" / path.name).read_text())
        models = {n["inputs"]["model_name"] for n in api.values() if n["class_type"] == "VideoMageLoadModel"}
        if "animatediff" in path.stem:  # AnimateDiff from the user's checkpoint + motion module instead
            assert not models and any(n["class_type"] == "VideoMageLoadAnimateDiff" for n in api.values())
            continue
        if "wan" in path.stem:  # Wan from the user's three Wan files
            assert not models and any(n["class_type"] == "VideoMageLoadWan" for n in api.values())
            continue
        if path.stem == "videomage_sd15_with_exported_subject":  # core nodes only: what others load
            assert all(n["class_type"] in CORE_NODES for n in api.values())
            continue
        want = "shapesworld_builtin" if path.stem == QUICK_START else "zeroscope_v2_576w"
        assert models == {want}, f"{path.stem}: {models}"


def test_quick_start_fits_the_builtin_model():
    """Sizes, frames and CFG are the model's; the sampler's tokens are the trained ones; every other
    word of the prompts is in the model's caption vocabulary; step counts are small but real."""
    import re

    from videomage_core.shapesworld.generator import VOCABULARY

    want = builtin_settings()
    api = json.loads((REPO / "workflows" / "api" / f"{QUICK_START}.json").read_text())
    by_type: dict[str, list[dict]] = {}
    for node in api.values():
        by_type.setdefault(node["class_type"], []).append(node["inputs"])
    for ctype, nodes in by_type.items():
        for inputs in nodes:
            if "width" in inputs:
                assert (inputs["width"], inputs["height"]) == (want["width"], want["height"]), ctype
    frames = [
        by_type["VideoMageShapesWorldMotion"][0]["frames"],
        by_type["VideoMageFuseSubjects"][0]["frames"],
    ]
    frames += [i["prior_frames"] for i in by_type["VideoMageTrainSubject"]]
    (sampler,) = by_type["VideoMageCollaborativeSampler"]
    assert set(frames) == {want["frames"]} and sampler["frames"] == want["frames"]
    assert (sampler["cfg"], sampler["steps"], sampler["tau"]) == (want["cfg"], 20, 6)
    assert sampler["alpha"] == want.get("scs_alpha", 10.0)  # the paper's 1e4 saturates the small model

    trained = {i["token"] for i in by_type["VideoMageTrainSubject"]}
    assert set(re.findall(r"<[^>]+>", sampler["prompt"])) == trained and len(trained) == 2
    assert {i["superclass"] for i in by_type["VideoMageTrainSubject"]} == {want["superclass"]}
    vocabulary = set(want.get("vocabulary") or VOCABULARY)
    (motion,) = by_type["VideoMageTrainMotion"]
    words = [w.strip() for w in motion["reference_words"].split(",")]
    assert all(w in motion["motion_prompt"].split() for w in words)
    for text in (motion["motion_prompt"], re.sub(r"<[^>]+>", "", sampler["prompt"])):
        assert set(text.split()) <= vocabulary, text

    steps = [i["steps"] for i in by_type["VideoMageTrainSubject"]] + [motion["steps"]]
    steps += [by_type["VideoMageFuseSubjects"][0]["steps"]]
    assert all(20 <= n <= 100 for n in steps), steps  # trains for real, in minutes on a CPU
