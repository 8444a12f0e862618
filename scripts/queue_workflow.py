#!/usr/bin/env python3
"""Queue an API-format workflow on a ComfyUI server, follow it, and download its outputs.

Standard library only. Examples:

    python scripts/queue_workflow.py workflows/api/videomage_full_pipeline.json
    python scripts/queue_workflow.py workflows/api/videomage_sample_saved.json \\
        --server 127.0.0.1:8188 --set 4.inputs.steps=30 \\
        --set 4.inputs.prompt="a <my_toy> riding a <my_dog>" --out downloads/

``--set NODE.inputs.NAME=VALUE`` (or ``NODE.NAME=VALUE``) overrides an input; VALUE is read as JSON
when it parses (numbers, true/false, lists), else as a string. ``--ui FILE`` embeds the UI workflow in
the saved images/videos so that dropping them on ComfyUI restores the graph. Exit status: 0 success,
1 refused (the whole prompt, or some of its outputs: ComfyUI then runs only the outputs that validate)
or failed, 2 interrupted, 3 timed out, 4 no ComfyUI server reachable at --server.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


class WebSocket:
    """A minimal RFC 6455 client (text frames in, nothing out but pong/close): enough for ComfyUI's /ws."""

    def __init__(self, host: str, port: int, path: str, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        head, self.buffer = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        n = len(payload)
        header += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self, timeout: float | None = None):
        """The next text message (str), a binary message (bytes), or None on timeout."""
        self.sock.settimeout(timeout)
        message, first_opcode = b"", None
        try:
            while True:
                b0, b1 = self._read(2)
                opcode, fin, n = b0 & 0x0F, b0 & 0x80, b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", self._read(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", self._read(8))[0]
                mask = self._read(4) if b1 & 0x80 else None
                payload = self._read(n)
                if mask:
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                if opcode == 0x9:
                    self._send(0xA, payload)
                    continue
                if opcode == 0x8:
                    raise ConnectionError("websocket closed by the server")
                if opcode in (0x1, 0x2):
                    first_opcode = opcode
                message += payload
                if fin:
                    return message.decode() if first_opcode == 0x1 else message
        except socket.timeout:
            return None

    def close(self) -> None:
        try:
            self._send(0x8)
        except OSError:
            pass
        self.sock.close()


class ComfyClient:
    def __init__(self, server: str = "127.0.0.1:8188"):
        server = server.replace("http://", "").rstrip("/")
        self.host, _, port = server.partition(":")
        self.port = int(port or 80)
        self.base = f"http://{self.host}:{self.port}"
        self.client_id = uuid.uuid4().hex

    def request(self, path: str, data=None, method=None, timeout: float = 30.0):
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(
            self.base + path,
            data=body,
            method=method,
            headers={"Content-Type": "application/json"} if body else {},
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw and raw[:1] in (b"{", b"[") else raw

    def connect(self) -> WebSocket:
        return WebSocket(self.host, self.port, f"/ws?clientId={self.client_id}")

    def queue(self, prompt: dict, workflow: dict | None = None) -> tuple[int, dict]:
        """POST /prompt -> (HTTP status, JSON body); a refused prompt gives 400 and node_errors."""
        payload = {"prompt": prompt, "client_id": self.client_id}
        if workflow is not None:
            payload["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        try:
            return 200, self.request("/prompt", payload)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def follow(self, ws: WebSocket, prompt_id: str, timeout: float = 600.0, on_event=None) -> dict:
        """Read websocket messages until the prompt ends; returns {"status", "events", ...}."""
        deadline = time.monotonic() + timeout
        events = []
        while time.monotonic() < deadline:
            msg = ws.recv(timeout=min(5.0, max(0.1, deadline - time.monotonic())))
            if msg is None or isinstance(msg, bytes):
                continue  # binary messages are previews
            event = json.loads(msg)
            data = event.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            events.append(event)
            if on_event:
                on_event(event)
            kind = event.get("type")
            if kind == "execution_success":
                return {"status": "success", "events": events}
            if kind == "execution_error":
                return {"status": "error", "events": events, "error": data}
            if kind == "execution_interrupted":
                return {"status": "interrupted", "events": events}
            if kind == "executing" and data.get("node") is None:
                return {"status": "success", "events": events}
        return {"status": "timeout", "events": events}

    def history(self, prompt_id: str, wait: float = 15.0) -> dict:
        """The prompt's history entry (the server writes it just after the last websocket message)."""
        deadline = time.monotonic() + wait
        while True:
            entry = self.request(f"/history/{prompt_id}").get(prompt_id, {})
            if (entry.get("status") or {}).get("completed") is not None or time.monotonic() > deadline:
                return entry
            time.sleep(0.1)

    def download(self, item: dict, folder: str) -> str:
        query = urllib.parse.urlencode(
            {
                "filename": item["filename"],
                "subfolder": item.get("subfolder", ""),
                "type": item.get("type", "output"),
            }
        )
        with urllib.request.urlopen(f"{self.base}/view?{query}", timeout=60) as r:
            data = r.read()
        # the server names the file: keep only plain names (no '..', no absolute paths), mirror its
        # subfolder so that equal names in two subfolders do not collide, and write atomically
        subfolder = str(item.get("subfolder", "")).replace("\\", "/").split("/")
        parts = [p for p in subfolder if p not in ("", ".", "..")]
        name = os.path.basename(str(item["filename"]).replace("\\", "/"))
        if name in ("", ".", ".."):
            raise ValueError(f"the server sent an unusable file name: {item['filename']!r}")
        target = os.path.join(folder, *parts)
        os.makedirs(target, exist_ok=True)
        path = os.path.join(target, name)
        tmp = f"{path}.partial"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return path


def output_files(history_entry: dict, types=("output",)) -> list[dict]:
    """The files a finished prompt wrote (images, animated images, videos...)."""
    files = []
    for node_out in (history_entry.get("outputs") or {}).values():
        for key, items in node_out.items():
            if isinstance(items, list):
                files += [
                    i for i in items if isinstance(i, dict) and "filename" in i and i.get("type") in types
                ]
    return files


def apply_sets(prompt: dict, sets: list[str]) -> dict:
    for item in sets:
        path, sep, raw = item.partition("=")
        parts = path.split(".")
        if not sep or len(parts) < 2:
            raise SystemExit(f"--set {item!r}: expected NODE.inputs.NAME=VALUE")
        node, name = parts[0], parts[-1]
        if node not in prompt:
            raise SystemExit(f"--set {item!r}: no node {node} (nodes: {', '.join(sorted(prompt, key=int))})")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        prompt[node]["inputs"][name] = value
    return prompt


def format_errors(body: dict) -> str:
    lines = []
    err = body.get("error") or {}
    if err:
        lines.append(f"{err.get('message', '')} {err.get('details', '')}".strip())
    for node_id, node in (body.get("node_errors") or {}).items():
        for e in node.get("errors", []):
            lines.append(
                f"  node {node_id} ({node.get('class_type')}): {e.get('message')}: {e.get('details')}"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflow", help="API-format workflow JSON (workflows/api/*.json or 'Export (API)')")
    ap.add_argument("--server", default=os.environ.get("COMFYUI_SERVER", "127.0.0.1:8188"))
    ap.add_argument("--set", action="append", default=[], metavar="NODE.inputs.NAME=VALUE")
    ap.add_argument("--ui", help="UI-format workflow to embed in the outputs' metadata")
    ap.add_argument("--out", default="downloads", help="folder for the downloaded outputs")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the prompt")
    args = ap.parse_args(argv)

    with open(args.workflow) as f:
        prompt = json.load(f)
    if "nodes" in prompt and "links" in prompt:
        print(
            f"{args.workflow} is a UI-format workflow; use its API twin (workflows/api/) or the "
            "frontend's 'Export (API)'",
            file=sys.stderr,
        )
        return 1
    prompt = apply_sets(prompt, args.set)
    workflow = None
    if args.ui:
        with open(args.ui) as f:
            workflow = json.load(f)
    client = ComfyClient(args.server)
    try:
        return run(client, prompt, workflow, args)
    except urllib.error.HTTPError:
        raise  # the server answered: not a connection problem
    except (ConnectionError, TimeoutError, socket.gaierror, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", None) or exc  # refused, reset, unreachable, unknown host
        print(f"cannot reach a ComfyUI server at {client.base} ({reason}); start ComfyUI or pass --server "
              "HOST:PORT", file=sys.stderr)
        return 4


def run(client: ComfyClient, prompt: dict, workflow: dict | None, args) -> int:
    """Queue, follow, report and download; returns the exit status."""
    ws = client.connect()
    partly_refused = ""
    try:
        status, body = client.queue(prompt, workflow)
        if status != 200:
            print(f"refused (HTTP {status}):\n{format_errors(body)}", file=sys.stderr)
            return 1
        if body.get("node_errors"):
            # accepted, but ComfyUI dropped the outputs whose inputs failed validation: say which and why,
            # let the valid outputs run, and fail at the end
            partly_refused = format_errors({"node_errors": body["node_errors"]})
            print(f"partly refused: these outputs will not run:\n{partly_refused}", file=sys.stderr)
        prompt_id = body["prompt_id"]
        print(f"queued {prompt_id}")
        titles = {k: (v.get("_meta") or {}).get("title", v["class_type"]) for k, v in prompt.items()}

        def show(event):
            d = event.get("data") or {}
            if event["type"] == "executing" and d.get("node"):
                print(f"\n> {d['node']} {titles.get(d['node'], '')}", flush=True)
            elif event["type"] == "progress":
                print(f"\r  {d['value']}/{d['max']}", end="", flush=True)
            elif event["type"] == "execution_cached" and d.get("nodes"):
                print(f"cached: {', '.join(d['nodes'])}")

        result = client.follow(ws, prompt_id, args.timeout, show)
    finally:
        ws.close()
    print()
    if result["status"] == "error":
        e = result["error"]
        print(
            f"failed in node {e.get('node_id')} ({e.get('node_type')}): {e.get('exception_type')}: "
            f"{e.get('exception_message')}",
            file=sys.stderr,
        )
        return 1
    if result["status"] == "interrupted":
        print("interrupted", file=sys.stderr)
        return 2
    if result["status"] == "timeout":
        print(f"no result within {args.timeout:.0f} s", file=sys.stderr)
        return 3
    entry = client.history(prompt_id)
    for node_id, out in (entry.get("outputs") or {}).items():
        for text in out.get("text", []) or []:
            print(f"[{node_id} {titles.get(node_id, '')}] {text}")
    for item in output_files(entry):
        print(f"downloaded {client.download(item, args.out)}")
    if partly_refused:
        print(f"refused outputs (nothing was produced for them):\n{partly_refused}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
