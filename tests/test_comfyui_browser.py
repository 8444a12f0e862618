"""The bundled workflows in the real ComfyUI frontend (headless Chromium driven by playwright-core).

Each UI workflow is loaded by a simulated file drop and through the template route; no node type may
be missing, and ``app.graphToPrompt()`` must give the file's API twin (same nodes, links and widget
values). The subject training is then queued from the page on a tiny model and screenshotted while its
node shows the live loss curve. Skipped without ComfyUI (see
test_comfyui_server.py), Chromium (``CHROMIUM``, default /usr/bin/chromium), node, or playwright-core
(``PLAYWRIGHT_CORE``, default /opt/pw/node_modules/playwright-core; install it outside the repo with
``npm install --prefix /opt/pw playwright-core``). ``VIDEOMAGE_UPDATE_SCREENSHOT=1`` rewrites
docs/comfyui_full_pipeline.png.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_comfyui_server import COMFY_ROOT, LOOKED, REPO, Server  # noqa: F401  (the same fixtures' recipe)
from workflow_tools import tiny_overrides

PW = os.environ.get("PLAYWRIGHT_CORE", "/opt/pw/node_modules/playwright-core")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
missing = [
    what
    for what, ok in (
        ("ComfyUI (" + "; ".join(LOOKED) + ")", COMFY_ROOT is not None),
        (f"Chromium at {CHROMIUM}", Path(CHROMIUM).exists()),
        ("node", shutil.which("node") is not None),
        (f"playwright-core at {PW}", Path(PW).is_dir()),
    )
    if not ok
]
pytestmark = pytest.mark.skipif(bool(missing), reason="browser test needs: " + ", ".join(missing))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    w = tmp_path_factory.mktemp("comfyui_browser")
    for d in ("output", "input", "user", "temp", "custom_nodes", "models/diffusers"):
        (w / d).mkdir(parents=True, exist_ok=True)
    os.symlink(REPO, w / "custom_nodes" / "videomage")
    from videomage_core.tiny import build_tiny_model

    build_tiny_model(w / "models" / "diffusers" / "zeroscope_v2_576w", seed=0)  # for the training run
    from helpers import write_user_inputs
    from test_comfyui_server import comfy_python

    write_user_inputs(w / "input", comfy_python(COMFY_ROOT))  # the photos the training run loads
    (w / "extra_paths.yaml").write_text(
        f"videomage_test:\n  base_path: {w}\n  custom_nodes: custom_nodes\n  diffusers: models/diffusers\n"
    )
    s = Server(COMFY_ROOT, w).start()
    # a fresh user folder shows a "Get Started" dialog over the canvas
    s.client().request("/api/settings/Comfy.TutorialCompleted", True, method="POST")
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def against(server):
    """Every test says which ComfyUI it ran against (``pytest -rA`` shows it; a failure report too)."""
    print(f"against {server.version} at {server.root}")
    return server.version


def prompt_differences(got: dict, want: dict, titles: dict) -> list[str]:
    """What the server would execute differently: the node ids, each node's class, every input (a link
    ``[node id, slot]`` or a widget value, compared as values: the frontend writes the float 8.0 as 8),
    and no input more or less. ``_meta.title`` must be ``titles[node id]``: the UI node's own title if it
    has one, else the node's display name on this server (ComfyUI 0.33 names SaveAnimatedWEBP "Save
    Animated WEBP"; the API twin carries the name in the ComfyUI it was built against)."""
    out = []
    if sorted(got) != sorted(want):
        return [f"node ids {sorted(got)} != {sorted(want)}"]
    for nid, node in want.items():
        g = got[nid]
        if g.get("class_type") != node["class_type"]:
            out.append(f"{nid}: class_type {g.get('class_type')!r} != {node['class_type']!r}")
            continue
        gi, wi = g.get("inputs", {}), node["inputs"]
        for name in sorted(set(gi) | set(wi)):
            a, b = gi.get(name, "<absent>"), wi.get(name, "<absent>")
            same = type(a) is type(b) or {type(a), type(b)} == {int, float}
            if not same or a != b:
                out.append(f"{nid} {node['class_type']}.{name}: {a!r} != {b!r}")
        title = g.get("_meta", {}).get("title")
        if title != titles[nid]:
            out.append(f"{nid}: title {title!r} != {titles[nid]!r}")
    return out


TRAIN_STEM, TRAIN_STEPS, LIVE_AT = "videomage_train_subject", 30, 8


@pytest.fixture(scope="module")
def page_run(server, tmp_path_factory):
    """One Chromium session: every workflow dropped and opened as a template, then the subject
    training queued from the page on the tiny model (30 steps) and screenshotted while it trains."""
    d = tmp_path_factory.mktemp("browser_run")
    raw = json.loads((REPO / "workflows" / "api" / f"{TRAIN_STEM}.json").read_text())
    prompt = tiny_overrides(raw)
    trainer = next(k for k, v in prompt.items() if v["class_type"] == "VideoMageTrainSubject")
    prompt[trainer]["inputs"]["steps"] = TRAIN_STEPS
    train = {
        "stem": TRAIN_STEM,
        "prompt": prompt,
        "node": trainer,
        "minStep": LIVE_AT,
        "shot": str(d / "training_live.png"),
        "finalShot": str(d / "training_done.png"),
    }
    (d / "train.json").write_text(json.dumps(train))
    out, shot = d / "result.json", d / "full_pipeline.png"
    env = {**os.environ, "PLAYWRIGHT_CORE": PW, "CHROMIUM": CHROMIUM}
    script = str(REPO / "tests" / "browser" / "check_workflows.js")
    url = f"http://127.0.0.1:{server.port}"
    args = [url, str(REPO / "workflows"), str(out), str(shot), str(d / "train.json")]
    proc = subprocess.run(["node", script, *args], env=env, capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stderr[-3000:]
    display = {k: v.get("display_name") for k, v in server.client().request("/object_info").items()}
    return {"result": json.loads(out.read_text()), "shot": shot, "train": train, "display": display}


def test_workflows_load_in_the_frontend(page_run):
    result, display, shot = page_run["result"], page_run["display"], page_run["shot"]
    stems = sorted(p.stem for p in (REPO / "workflows").glob("*.json"))
    for stem in stems:
        api = json.loads((REPO / "workflows" / "api" / f"{stem}.json").read_text())
        ui = json.loads((REPO / "workflows" / f"{stem}.json").read_text())
        titles = {str(n["id"]): n.get("title") or display[n["type"]] for n in ui["nodes"]}
        for route in ("drop", "template"):
            got = result[route][stem]
            assert got.get("count") == len(ui["nodes"]), (route, stem, got.get("status"))
            assert got["missing"] == [], (route, stem)
            diff = prompt_differences(got["output"], api, titles)
            assert not diff, f"{route} {stem}: graphToPrompt() differs from workflows/api/{stem}.json: {diff}"
    assert not result["missingDialog"]
    assert shot.is_file() and shot.stat().st_size > 10000
    print(f"screenshot: {shot}")
    if os.environ.get("VIDEOMAGE_UPDATE_SCREENSHOT"):
        shutil.copy(shot, REPO / "docs" / "comfyui_full_pipeline.png")


def test_training_node_shows_its_live_loss_curve(page_run):
    """Queued from the page, the training node reports progress and sends its live loss-curve previews
    to the page while it runs, and its final curve when done (ComfyUI 0.33 sends the previews with the
    node id, 0.3.64 without; the frontend draws both on the running node: see the screenshots)."""
    train, got = page_run["train"], page_run["result"]["train"]
    ui = json.loads((REPO / "workflows" / f"{TRAIN_STEM}.json").read_text())
    titles = {str(n["id"]): n.get("title") or page_run["display"][n["type"]] for n in ui["nodes"]}
    # the widgets set from the tiny prompt are what the page queues
    assert prompt_differences(got["output"], train["prompt"], titles) == []
    assert got["done"] and got["done"]["type"] == "execution_success", got["done"]
    assert got["ran"], "the training node reported no progress"
    # LiveLoss renders a preview at the first step (nothing rendered yet) and at the last: >= 2 per run
    assert got["previewsWhileRunning"] >= 2, got
    assert got["liveShot"] and Path(train["shot"]).stat().st_size > 10000, "no screenshot while it trained"
    images = (got["executed"] or {}).get("images") or []
    assert [i["type"] for i in images] == ["temp"], got["executed"]  # the final loss curve on the node
    print(f"live previews: {got['previewsWhileRunning']}; screenshots: {train['shot']}, {train['finalShot']}")
