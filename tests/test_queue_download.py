"""scripts/queue_workflow.py: downloads stay under --out (atomically); refusals and a server that is down
are reported with their exit status, never as success or a traceback."""
from __future__ import annotations

import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from queue_workflow import ComfyClient  # noqa: E402


def test_downloads_stay_under_the_output_folder(tmp_path, monkeypatch):
    served = []

    def urlopen(url, timeout):
        served.append(url)
        return io.BytesIO(f"file {len(served)}".encode())

    monkeypatch.setattr("urllib.request.urlopen", urlopen)
    out = tmp_path / "downloads"
    client = ComfyClient("127.0.0.1:1")
    items = [{"filename": "../../evil.webp", "subfolder": "", "type": "output"},
             {"filename": "clip.webp", "subfolder": "a", "type": "output"},
             {"filename": "clip.webp", "subfolder": "b/../../c", "type": "output"},
             {"filename": "/etc/x.png", "subfolder": "/abs", "type": "temp"}]
    paths = [Path(client.download(item, str(out))) for item in items]
    assert paths == [out / "evil.webp", out / "a" / "clip.webp", out / "b" / "c" / "clip.webp",
                     out / "abs" / "x.png"]
    assert [p.read_text() for p in paths] == ["file 1", "file 2", "file 3", "file 4"]
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(tmp_path).as_posix() for p in paths), "nothing else, no .partial"


def _workflow(tmp_path) -> str:
    import json

    path = tmp_path / "api.json"
    path.write_text(json.dumps({"1": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}},
                                "2": {"class_type": "EmptyImage", "inputs": {"width": 30}}}))
    return str(path)


def test_a_server_that_is_down_is_one_line_and_exit_4(tmp_path, capsys):
    import socket

    import queue_workflow

    with socket.socket() as s:  # a port nothing listens on: bind, never listen
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        code = queue_workflow.main([_workflow(tmp_path), "--server", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code == 4
    assert f"cannot reach a ComfyUI server at http://127.0.0.1:{port}" in err and "Traceback" not in err


class _Socket:
    def close(self):
        pass


def test_outputs_comfyui_refused_fail_the_run_and_say_why(tmp_path, monkeypatch, capsys):
    """HTTP 200 with node_errors: ComfyUI runs only the valid outputs; the client must not report success."""
    import queue_workflow

    node_errors = {"1": {"class_type": "SaveImage", "errors": [
        {"type": "value_smaller_than_min", "message": "Value 30 smaller than min of 64",
         "details": "width: 30 < 64"}]}}
    monkeypatch.setattr(queue_workflow.ComfyClient, "connect", lambda self: _Socket())
    monkeypatch.setattr(queue_workflow.ComfyClient, "queue",
                        lambda self, prompt, wf: (200, {"prompt_id": "p1", "node_errors": node_errors}))
    monkeypatch.setattr(queue_workflow.ComfyClient, "follow",
                        lambda self, ws, pid, timeout, on_event: {"status": "success", "events": []})
    monkeypatch.setattr(queue_workflow.ComfyClient, "history", lambda self, pid: {"outputs": {}})
    code = queue_workflow.main([_workflow(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert "partly refused" in err and "node 1 (SaveImage): Value 30 smaller than min of 64: width: 30 < 64" in err

    # the same run with nothing refused succeeds: the exit status follows node_errors, nothing else
    monkeypatch.setattr(queue_workflow.ComfyClient, "queue",
                        lambda self, prompt, wf: (200, {"prompt_id": "p1", "node_errors": {}}))
    assert queue_workflow.main([_workflow(tmp_path), "--out", str(tmp_path / "out")]) == 0
