"""A pack installed without its requirements says so when ComfyUI loads it and again when a node runs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# a Python whose diffusers and peft cannot be found (as in a ComfyUI venv without our requirements)
SCRIPT = r"""
import importlib.abc, importlib.util, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("diffusers", "peft"):
            raise ModuleNotFoundError(name)
        return None
sys.meta_path.insert(0, Hide())
_find = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in ("diffusers", "peft") else _find(name, *a)
spec = importlib.util.spec_from_file_location("pack", sys.argv[1] + "/__init__.py",
                                              submodule_search_locations=[sys.argv[1]])
pack = importlib.util.module_from_spec(spec)
sys.modules["pack"] = pack
spec.loader.exec_module(pack)
print("registered", len(pack.NODE_CLASS_MAPPINGS))
from pack.nodes.common import run_engine
try:
    run_engine(lambda live, cancel: None, "x", {"x": 1})
except Exception as exc:
    print("node error:", type(exc).__name__, exc)
"""


def test_missing_requirements_are_named_at_startup_and_in_the_node_error():
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "[VideoMage] VideoMage needs diffusers, peft, which are not installed" in out.stderr
    assert "-m pip install -r" in out.stderr and "requirements.txt" in out.stderr
    assert "registered" in out.stdout  # the nodes still appear, so the graph loads and the error is seen
    assert "node error: MissingDependencyError requirements: VideoMage needs diffusers, peft" in out.stdout


def test_nothing_is_said_when_everything_is_installed():
    from videomage_core.dependencies import missing_requirements, require_dependencies

    assert missing_requirements() == []
    require_dependencies()  # no error
