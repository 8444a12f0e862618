"""The bundled workflows in the real ComfyUI frontend (headless Chromium driven by playwright-core).

Each UI workflow is loaded by a simulated file drop and through the template route; no node type may
be missing, and ``app.graphToPrompt()`` must equal the file's API twin. Skipped without ComfyUI (see
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
    (w / "extra_paths.yaml").write_text(
        f"videomage_test:\n  base_path: {w}\n  custom_nodes: custom_nodes\n  diffusers: models/diffusers\n"
    )
    s = Server(COMFY_ROOT, w).start()
    # a fresh user folder shows a "Get Started" dialog over the canvas
    s.client().request("/api/settings/Comfy.TutorialCompleted", True, method="POST")
    yield s
    s.stop()


def test_workflows_load_in_the_frontend(server, tmp_path):
    out = tmp_path / "result.json"
    shot = tmp_path / "full_pipeline.png"
    env = {**os.environ, "PLAYWRIGHT_CORE": PW, "CHROMIUM": CHROMIUM}
    proc = subprocess.run(
        [
            "node",
            str(REPO / "tests" / "browser" / "check_workflows.js"),
            f"http://127.0.0.1:{server.port}",
            str(REPO / "workflows"),
            str(out),
            str(shot),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    stems = sorted(p.stem for p in (REPO / "workflows").glob("*.json"))
    for stem in stems:
        api = json.loads((REPO / "workflows" / "api" / f"{stem}.json").read_text())
        ui = json.loads((REPO / "workflows" / f"{stem}.json").read_text())
        for route in ("drop", "template"):
            got = result[route][stem]
            assert got.get("count") == len(ui["nodes"]), (route, stem, got.get("status"))
            assert got["missing"] == [], (route, stem)
            assert got["output"] == api, (
                f"{route} {stem}: graphToPrompt() differs from workflows/api/{stem}.json"
            )
    assert not result["missingDialog"]
    assert shot.is_file() and shot.stat().st_size > 10000
    if os.environ.get("VIDEOMAGE_UPDATE_SCREENSHOT"):
        shutil.copy(shot, REPO / "docs" / "comfyui_full_pipeline.png")
