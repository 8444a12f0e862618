"""scripts/queue_workflow.py downloads what the server names: only under --out, atomically."""
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
