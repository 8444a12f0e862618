"""What the built-in model draws for the held-out direction prompts: the main object's detected direction.

    python -m bench.direction_confusion [--samples 20] [--model DIR]

Backs the model card's tally (the model moves the object, but not in the named direction). Seeds
0..samples-1 per prompt, 30 DDIM steps, CFG 3 at the model's size; directions by
``measures.classify_direction`` (exact on ground truth).
"""
from __future__ import annotations

import argparse
import collections
import itertools
import time

from videomage_core.model import load_model
from videomage_core.pretrained import shapesworld_model_dir
from videomage_core.sampling import SampleSettings
from videomage_core.shapesworld import measures as M
from videomage_core.shapesworld.controllability import HELD_OUT_CELLS, sample_videos

DIRECTIONS = ("left", "right", "up", "down")


def outcome(found: str, asked: str) -> str:
    return "named" if found == asked else found if found in ("still", "none") else "another"


def detected_directions(model, samples: int, steps: int = 30):
    """Yield (cell, the main object's detected direction or 'none') for seeds 0..samples-1 of each
    held-out direction prompt, sampled at the model's size with CFG 3."""
    st = SampleSettings(frames=int(model.default("frames", 8)), height=int(model.default("height", 32)),
                        width=int(model.default("width", 32)), steps=steps, cfg=3.0, seed=0)
    for cell in (c for c in HELD_OUT_CELLS if c.motion in DIRECTIONS):
        for video in sample_videos(model, [cell.prompt] * samples, list(range(samples)), st, batch=20):
            an = M.analyze(video, 1)
            yield cell, M.classify_direction(an.objects[0].trajectory(), an.size) if an.objects else "none"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.direction_confusion",
                                description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--model", help="model folder (default: the built-in ShapesWorld model)")
    a = p.parse_args(argv)
    model = load_model(a.model or shapesworld_model_dir())
    total = collections.Counter()
    t0 = time.time()
    for cell, found in itertools.groupby(detected_directions(model, a.samples), key=lambda cf: cf[0]):
        got = collections.Counter(f for _, f in found)
        total.update(outcome(k, cell.motion) for k in got.elements())
        print(f"{cell.prompt}: {dict(sorted(got.items()))}", flush=True)
    moved = total["named"] + total["another"]
    print(f"all {sum(total.values())} videos: moved {moved} (named direction {total['named']}, another "
          f"{total['another']}), still {total['still']}, no object {total['none']} "
          f"({time.time() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
