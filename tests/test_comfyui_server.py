"""The pack inside a real ComfyUI server (headless, CPU, a tiny model named zeroscope_v2_576w, and the
built-in ShapesWorld model, or a stand-in for it in models/diffusers when the package has none).

Skipped unless a ComfyUI checkout is found: ``COMFYUI_DIR``, the ComfyUI whose ``custom_nodes/``
holds this pack, or ``~/ComfyUI``. Its Python is ``COMFYUI_PYTHON``, else ``<ComfyUI>/.venv`` or
``<ComfyUI>/venv``, else this interpreter. Nothing here installs ComfyUI.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from queue_workflow import ComfyClient, output_files  # noqa: E402
from workflow_tools import CORE_NODES, node_spec, step_overrides, tiny_overrides, widget_layout  # noqa: E402

PACK_DIR_NAME = "videomage"


def find_comfyui() -> tuple[Path | None, list[str]]:
    looked = []
    candidates = []
    if os.environ.get("COMFYUI_DIR"):
        candidates.append(("COMFYUI_DIR", Path(os.environ["COMFYUI_DIR"])))
    if REPO.parent.name == "custom_nodes":
        candidates.append(("the ComfyUI holding this pack", REPO.parent.parent))
    candidates.append(("~/ComfyUI", Path.home() / "ComfyUI"))
    for why, path in candidates:
        looked.append(f"{why} ({path})")
        if (path / "main.py").is_file() and (path / "comfy").is_dir():
            return path, looked
    return None, looked


def comfy_python(root: Path) -> str:
    if os.environ.get("COMFYUI_PYTHON"):
        return os.environ["COMFYUI_PYTHON"]
    for venv in (".venv", "venv"):
        exe = root / venv / "bin" / "python"
        if exe.is_file():
            return str(exe)
    return sys.executable


COMFY_ROOT, LOOKED = find_comfyui()
pytestmark = pytest.mark.skipif(
    COMFY_ROOT is None,
    reason="no ComfyUI checkout found; looked at: "
    + "; ".join(LOOKED)
    + ". Set COMFYUI_DIR to run the real-server tests.",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root: Path, work: Path):
        self.root, self.work = root, work
        self.proc = None
        self.port = None
        self.log_path = work / "server.log"
        self.version = f"ComfyUI at {root} (not started)"

    def start(self, timeout: float = 120.0):
        self.port = free_port()
        w = self.work
        cmd = [
            comfy_python(self.root),
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-auto-launch",
            "--disable-api-nodes",
            "--base-directory",  # models/ (checkpoints, loras, exports) here, not in the ComfyUI checkout
            str(w),
            "--output-directory",
            str(w / "output"),
            "--input-directory",
            str(w / "input"),
            "--user-directory",
            str(w / "user"),
            "--temp-directory",
            str(w / "temp"),
            "--database-url",
            "sqlite:///:memory:",
            "--extra-model-paths-config",
            str(w / "extra_paths.yaml"),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, cwd=self.root, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                url = f"http://127.0.0.1:{self.port}/system_stats"
                stats = json.loads(urllib.request.urlopen(url, timeout=2).read())
                version = stats["system"].get("comfyui_version", "?")
                self.version = f"ComfyUI {version} (frontend {self.frontend()})"
                return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer within {timeout} s:\n{self.tail()}")

    def frontend(self) -> str:
        """The installed frontend package's version (what the browser test drives)."""
        code = "import importlib.metadata as m; print(m.version('comfyui-frontend-package'))"
        try:
            cmd = [comfy_python(self.root), "-c", code]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            return done.stdout.strip() or "?"
        except (OSError, subprocess.SubprocessError):
            return "?"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "log", None):
            self.log.close()

    def tail(self, n=4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def client(self) -> ComfyClient:
        return ComfyClient(f"127.0.0.1:{self.port}")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from videomage_core.tiny import build_tiny_model

    w = tmp_path_factory.mktemp("comfyui_server")
    for d in ("output", "input", "user", "temp", "custom_nodes", "models/diffusers"):
        (w / d).mkdir(parents=True, exist_ok=True)
    os.symlink(REPO, w / "custom_nodes" / PACK_DIR_NAME)
    build_tiny_model(w / "models" / "diffusers" / "zeroscope_v2_576w", seed=0)
    from helpers import write_user_inputs

    write_user_inputs(w / "input", comfy_python(COMFY_ROOT))  # the real-model workflows' photos and clip
    from build_workflows import AD_CHECKPOINT, AD_MOTION_MODULE

    from helpers import build_sd15_width_single_files

    # a user's SD1.5 checkpoint + motion module: random, but of widths ComfyUI recognises as SD1.5, so that
    # its own nodes run on what the pack exports (videomage_sd15_with_exported_subject)
    files = build_sd15_width_single_files(tmp_path_factory.mktemp("ad_files"))
    for kind, name, src in (("checkpoints", AD_CHECKPOINT, "checkpoint"),
                            ("animatediff_models", AD_MOTION_MODULE, "motion_module_ckpt")):
        (w / "models" / kind).mkdir(parents=True, exist_ok=True)
        shutil.copy(files[src], w / "models" / kind / name)
    from build_workflows import WAN_FILES

    from videomage_core.bases.wan_files import build_tiny_single_files

    wan = build_tiny_single_files(tmp_path_factory.mktemp("wan_files"))  # a user's three Wan files, tiny
    for kind, name, src in (("diffusion_models", WAN_FILES["unet_name"], "diffusion_model"),
                            ("text_encoders", WAN_FILES["clip_name"], "text_encoder"),
                            ("vae", WAN_FILES["vae_name"], "vae")):
        (w / "models" / kind).mkdir(parents=True, exist_ok=True)
        shutil.copy(wan[src], w / "models" / kind / name)
    from videomage_core.pretrained import BUILTIN_NAME, builtin_model_folders

    if BUILTIN_NAME not in builtin_model_folders():  # a user folder of that name stands in for it
        from helpers import build_shapesworld_standin

        build_shapesworld_standin(w / "models" / "diffusers" / BUILTIN_NAME)
    (w / "extra_paths.yaml").write_text(
        f"videomage_test:\n  base_path: {w}\n  custom_nodes: custom_nodes\n  diffusers: models/diffusers\n"
    )
    return w


@pytest.fixture(scope="module")
def server(work):
    s = Server(COMFY_ROOT, work).start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def against(server):
    """Every test says which ComfyUI it ran against (``pytest -rA`` shows it; a failure report too)."""
    print(f"against {server.version} at {server.root}")
    return server.version


QUICK_START = "videomage_quick_start_shapesworld"


def api(stem: str) -> dict:
    """The API file with tiny sizes and step counts; the quick start keeps its sizes (the built-in
    model's) and gets small step counts only."""
    raw = json.loads((REPO / "workflows" / "api" / f"{stem}.json").read_text())
    return step_overrides(raw) if stem == QUICK_START else tiny_overrides(raw)


def ui(stem: str) -> dict:
    return json.loads((REPO / "workflows" / f"{stem}.json").read_text())


def run(client: ComfyClient, prompt: dict, workflow=None, timeout=300.0, on_event=None):
    ws = client.connect()
    try:
        status, body = client.queue(prompt, workflow)
        if status != 200:
            return {"status": "refused", "http": status, "body": body}
        result = client.follow(ws, body["prompt_id"], timeout, on_event)
        result["prompt_id"] = body["prompt_id"]
        return result
    finally:
        ws.close()


def artifact_files(work: Path) -> set[str]:
    folder = work / "output" / "loras" / "videomage"
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")} if folder.is_dir() else set()


def test_pack_loads_and_object_info_matches(server):
    log = server.tail(100000)
    assert "IMPORT FAILED" not in log and "Cannot import" not in log, log[-3000:]
    info = server.client().request("/object_info")
    import nodes as pack

    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert name in info, f"{name} missing from /object_info"
        spec = node_spec(name)
        assert info[name]["category"].startswith("VideoMage")
        assert list(info[name]["output"]) == list(cls.RETURN_TYPES)
        order = info[name]["input_order"]
        assert order.get("required", []) == list(spec["input"]["required"])
        assert order.get("optional", []) == list(spec["input"].get("optional", {}))
    names, opts = info["VideoMageLoadModel"]["input"]["required"]["model_name"]
    assert {"zeroscope_v2_576w", "shapesworld_builtin"} <= set(names)
    assert opts.get("default") == "shapesworld_builtin", opts
    for core in CORE_NODES:  # the specs the offline workflow checks use
        ours = [n for n, _, control in widget_layout(node_spec(core)) if not control]
        theirs = [
            n
            for g in ("required", "optional")
            for n in info[core]["input_order"].get(g, [])
            if not isinstance(info[core]["input"][g][n][0], str)
            or info[core]["input"][g][n][0] in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
        ]
        assert ours == theirs, core


def test_templates_are_listed(server):
    templates = server.client().request("/api/workflow_templates")
    listed = set(templates.get(PACK_DIR_NAME, []))
    assert {p.stem for p in (REPO / "workflows").glob("*.json")} <= listed, templates
    raw = server.client().request(f"/api/workflow_templates/{PACK_DIR_NAME}/videomage_full_pipeline.json")
    assert raw["nodes"], "the template browser serves the UI-format file"


ORDER = [
    "videomage_full_pipeline",
    "videomage_animatediff_full_pipeline",
    "videomage_sd15_with_exported_subject",  # after the pipeline whose exports it loads
    "videomage_wan_full_pipeline",
    "videomage_train_subject",
    "videomage_train_motion",
    "videomage_sample_saved",
    "videomage_scs_vs_wo_scs",
    QUICK_START,
]


def test_every_workflow_runs(server, work):
    assert set(ORDER) == {p.stem for p in (REPO / "workflows" / "api").glob("*.json")}
    client = server.client()
    timings = {}
    for stem in ORDER:
        events = []
        t0 = time.monotonic()
        result = run(client, api(stem), ui(stem), on_event=events.append)
        timings[stem] = round(time.monotonic() - t0, 1)
        assert result["status"] == "success", (
            f"{stem}: {result.get('error') or result.get('body')}\n{server.tail()}"
        )
        entry = client.history(result["prompt_id"])
        assert entry["status"]["status_str"] == "success"
        files = output_files(entry, types=("output", "temp"))  # videos, and the loss-curve previews
        assert files, f"{stem} wrote no output"
        for item in files:
            data = client.download(item, str(work / "downloads" / stem))
            head = Path(data).read_bytes()[:16]
            assert head[:4] in (b"RIFF", b"\x89PNG"), (stem, item)
        if "train" in stem or "full" in stem or "quick" in stem:
            texts = [t for out in entry["outputs"].values() for t in out.get("text", [])]
            assert any("trained" in t for t in texts), texts
            if stem in ("videomage_full_pipeline", QUICK_START):  # these train for real
                assert any(e["type"] == "progress" for e in events), f"{stem}: no progress events"
    print("workflow seconds:", timings)
    # ComfyUI's own nodes used the exported subject: Load LoRA loaded every key, CLIP Text Encode found both
    # embeddings (it logs a warning for a missing or mis-sized one)
    log = server.tail(10**8)
    assert "lora key not loaded" not in log and "NOT LOADED" not in log, log[-3000:]
    for problem in ("does not exist, ignoring", "shape mismatch when trying to apply embedding", "error loading embedding"):
        assert problem not in log, (problem, log[-3000:])
    names = artifact_files(work)
    assert "fused_my_toy+my_dog_00001_.safetensors" in names  # the full pipeline's (ZeroScope stand-in)
    assert "shapesworld_builtin/fused_red_star+green_ring_00001_.safetensors" in names  # the quick start's
    assert (
        "my_subjects/my_toy_00001_.safetensors" in names and "my_motions/riding_00001_.safetensors" in names
    )
    assert not [n for n in names if ".partial" in n or n.endswith(".tmp")]
    # the AnimateDiff pipeline's exports, where ComfyUI's own loaders look (models/ under --base-directory)
    for rel in ("loras/my_toy_and_dog_lora.safetensors", "embeddings/my_toy.safetensors",
                "embeddings/my_dog.safetensors", "animatediff_motion_lora/riding_motion_lora.safetensors",
                "loras/my_toy_and_dog_wan.safetensors", "loras/riding_wan.safetensors"):  # and the Wan pipeline's
        assert (work / "models" / rel).is_file(), rel


def _errors(result) -> str:
    return json.dumps(result.get("body") or result.get("error"))


def _shown_under(result, node_id) -> list[str]:
    """The inputs ComfyUI lists a refused node's errors under (the frontend marks each)."""
    errors = result["body"]["node_errors"][node_id]["errors"]
    return sorted(e["extra_info"]["input_name"] for e in errors)


def test_broken_prompts_are_refused_clearly(server):
    client = server.client()
    p = api("videomage_sample_saved")
    sampler = next(k for k, v in p.items() if v["class_type"] == "VideoMageCollaborativeSampler")
    bad = json.loads(json.dumps(p))
    bad[sampler]["inputs"]["width"] = 60
    r = run(client, bad)
    assert r["status"] == "refused" and r["http"] == 400 and "multiples of 8" in _errors(r)
    assert "custom_validation_failed" in _errors(r)
    # shown under exactly the inputs it is about
    assert _shown_under(r, sampler) == ["height", "width"], r["body"]["node_errors"]

    bad = api("videomage_train_subject")
    trainer = next(k for k, v in bad.items() if v["class_type"] == "VideoMageTrainSubject")
    bad[trainer]["inputs"]["token"] = "toy"
    r = run(client, bad)  # a text input: checked when the node starts, before any training
    assert r["status"] == "error" and r["error"]["exception_message"].startswith("token: expected"), r

    bad = json.loads(json.dumps(p))
    loader = next(k for k, v in bad.items() if v["class_type"] == "VideoMageLoadModel")
    bad[loader]["inputs"]["model_name"] = "not_there"
    r = run(client, bad)
    assert r["status"] == "refused" and "models/diffusers" in _errors(r)
    assert _shown_under(r, loader) == ["model_name"], r["body"]["node_errors"]  # not again under device

    bad = json.loads(json.dumps(p))
    subj = next(k for k, v in bad.items() if v["class_type"] == "VideoMageLoadSubject")
    bad[subj]["inputs"]["subject_file"] = "../../../etc/passwd"
    r = run(client, bad)
    assert r["status"] == "refused" and "leaves" in _errors(r)

    bad = json.loads(json.dumps(p))
    bad[sampler]["inputs"]["steps"] = 100000
    r = run(client, bad)
    assert r["status"] == "refused" and "value_bigger_than_max" in _errors(r)

    bad = json.loads(json.dumps(p))
    bad[sampler]["inputs"]["prompt"] = "a <my_toy> alone"  # passes validation, fails when it runs
    r = run(client, bad)
    assert r["status"] == "error", r
    assert (
        r["error"]["exception_message"].startswith("prompt:")
        and "<my_dog>" in r["error"]["exception_message"]
    )

    good = json.loads(json.dumps(p))
    good[sampler]["inputs"]["seed"] = 7
    assert run(client, good)["status"] == "success"


def test_cancel_stops_quickly_and_leaves_nothing(server, work):
    client = server.client()
    p = api("videomage_train_subject")
    trainer = next(k for k, v in p.items() if v["class_type"] == "VideoMageTrainSubject")
    p[trainer]["inputs"].update(steps=5000, seed=12345)
    before = artifact_files(work)
    state = {"progress": 0, "interrupt_at": None}

    def on_event(e):
        if e["type"] == "progress" and e["data"].get("node") == trainer:
            state["progress"] = e["data"]["value"]
            if e["data"]["value"] >= 3 and state["interrupt_at"] is None:
                state["interrupt_at"] = time.monotonic()
                client.request("/interrupt", {}, method="POST")

    result = run(client, p, on_event=on_event, timeout=240)
    assert state["interrupt_at"] is not None, "training never reported progress"
    stopped_after = time.monotonic() - state["interrupt_at"]
    print(f"cancel: interrupted at step {state['progress']}, stopped {stopped_after:.2f} s later")
    assert result["status"] == "interrupted", result.get("error")
    assert stopped_after < 10
    assert artifact_files(work) == before, "a cancelled training must not leave an artifact"


def test_restart_does_not_retrain(server, work):
    client = server.client()
    before = artifact_files(work)
    server.stop()
    server.start()
    client = server.client()
    t0 = time.monotonic()
    result = run(client, api("videomage_train_subject"))
    seconds = time.monotonic() - t0
    assert result["status"] == "success"
    entry = client.history(result["prompt_id"])
    texts = [t for out in entry["outputs"].values() for t in out.get("text", [])]
    assert any("not retrained" in t for t in texts), texts
    new = artifact_files(work) - before
    assert new == {"my_subjects/my_toy_00002_.safetensors"}, new  # only the Save node's new copy
    print(f"after restart: same training served from disk in {seconds:.1f} s")
