"""The built-in model: ShapesWorld, pretrained by this project and shipped in the package.

``videomage_core/models/shapesworld/`` is a diffusers folder of ZeroScope's architecture (see its
``MODEL_CARD.md``), written by ``python -m videomage_core.shapesworld.pretrain --preset cpu``. The
demo, the quick-start workflow and ``make quality`` use it; the Load Model node lists it next to
the user's ``models/diffusers`` folders under :data:`BUILTIN_NAME`.
"""

from __future__ import annotations

from pathlib import Path

BUILTIN_NAME = "shapesworld_builtin"
SHAPESWORLD_DIR = Path(__file__).resolve().parent / "models" / "shapesworld"


def shapesworld_model_dir() -> Path:
    """The built-in model's folder; a clear error when the package was installed without it."""
    if not (SHAPESWORLD_DIR / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the built-in ShapesWorld model is missing at {SHAPESWORLD_DIR} (the package was installed "
            "without its model files; reinstall from the repository)"
        )
    return SHAPESWORLD_DIR


def is_builtin(model) -> bool:
    """Whether a loaded model is the built-in one (its artifacts are kept apart from real models')."""
    path = getattr(model, "path", None)
    return path is not None and Path(path).resolve() == Path(SHAPESWORLD_DIR).resolve()


def builtin_model_folders() -> dict[str, Path]:
    """Name -> folder of every built-in model present (what the Load Model node offers)."""
    return {BUILTIN_NAME: SHAPESWORLD_DIR} if (SHAPESWORLD_DIR / "model_index.json").is_file() else {}


def resolve_model_path(name_or_path: str) -> str:
    """A model argument as a folder: the built-in model's name (as the Load Model node lists it) gives
    its folder, unless a folder of that name exists where the user stands; anything else is a path."""
    if name_or_path in (BUILTIN_NAME, "builtin") and not Path(name_or_path).exists():
        return str(shapesworld_model_dir())
    return name_or_path
