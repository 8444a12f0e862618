"""Atomic file writes: a reader, or a run after a crash, sees the old file or the whole new one, never
half of one, and no temporary file stays behind."""
from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    """The process's file-creation mask (read by setting and restoring it; Linux also lists it in
    /proc/self/status, but this works everywhere)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Create ``path``'s folder, let ``write`` fill a temporary file beside it, then move it into place.

    The file gets the mode a plain ``open(path, "w")`` would give (0666 less the umask), not the
    temporary file's private 0600.
    """
    path = Path(path)
    tmp = _written_beside(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _written_beside(path: Path, write: Callable[[str], None]) -> str:
    """A finished temporary file in ``path``'s folder (created), with a plain file's mode (0666 less the
    umask, not the temporary file's private 0600); removed again if ``write`` fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # after writing: some writers (safetensors) replace the file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = None) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent))


def atomic_write_new(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Like :func:`atomic_write`, but never replaces a file: ``path`` if it is free, else the first free
    ``<stem>_NNNNN<suffix>``. The name is taken by a hard link from the finished temporary file, which
    fails if the name exists, so two writers never take one name. Returns the path written."""
    path = Path(path)
    tmp = _written_beside(path, write)
    try:
        candidates = [path] + [path.with_name(f"{path.stem}_{n:05d}{path.suffix}") for n in range(1, 100000)]
        for final in candidates:
            try:
                os.link(tmp, final)
                return final
            except FileExistsError:
                continue
        raise FileExistsError(f"no free name for {path}")
    finally:
        Path(tmp).unlink(missing_ok=True)
