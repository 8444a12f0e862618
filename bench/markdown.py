"""``bench/RESULTS.md`` is shared by ``make bench`` (speed) and ``make quality``: each owns one section
between HTML-comment markers and rewrites only that one."""

from __future__ import annotations

from pathlib import Path

from videomage_core.atomic import atomic_write_text

ORDER = ("speed", "quality")


def write_section(path: Path, name: str, text: str) -> None:
    """Replace section ``name`` of ``path`` (created if absent), keeping the other sections."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    old = path.read_text() if path.is_file() else ""
    sections = {}
    for other in ORDER:
        s, e = f"<!-- {other}:start -->", f"<!-- {other}:end -->"
        if s in old and e in old:
            sections[other] = old[old.index(s): old.index(e) + len(e)]
    if "speed" not in sections and old.startswith("# Benchmarks") and "<!--" not in old:
        sections["speed"] = f"<!-- speed:start -->\n{old.rstrip()}\n<!-- speed:end -->"  # a file from before
    sections[name] = f"{start}\n{text.rstrip()}\n{end}"
    body = "\n\n".join(sections[k] for k in ORDER if k in sections) + "\n"
    atomic_write_text(path, body)
