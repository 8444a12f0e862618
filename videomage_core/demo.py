"""``make demo``: the whole pipeline (two subjects + one motion -> fusion -> SCS video) with no download.

Inputs come from the ShapesWorld generator: two subjects drawn from unnamed hues and shapes (as a
user's dog is unnamed for ZeroScope) and a reference clip of a held-out interaction performed by
two other objects. Until a pretrained built-in model exists, the model is a tiny random
ZeroScope-layout model built on the fly: the demo proves that every stage runs and writes its
artifacts, not that it customizes (a random model draws noise). Writes ``<out>/``: the inputs,
the trained artifacts, ``videomage.webp``, ``wo_scs.webp``, ``side_by_side.webp`` (reference |
subjects | VideoMage | w/o SCS) and ``report.json`` (settings, losses, timings, ShapesWorld measures).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

SCALES = {
    # steps of: subject, motion LoRA, motion inversion, fusion, sampling; size, frames, tau
    "demo": dict(subject=60, motion=60, inversion=30, fusion=40, sample=25, size=128, frames=8, tau=8,
                 prior_steps=10, generation_steps=10, lr_lora=1e-3),
    "test": dict(subject=2, motion=2, inversion=2, fusion=2, sample=3, size=64, frames=4, tau=2,
                 prior_steps=2, generation_steps=2, lr_lora=1e-3),
}


def demo_inputs(seed: int, size: int, frames: int, n_images: int = 4):
    """Two subjects (images + masks) and a reference interaction clip from ShapesWorld."""
    from .shapesworld import HELD_OUT_INTERACTIONS, render_subject_images, sample_interaction, sample_object

    rng = np.random.default_rng(seed)
    first = sample_object(rng, named_colour=False, shape="star")
    second = sample_object(rng, named_colour=False, shape="ring", avoid_hue=first.hue)
    subjects = []
    for obj in (first, second):
        imgs = render_subject_images(obj, n_images, rng, height=size, width=size)
        subjects.append((obj, torch.from_numpy(imgs.images).float(), torch.from_numpy(imgs.masks).float()))
    reference = sample_interaction(rng, HELD_OUT_INTERACTIONS[0], frames=frames, height=size, width=size)
    return subjects, reference


def _measures(frames: torch.Tensor, subjects, reference) -> dict:
    from .shapesworld import measures as M

    arr = frames.numpy()
    objs = [s[0] for s in subjects]
    try:
        return {"subject_fidelity": [M.subject_fidelity(arr, o, 2) for o in objs],
                "binding": M.attribute_binding(arr, objs),
                "motion_fidelity": M.motion_fidelity(arr, reference),
                "leakage": M.appearance_leakage(arr, objs, list(reference.objects)),
                "temporal_consistency": M.temporal_consistency(arr, 2)}
    except (ValueError, IndexError) as exc:  # a random model may draw no object at all
        return {"unmeasurable": str(exc)}


def run_demo(out: str | Path = "outputs/demo", scale: str = "demo", seed: int = 0, model_dir=None,
             callback=None) -> dict:
    from .artifacts import save_artifact
    from .fusion import FusionSettings, fuse_subjects
    from .model import load_model
    from .motion import MotionSettings, train_motion
    from .pipeline import generate_video
    from .sampling import SampleSettings, SCSSettings
    from .subject import SubjectSettings, train_subject
    from .tiny import build_tiny_model
    from .video_io import save_animation, save_image, side_by_side

    cfg = SCALES[scale]
    out = Path(out)
    (out / "inputs").mkdir(parents=True, exist_ok=True)
    timings, started = {}, time.perf_counter()

    def clock(name, t0):
        timings[name] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    if model_dir is None:
        model_dir = out / "model"
        if not (model_dir / "model_index.json").is_file():
            build_tiny_model(model_dir, seed=seed)
    model = load_model(model_dir)
    clock("model", t0)

    size, frames = cfg["size"], cfg["frames"]
    subjects, reference = demo_inputs(seed, size, frames)
    ref_video = torch.from_numpy(reference.frames).float()
    ref_masks = torch.from_numpy(reference.masks[:, frames // 2]).float()
    for n, (_, images, _) in enumerate(subjects):
        for i, img in enumerate(images):
            save_image(img, out / "inputs" / f"subject_{n + 1}_{i}.png")
    save_animation(ref_video, out / "inputs" / "reference.webp")

    cache = out / "cache"
    trained = []
    for n, (_, images, masks) in enumerate(subjects):
        t0 = time.perf_counter()
        settings = SubjectSettings(token=f"<subject{n + 1}>", superclass="shape", steps=cfg["subject"],
                                   height=size, width=size, seed=seed + n, prior_videos=2,
                                   prior_frames=frames, prior_steps=cfg["prior_steps"], lr_lora=cfg["lr_lora"])
        art = train_subject(model, images, settings, masks=masks, callback=callback, cache_dir=cache)
        save_artifact(art, out / f"subject_{n + 1}.safetensors")
        trained.append(art)
        clock(f"subject_{n + 1}", t0)

    t0 = time.perf_counter()
    motion_settings = MotionSettings(motion_prompt=reference.caption, reference_words=("shape", "shape"),
                                     steps=cfg["motion"], inversion_steps=cfg["inversion"], height=size,
                                     width=size, seed=seed, lr_lora=cfg["lr_lora"])
    motion = train_motion(model, ref_video, motion_settings, masks=ref_masks, callback=callback)
    save_artifact(motion, out / "motion.safetensors")
    clock("motion", t0)

    t0 = time.perf_counter()
    fusion_settings = FusionSettings(steps=cfg["fusion"], frames=frames, height=size, width=size, seed=seed,
                                     generation_steps=cfg["generation_steps"], videos_per_subject=1,
                                     cutmix_videos=2, lr_lora=cfg["lr_lora"])
    fused = fuse_subjects(model, trained, fusion_settings, callback=callback, cache_dir=cache,
                          subject_images=[(s[1], s[2]) for s in subjects])
    save_artifact(fused, out / "fused_subjects.safetensors")
    clock("fusion", t0)

    prompt = "a <subject1> and a <subject2> orbit each other"
    sample = SampleSettings(frames=frames, height=size, width=size, steps=cfg["sample"], cfg=9.0, seed=seed)
    scs = SCSSettings(tau=cfg["tau"])
    t0 = time.perf_counter()
    video = generate_video(model, fused, motion, prompt, sample, mode="scs", scs=scs, callback=callback)
    clock("sample_scs", t0)
    t0 = time.perf_counter()
    plain = generate_video(model, fused, motion, prompt, sample, mode="wo_scs", callback=callback)
    clock("sample_wo_scs", t0)
    save_animation(video, out / "videomage.webp")
    save_animation(plain, out / "wo_scs.webp")
    stills = torch.cat([s[1][:1] for s in subjects], 2).expand(frames, -1, -1, -1)
    save_animation(side_by_side([ref_video, stills, video, plain]), out / "side_by_side.webp")
    timings["total"] = round(time.perf_counter() - started, 3)

    report = {
        "model": {"path": str(model_dir), "fingerprint": model.fingerprint,
                  "kind": "tiny random ZeroScope-layout model (no pretrained weights)",
                  "note": "a random model draws noise: the measures below score noise, not customization"},
        "scale": scale, "seed": seed, "prompt": prompt,
        "inputs": {"subjects": [asdict(s[0]) for s in subjects], "reference_caption": reference.caption,
                   "reference_motion": reference.motion},
        "settings": {"subject": asdict(SubjectSettings(steps=cfg["subject"])) | {"height": size, "width": size},
                     "motion": asdict(motion_settings), "fusion": asdict(fusion_settings),
                     "sample": asdict(sample), "scs": asdict(scs)},
        "losses": {"subject_1": trained[0].losses, "subject_2": trained[1].losses,
                   "motion": motion.losses, "motion_inversion": motion.info["inversion_losses"],
                   "fusion": fused.losses},
        "timings_s": timings,
        "measures": {"videomage": _measures(video, subjects, reference),
                     "wo_scs": _measures(plain, subjects, reference)},
        "files": sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
                        and "cache" not in p.parts and "model" not in p.parts),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    report["timings"] = timings
    return report
