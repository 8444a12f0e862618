"""What the built-in model draws for the held-out direction prompts: the main object's detected direction.

    python -m bench.direction_confusion [--samples 20] [--model DIR]

Backs the model card's tally (the model moves the object, but not in the named direction). Seeds
0..samples-1 per prompt, 30 DDIM steps, CFG 3 at the model's size; directions by
``measures.classify_direction`` (exact on ground truth).
"""
from __future__ import annotations

import argparse
import collections
import time

from videomage_core.model import load_model
from videomage_core.pretrained import shapesworld_model_dir
from videomage_core.sampling import SampleSettings
from videomage_core.shapesworld import measures as M
from videomage_core.shapesworld.controllability import HELD_OUT_CELLS, sample_videos

DIRECTIONS = ("left", "right", "up", "down")


def outcome(found: str, asked: str) -> str:
    return "named" if found == asked else found if found in ("still", "none") else "another"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.direction_confusion",
                                description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--model", help="model folder (default: the built-in ShapesWorld model)")
    a = p.parse_args(argv)
    model = load_model(a.model or shapesworld_model_dir())
    st = SampleSettings(frames=int(model.default("frames", 8)), height=int(model.default("height", 32)),
                        width=int(model.default("width", 32)), steps=30, cfg=3.0, seed=0)
    total = collections.Counter()
    for cell in (c for c in HELD_OUT_CELLS if c.motion in DIRECTIONS):
        t0 = time.time()
        got = collections.Counter()
        for video in sample_videos(model, [cell.prompt] * a.samples, list(range(a.samples)), st, batch=20):
            an = M.analyze(video, 1)
            got["none" if not an.objects else M.classify_direction(an.objects[0].trajectory(), an.size)] += 1
        total.update(outcome(k, cell.motion) for k in got.elements())
        print(f"{cell.prompt}: {dict(sorted(got.items()))} ({time.time() - t0:.0f} s)", flush=True)
    moved = total["named"] + total["another"]
    print(f"all {sum(total.values())} videos: moved {moved} (named direction {total['named']}, another "
          f"{total['another']}), still {total['still']}, no object {total['none']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
