"""The packages the engine needs beyond torch, checked without importing them (cheap at start-up).

ComfyUI brings torch, numpy, pillow, safetensors, einops and transformers, but not diffusers or peft:
a pack installed without ``pip install -r requirements.txt`` would register its nodes and fail only
when a prompt runs, deep inside the engine. :func:`missing_requirements` lets the pack say so when it
loads, and :func:`require_dependencies` gives every node the same one-line error.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import VideoMageInputError

#: import name -> distribution name in requirements.txt
REQUIRED = {"diffusers": "diffusers", "peft": "peft", "transformers": "transformers",
            "safetensors": "safetensors", "einops": "einops", "numpy": "numpy", "PIL": "pillow",
            "tokenizers": "tokenizers"}

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "requirements.txt"


class MissingDependencyError(VideoMageInputError):
    """A package of requirements.txt is not installed in the Python that runs the engine."""


def missing_requirements() -> list[str]:
    """Distribution names of the required packages that cannot be imported here."""
    return [dist for module, dist in REQUIRED.items() if importlib.util.find_spec(module) is None]


def install_command(python: str = "python") -> str:
    """What installs them into the running environment. pip leaves an installed torch that satisfies
    ``torch>=2.4`` as it is (no ``-U``), so ComfyUI's torch build is kept."""
    return f'{python} -m pip install -r "{REQUIREMENTS_FILE}"'


def missing_message(missing: list[str]) -> str:
    return (f"VideoMage needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed "
            f"in this Python. Install the pack's requirements into the environment that runs ComfyUI, "
            f"then restart it:\n    {install_command()}")


def require_dependencies(input_name: str = "requirements") -> None:
    """Raise :class:`MissingDependencyError` (one clear line and the install command) if any is missing."""
    missing = missing_requirements()
    if missing:
        raise MissingDependencyError(input_name, missing_message(missing))
