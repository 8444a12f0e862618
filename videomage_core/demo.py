"""``make demo``: the whole pipeline (two subjects + one motion -> fusion -> SCS video) with no download.

It runs on the built-in ShapesWorld model (``videomage_core/models/shapesworld``, pretrained by this
project; see its MODEL_CARD.md). Inputs come from the ShapesWorld generator
(:mod:`videomage_core.shapesworld.customization`): two subjects of unnamed hues and shapes (the
model has no word for them, as ZeroScope has none for a user's dog) and a reference clip of a
held-out interaction ("orbit", never shown in pretraining) performed by two other objects, all drawn from the
seed. The recipe is ``make quality``'s with three additions, all beyond the paper: each subject image shows a
named object beside the subject (``Recipe.subject_companion``), the motion LoRA is checked against its own
reference and retrained with the next seed when it fails (:mod:`videomage_core.shapesworld.motion_check`), and the
VideoMage video weights SCS's DDIM step by region (``SAMPLING``). Writes
``<out>/``: the inputs, the trained artifacts, ``videomage.webp``, ``wo_scs.webp``,
``videomage_paper_scs.webp`` (the paper's SCS; the VideoMage column weights SCS's step by region, ``SAMPLING``),
``side_by_side.webp`` (reference | subjects | VideoMage | w/o SCS, each column labelled, upscaled to 128 px
to be seen) and
``report.json`` (settings, losses, timings, and the exact ShapesWorld measures of the three videos and of the
motion LoRA alone with its noise prior, ``motion_stage``).
``model_dir`` runs it on another folder instead (e.g. a tiny random model).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

# knobs per scale (Recipe fields); size, frames, sampling steps and CFG come from the model
SCALES = {
    "demo": dict(subject_steps=200, motion_steps=1000, inversion_steps=100, fusion_steps=100, prior_videos=2,
                 prior_steps=20, generation_steps=20, subject_companion=True),
    "test": dict(size=32, subject_steps=2, motion_steps=2, inversion_steps=2, fusion_steps=2, sample_steps=3, tau=2,
                 prior_videos=1, prior_steps=2, generation_steps=2, images=2, subject_companion=True),
}
#: how the VideoMage column samples: SCS with its DDIM step weighted by region (Recipe.region_weights), beyond
#: the paper. make quality's option scs_regions: +0.10 +- 0.07 subjects, +0.40 +- 0.36 motion per cell against
#: the paper's SCS; on bench/demo_draws' six draws +0.13 +- 0.09 and +0.26 +- 0.30 (session 23; on session
#: 21's draws, when every pair was a star and a ring, -0.05 +- 0.05 and +0.10 +- 0.10). The paper's SCS is
#: sampled too (videomage_paper_scs.webp, report.json).
SAMPLING = "scs_regions"
#: sampler name -> (generate's mode, SCS weighted by region): the demo's and bench/demo_draws' samplers
SAMPLERS = {"scs": ("scs", False), "scs_regions": ("scs", True), "wo_scs": ("wo_scs", False)}
#: the motion LoRA's check against its own reference (shapesworld.motion_check): trainings and samples per check
MOTION_CHECKS = {"demo": dict(attempts=3, checks=3), "test": dict(attempts=2, checks=1)}
MOTION = "orbit"
TOKENS = ("<subject1>", "<subject2>")
VIEW_SIZE = 128  # the side-by-side is upscaled (nearest) to at least this many pixels, to be looked at
#: what each column of side_by_side.webp shows (also in report.json)
COLUMNS = {
    "reference": "the reference clip the motion is learned from: two other objects, in named colours, "
                 "performing the held-out interaction (its appearance must not leak)",
    "subjects": "one image of each subject (unnamed hues and shapes the model has no word for); its training "
                "images, in inputs/, show it beside a named object and say so in their captions",
    "VideoMage": "fused subjects + motion LoRA, sampled with SCS, its DDIM step weighted by region (beyond the "
                 "paper; the paper's SCS is videomage_paper_scs.webp): the subjects should perform the motion",
    "w/o SCS": "the same LoRAs in one model, plain sampling (the paper's ablation)",
}


def draw_inputs(seed: int, size: int, frames: int):
    """The demo's inputs for ``seed``, the generator's draw: (the subject pair, the reference clip of MOTION).
    Every look comes from ``seed``: the subjects' shapes too (``make quality``'s first pair is always a star and
    a ring)."""
    from .shapesworld import customization as C

    pair = C.subject_pairs(seed, 1, drawn_shapes=True)[0]
    return pair, C.reference_clip(seed + 1, MOTION, pair, frames, size)


# how the demo trains draw ``seed``'s artifacts (bench/demo_draws.py trains them the same way)
def train_subject(model, recipe, pair, n: int, seed: int, cache, callback=None):
    """Subject ``n`` of the pair (training seed ``seed + n``)."""
    from .shapesworld import customization as C

    return C.train_subject_artifact(model, pair[n], TOKENS[n], recipe, seed + n, cache, callback=callback)


def fuse_subjects(model, recipe, trained, pair, seed: int, cache, callback=None):
    from .shapesworld import customization as C

    return C.fuse_artifact(model, trained, pair, recipe, seed, cache_dir=cache, callback=callback)


def train_motion(model, recipe, reference, seed: int, scale: str, callback=None, trained=None):
    """The motion LoRA, checked against its own reference (``MOTION_CHECKS[scale]``)."""
    from .shapesworld.motion_check import train_checked_motion

    return train_checked_motion(model, reference, recipe, seed, callback=callback, trained=trained,
                                **MOTION_CHECKS[scale])


def _upscale(video: torch.Tensor, factor: int) -> torch.Tensor:
    return video.repeat_interleave(factor, 1).repeat_interleave(factor, 2)


def run_demo(out: str | Path = "outputs/demo", scale: str = "demo", seed: int = 0, model_dir=None,
             callback=None) -> dict:
    from .artifacts import save_artifact
    from .model import load_model
    from .pretrained import shapesworld_model_dir
    from .shapesworld import customization as C
    from .video_io import labelled, save_animation, save_image, side_by_side

    out = Path(out)
    (out / "inputs").mkdir(parents=True, exist_ok=True)
    timings, started = {}, time.perf_counter()

    def clock(name, t0):
        timings[name] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    model_dir = Path(model_dir) if model_dir is not None else shapesworld_model_dir()
    model = load_model(model_dir)
    recipe = C.Recipe.for_model(model, **SCALES[scale])
    clock("model", t0)

    size, frames = recipe.size, recipe.frames
    view = max(1, -(-VIEW_SIZE // size))
    pair, reference = draw_inputs(seed, size, frames)
    ref_video = torch.from_numpy(reference.frames).float()
    for n, subj in enumerate(pair):  # what the subject LoRAs train on
        images = C.subject_training_images(subj, TOKENS[n], recipe, seed + n)[0]
        for i, img in enumerate(images):
            save_image(_upscale(img[None], view)[0], out / "inputs" / f"subject_{n + 1}_{i}.png")
    save_animation(_upscale(ref_video, view), out / "inputs" / "reference.webp")

    cache = out / "cache"
    trained = []
    for n in range(len(pair)):
        t0 = time.perf_counter()
        art = train_subject(model, recipe, pair, n, seed, cache, callback)
        save_artifact(art, out / f"subject_{n + 1}.safetensors")
        trained.append(art)
        clock(f"subject_{n + 1}", t0)

    t0 = time.perf_counter()
    motion = train_motion(model, recipe, reference, seed, scale, callback)
    save_artifact(motion, out / "motion.safetensors")
    clock("motion", t0)

    t0 = time.perf_counter()
    fused = fuse_subjects(model, recipe, trained, pair, seed, cache, callback)
    save_artifact(fused, out / "fused_subjects.safetensors")
    clock("fusion", t0)

    prompt = C.customized_prompt(MOTION, TOKENS)
    t0 = time.perf_counter()
    mode, regional = SAMPLERS[SAMPLING]
    video = C.generate(model, fused, motion, prompt, recipe, seed, mode, regional=regional)
    clock(f"sample_{SAMPLING}", t0)
    t0 = time.perf_counter()
    paper_scs = C.generate(model, fused, motion, prompt, recipe, seed, "scs")  # the paper's SCS
    clock("sample_scs", t0)
    t0 = time.perf_counter()
    plain = C.generate(model, fused, motion, prompt, recipe, seed, "wo_scs")
    clock("sample_wo_scs", t0)
    # the motion stage's own check (make quality's): the motion LoRA and its prior, two objects of no subject
    stage_prompt = C.motion_stage_prompt(MOTION)
    t0 = time.perf_counter()
    motion_stage = C.generate_with(model, motion, stage_prompt, recipe, seed, prior_from=motion)
    clock("sample_motion_stage", t0)
    # the subject half's own check: the fused LoRA alone, from fresh noise, on fusion's caption of the pair
    t0 = time.perf_counter()
    pair_prompt = C.subjects_stage_prompt(TOKENS)
    subjects_stage = C.generate_with(model, fused, pair_prompt, recipe, seed)
    clock("sample_subjects_stage", t0)
    save_animation(_upscale(video, view), out / "videomage.webp")
    save_animation(_upscale(paper_scs, view), out / "videomage_paper_scs.webp")
    save_animation(_upscale(plain, view), out / "wo_scs.webp")
    stills = torch.cat([C.subject_images(s, seed + n, size, 1)[0] for n, s in enumerate(pair)], 2)
    panels = [ref_video, stills.expand(frames, -1, -1, -1), video, plain]
    save_animation(side_by_side([labelled(_upscale(v, view), label) for v, label in zip(panels, COLUMNS)]),
                   out / "side_by_side.webp")
    timings["total"] = round(time.perf_counter() - started, 3)

    builtin = model.settings.get("model") == "shapesworld"
    report = {
        "model": {"path": str(model_dir), "fingerprint": model.fingerprint,
                  "kind": "built-in ShapesWorld model (see its MODEL_CARD.md)" if builtin
                  else "a model without ShapesWorld training: the measures score whatever it draws"},
        "scale": scale, "seed": seed, "prompt": prompt,
        "side_by_side_columns": COLUMNS,
        "inputs_note": "subjects and reference are the generator's draw for this seed (seed 0 by "
                       "default), not picked for a good-looking result",
        "inputs": {"subjects": [asdict(s) for s in pair], "reference_caption": reference.caption,
                   "reference_motion": reference.spec.motion},
        "recipe": asdict(recipe),
        "recipe_note": "make quality's ShapesWorld recipe with two additions, both beyond the paper: each subject "
                       "image shows a named object beside the subject (subject_companion), and the motion LoRA is "
                       "checked against its own reference and retrained with the next seed when it fails "
                       "(motion_checks; videomage_core/shapesworld/motion_check.py); make quality measures this "
                       "recipe as its option demo_recipe. The VideoMage column samples it with SCS's DDIM step "
                       "weighted by region (SAMPLING; make quality's option scs_regions, ahead of the paper's SCS "
                       "there on subjects and motion); videomage_paper_scs is the paper's SCS",
        "sampling": SAMPLING,
        "motion_checks": motion.info["motion_checks"],
        "losses": {"subject_1": trained[0].losses, "subject_2": trained[1].losses,
                   "motion": motion.losses, "motion_inversion": motion.info["inversion_losses"],
                   "fusion": fused.losses},
        "timings_s": timings,
        "measures": {"videomage": C.measure_customized(video, pair, reference),
                     "videomage_paper_scs": C.measure_customized(paper_scs, pair, reference),
                     "wo_scs": C.measure_customized(plain, pair, reference),
                     "motion_stage": C.measure_motion(motion_stage, reference),
                     "subjects_stage": C.measure_customized(subjects_stage, pair, reference)["subject_fidelity"]},
        "measures_note": "exact ShapesWorld detectors (1 = perfect; leakage: 0 = none). motion_stage: the "
                         "motion LoRA alone with its noise prior on \"" + stage_prompt + "\" (no subjects, "
                         "as make quality's motion stage), scored against the reference: whether the motion was "
                         "learned at all. subjects_stage: the fused subjects' LoRA alone on \"" + pair_prompt
                         + "\" (no motion; fresh noise): both subjects' fidelity where both are shown together, "
                         "0 when it draws fewer than two objects: whether fusion kept the two subjects drawable "
                         "side by side. One seed: see bench/RESULTS.md (make quality) for means over many "
                         "subjects, motions and seeds.",
        "files": sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
                        and "cache" not in p.parts),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    report["timings"] = timings
    return report
