"""What the recipe probes (:mod:`bench.motion_recipe`, :mod:`bench.subject_recipe`, :mod:`bench.fusion_recipe`)
share: their command line (``--model``, ``--seeds``, ``--recipe``, ``--results``, ``--pairs`` where asked) and
the model and recipe it names."""
from __future__ import annotations

import argparse
from pathlib import Path


def probe_parser(module: str, doc: str, seeds: int, results: str) -> argparse.ArgumentParser:
    """The common options of ``python -m bench.<module>``; the caller adds its own."""
    p = argparse.ArgumentParser(prog=f"python -m bench.{module}", description=doc.split("\n")[0])
    p.add_argument("--model", help="model folder (default: the built-in ShapesWorld model)")
    p.add_argument("--seeds", type=int, default=seeds, help="videos per row and item probed")
    p.add_argument("--recipe", default="", help="recipe overrides, as bench.quality's --recipe")
    p.add_argument("--results", default=results)
    return p


def add_pairs_option(p: argparse.ArgumentParser, help: str) -> None:
    """``--pairs``: how many of ``make quality``'s subject pairs (its first ones) a probe trains."""
    p.add_argument("--pairs", type=int, default=2, help=help)


def probe_inputs(p: argparse.ArgumentParser, args):
    """(model, recipe) from parsed ``args``; a bad ``--seeds``, ``--pairs`` or ``--recipe`` is one parser error."""
    from bench.quality import recipe_overrides
    from videomage_core.model import load_model
    from videomage_core.pretrained import shapesworld_model_dir
    from videomage_core.shapesworld import customization as C

    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    if getattr(args, "pairs", 1) < 1:
        p.error("--pairs must be at least 1")
    try:
        overrides = recipe_overrides(args.recipe)
    except ValueError as exc:
        p.error(f"--recipe: {exc}")
    model = load_model(Path(args.model) if args.model else shapesworld_model_dir())
    return model, C.Recipe.for_model(model, **overrides)
