"""``make quality``: VideoMage against its ablations, their controls and MotionDirector on ShapesWorld.

    python -m bench.quality [--pairs 4] [--seeds 2] [--out outputs/quality] [--scale full|test] [--motions orbit,swap]

On the built-in ShapesWorld model (``videomage_core/models/shapesworld``), with inputs from the
generator and exact measures (:mod:`videomage_core.shapesworld.customization`):

- ``base``: the pretrained model's prompt following on held-out prompts (colour, shape, motion),
  from the model card's measurement (``controllability.json``, 40 samples per prompt).
- ``customization``: subject fidelity of the base model asked for "a shape" vs the subject LoRA
  asked for "a <token>" (``subject_before`` / ``subject_after``), and motion fidelity for the
  held-out interaction prompt of the base model (``motion_before``) vs the motion as the samplers
  use it, its LoRA started from its noise prior (``motion_after``), and of each half alone
  (``motion_lora_only``, ``motion_prior_only``).
- ``methods``: for every subject pair x held-out motion x seed, four ways to make "a <s1> orbits
  a <s2>": ``videomage`` (fused subjects with L_attn, motion LoRA with L_mot, SCS), ``wo_lmot``
  (motion LoRA with the plain loss, omega 0), ``wo_lattn`` (fusion with lambda2 0) and ``wo_scs``
  (both LoRAs in one model, plain sampling).
- ``controls`` on the same cells: ``motiondirector`` (the baseline as its paper describes it:
  :mod:`videomage_core.motiondirector`'s dual-path motion, the subjects' LoRAs averaged, plain
  sampling), ``tau0`` (SCS's two branches never guided) and ``beta0`` (every method and the
  baseline with the noise prior off).
- ``options`` beyond the paper, on VideoMage's cells: CustomCrafter's early subject scale, two motion
  LoRAs in one video, subject LoRAs learned from images with a second, named object
  (``Recipe.subject_companion``), SCS's DDIM step weighted by region (``Recipe.region_weights``), the motion
  LoRA checked on its own reference and retrained when it fails (``motion_check``) and ``make demo``'s recipe,
  companion subjects with the checked motion (``demo_recipe``), each against VideoMage per cell.
- ``claims``: the paper's claims as paired differences over the same (pair, motion, seed) videos;
  a claim is ``supported`` when the 95 % Student-t interval over the (pair, motion) cells' mean
  differences excludes 0 on the claimed side (a cell's seeds share its LoRAs; :func:`claim`).

Trained artifacts, the customization measures and each measured (pair, motion, seed) cell are cached
in ``--out`` (a re-run resumes; a run with more ``--seeds`` measures only the new seeds; an edit of
the measures re-measures). The cache keys hold the model, the recipe and the inputs, not the engine's
code: after changing how the engine trains or samples, delete ``--out``. Writes
``bench/quality.json`` and the quality section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from bench.markdown import write_section
from bench.quality_markdown import markdown
from bench.quality_stats import (  # noqa: F401 (re-exported: the bench's names in one place)
    BASELINE,
    CELL_RECIPES,
    METHODS,
    OPTION_RECIPES,
    OPTIONS,
    RECIPES,
    T975,
    TABLE_MEASURES,
    VARIANTS,
    claim,
    stat,
    summarize,
    t975,
)
from videomage_core.atomic import atomic_write_json
from videomage_core.shapesworld import customization as C
from videomage_core.shapesworld.generator import HELD_OUT_INTERACTIONS, SUPERCLASS

#: The code a cached cell's numbers come from: the detectors, how a video is scored, and the engine modules that
#: sample it (an edited sampler measures every cell again; the artifacts' digests hold the recipe, not the code).
ENGINE = Path(C.__file__).parent.parent
MEASURING_CODE = (Path(C.__file__).with_name("measures.py"), Path(C.__file__).with_name("detection.py"),
                  Path(C.__file__),
                  *(ENGINE / f"{m}.py" for m in ("sampling", "losses", "attention", "diffusion", "lora", "tokens")))
SAMPLING_ONLY = ("alpha", "tau", "beta_s", "motion_prompt", "subject_interaction", "noise_prior_beta",
                 "sample_steps", "early_subject_scale", "early_subject_steps", "region_weights")  # not in artifact digests
#: Recipe fields a stage's artifacts never read (left out of that stage's digest, so a change of the subject
#: recipe retrains the subjects and their fusion but reuses the motions, and the other way round). A field
#: missing here only costs a needless retraining; one wrongly listed would reuse a stale artifact.
_MOTION_FIELDS = ("motion_steps", "inversion_steps", "motion_rank", "motion_coverage", "omega", "motion_renderings",
                  "motion_renderings_look", "motion_prior_from")
_VIDEOMAGE_MOTION_ONLY = ("omega", "inversion_steps", "motion_renderings", "motion_renderings_look",
                          "motion_prior_from")
_SUBJECT_FIELDS = ("subject_steps", "lambda1", "images", "prior_videos", "prior_steps", "subject_masks",
                   "subject_companion")
_FUSION_FIELDS = ("fusion_steps", "lambda2", "generation_steps", "fusion_background", "fusion_pair_denoising")
NOT_READ_BY = {
    "subject": _MOTION_FIELDS + _FUSION_FIELDS,
    "motion": _SUBJECT_FIELDS + _FUSION_FIELDS,
    # MotionDirector's motion: the motion stage's fields less what only VideoMage's motion LoRA reads
    "motiondirector": _SUBJECT_FIELDS + _FUSION_FIELDS + _VIDEOMAGE_MOTION_ONLY,
    "fusion": _MOTION_FIELDS,
}
MOTION_ROWS = ("motion_before", "motion_after", "motion_lora_only", "motion_prior_only")
#: customization's subject_parts: a subject drawn alone by its own LoRA ("subject_lora") and by its pair's
#: fused LoRA ("fused_lora"), each split into hue and shape (measures.subject_parts)
SUBJECT_PART_STAGES = ("subject_lora", "fused_lora")
SCALES = {
    "full": {},
    # for tests: every stage runs, with a few steps each, at 32 px (the UNet is convolutional; 4x fewer latents)
    "test": dict(size=32, subject_steps=2, motion_steps=2, inversion_steps=1, fusion_steps=2, sample_steps=2,
                 tau=1,
                 prior_videos=1, prior_steps=1, generation_steps=1, images=2),
}
#: the motion_check and demo_recipe options' check (shapesworld.motion_check), per scale: as ``make demo``'s
MOTION_CHECKS = {"full": dict(attempts=3, checks=3), "test": dict(attempts=2, checks=1)}



# --------------------------------------------------------------------------- the run


def say(message: str) -> None:
    """Progress lines, flushed (a long run's log is readable while it runs, redirected or not)."""
    print(message, flush=True)


class Quality:
    def __init__(self, model, recipe: C.Recipe, out: Path, pairs: int, seeds: int, log=say,
                 min_samples: int = 16, motions: tuple[str, ...] | None = None, motion_checks: dict | None = None):
        self.model, self.recipe, self.out, self.log = model, recipe, out, log
        self.motion_checks = dict(MOTION_CHECKS["full"] if motion_checks is None else motion_checks)
        self.min_samples = min_samples  # per before/after cell (the issue asks for 16+)
        self.n_pairs, self.n_seeds = pairs, seeds
        self.pairs = C.subject_pairs(1000, pairs)
        every = tuple(s for p in self.pairs for s in p)
        self.motions = tuple(HELD_OUT_INTERACTIONS if motions is None else motions)
        unknown = [m for m in self.motions if m not in HELD_OUT_INTERACTIONS]
        if unknown or not self.motions:
            raise ValueError(f"motions: expected some of {list(HELD_OUT_INTERACTIONS)}, got {list(self.motions)}")
        self.references = {m: C.reference_clip(2000 + k, m, every, recipe.frames, recipe.size)
                           for k, m in enumerate(self.motions)}
        self.art_dir = out / "artifacts"
        self.art_dir.mkdir(parents=True, exist_ok=True)
        self.timings: dict[str, float] = {}
        self.reused = {"customization": False, "cells": 0}  # measured by an earlier run (see _measured)

    def _cached(self, name: str, make, stage: str):
        from videomage_core.artifacts import load_artifact, save_artifact

        path = self.art_dir / f"{name}-{self.digest(stage)}.safetensors"
        if path.is_file():
            return load_artifact(path)
        t0 = time.perf_counter()
        art = make()
        save_artifact(art, path)
        self.timings[name] = round(time.perf_counter() - t0, 2)
        self.log(f"  trained {name} in {self.timings[name]:.1f} s")
        return art

    def digest(self, stage: str | None = None) -> str:
        """Of everything the trained artifacts depend on (file names carry it: a re-run with other
        settings, e.g. more pairs, which change the references' colours, never picks up a stale file).
        ``stage`` ("subject", "motion", "fusion"): without the recipe fields that stage never reads."""
        skip = set(SAMPLING_ONLY) | set(NOT_READ_BY[stage] if stage else ())
        training = {k: v for k, v in C.recipe_dict(self.recipe).items() if k not in skip}
        key = json.dumps([training, [repr(p) for p in self.pairs],
                          {k: v.caption + str(v.spec.paths.tolist()) for k, v in self.references.items()},
                          self.model.fingerprint])
        return hashlib.sha256(key.encode()).hexdigest()[:8]

    def sampling_digest(self) -> str:
        """Of everything one measured cell depends on: the artifacts, the whole recipe, sampling included,
        and the measuring and sampling code (measures are cached per (pair, motion, seed), so more seeds later
        measure only the new ones, and an edited detector or sampler measures everything again)."""
        measuring = hashlib.sha256(b"".join(p.read_bytes() for p in MEASURING_CODE)).hexdigest()[:12]
        key = json.dumps([self.digest(), C.recipe_dict(self.recipe), VARIANTS, RECIPES, OPTION_RECIPES, measuring,
                          self.motion_checks])
        return hashlib.sha256(key.encode()).hexdigest()[:8]

    def _measured(self, name: str, measure) -> tuple[bool, object]:
        """``measure()``'s JSON result, cached under ``out/cells`` on :meth:`sampling_digest`; (reused, result)."""
        path = self.out / "cells" / f"{name}-{self.sampling_digest()}.json"
        if path.is_file():  # measured by an earlier run with the same artifacts and sampling
            return True, json.loads(path.read_text())
        result = measure()
        atomic_write_json(path, result)
        return False, result

    def train(self) -> dict:
        from videomage_core.fusion import average_subjects

        r, m = self.recipe, self.model
        arts = {}
        self._train_subjects(arts, r)
        for j, motion in enumerate(self.motions):
            ref = self.references[motion]
            arts[f"motion_{motion}"] = self._cached(f"motion_{motion}", lambda ref=ref, j=j:
                                                    C.train_motion_artifact(m, ref, r, 500 + j), "motion")
            arts[f"motion_{motion}_plain"] = self._cached(f"motion_{motion}_plain", lambda ref=ref, j=j:
                                                          C.train_motion_artifact(m, ref, r, 500 + j, omega=0.0),
                                                          "motion")
            arts[f"motion_{motion}_md"] = self._cached(f"motion_{motion}_md", lambda ref=ref, j=j:
                                                       C.train_motiondirector_artifact(m, ref, r, 500 + j),
                                                       "motiondirector")
            arts[f"motion_{motion}_checked"] = self._checked_motion(arts, motion, 500 + j)
        self._fuse(arts, r)
        self._fuse(arts, r, "_noattn", lambda2=0.0)
        for i in range(len(self.pairs)):
            arts[f"averaged_p{i}"] = average_subjects([arts[f"subject_p{i}s0"], arts[f"subject_p{i}s1"]])
        # the subject_companion option: the same subjects learned from images with a second, named object
        rc = dataclasses.replace(r, subject_companion=True)
        self._train_subjects(arts, rc, "_companion")
        self._fuse(arts, rc, "_companion", subjects="_companion")
        return arts

    def _checked_motion(self, arts: dict, motion: str, seed: int):
        """``motion``'s LoRA checked against its reference and retrained with the next seed when it fails (the
        motion_check and demo_recipe options, as ``make demo`` trains its motion): the first training is
        ``motion_{motion}`` itself, the retrainings are cached as ``motion_{motion}_seed{k}``."""
        from videomage_core.shapesworld.motion_check import train_checked_motion

        def trained(k, train):
            if k == seed:
                first = arts[f"motion_{motion}"]
                return dataclasses.replace(first, info=dict(first.info))
            return self._cached(f"motion_{motion}_seed{k}", train, "motion")

        art = train_checked_motion(self.model, self.references[motion], self.recipe, seed, trained=trained,
                                   **self.motion_checks)
        self.log(f"  motion_{motion}_checked: " + "; ".join(
            f"seed {c['training_seed']} median {c['median']:.2f}{' kept' if c['kept'] else ''}"
            for c in art.info["motion_checks"]))
        return art

    def _train_subjects(self, arts: dict, recipe: C.Recipe, suffix: str = "") -> None:
        """Every pair's two subject LoRAs under ``recipe``, as ``subject_p{i}s{k}{suffix}``."""
        for i, pair in enumerate(self.pairs):
            for k, subj in enumerate(pair):
                name = f"subject_p{i}s{k}{suffix}"
                arts[name] = self._cached(name, lambda s=subj, t=self.token(i, k), sd=10 * i + k:
                                          C.train_subject_artifact(self.model, s, t, recipe, sd,
                                                                   self.out / "cache"), "subject")

    def _fuse(self, arts: dict, recipe: C.Recipe, suffix: str = "", subjects: str = "", **overrides) -> None:
        """Every pair's fused LoRA of ``subject_p{i}s*{subjects}``, as ``fused_p{i}{suffix}``."""
        for i, pair in enumerate(self.pairs):
            subs = [arts[f"subject_p{i}s0{subjects}"], arts[f"subject_p{i}s1{subjects}"]]
            arts[f"fused_p{i}{suffix}"] = self._cached(
                f"fused_p{i}{suffix}", lambda subs=subs, pair=pair, i=i:
                C.fuse_artifact(self.model, subs, pair, recipe, 700 + i, cache_dir=self.out / "cache", **overrides),
                "fusion")

    @staticmethod
    def token(i: int, k: int) -> str:
        return f"<p{i}s{k}>"

    def customization(self, arts) -> dict:
        """Before / after one LoRA, each on its own measure (16+ samples per cell); cached like a cell."""
        found, result = self._measured(f"customization-m{self.min_samples}", lambda: self._customization(arts))
        if found:
            self.log("  customization: reused")
        self.reused["customization"] = found
        return result

    def _customization(self, arts) -> dict:
        r, m = self.recipe, self.model
        sub_before, sub_after = [], []
        # each subject's hue and shape parts, drawn by its own LoRA and by its pair's fused LoRA (the same
        # prompt and seeds): which part of the identity fusion keeps
        parts = {stage: {"hue": [], "shape": []} for stage in SUBJECT_PART_STAGES}
        seeds = max(1, math.ceil(self.min_samples / (2 * self.n_pairs)))
        for i, pair in enumerate(self.pairs):
            for k, subj in enumerate(pair):
                art = arts[f"subject_p{i}s{k}"]
                for s in range(seeds):
                    seed = 3000 + 100 * i + 10 * k + s
                    prompt = f"a {self.token(i, k)} standing still"
                    before = C.generate_with(m, None, f"a {SUPERCLASS} standing still", r, seed)
                    after = C.generate_with(m, art, prompt, r, seed)
                    fused = C.generate_with(m, arts[f"fused_p{i}"], prompt, r, seed)
                    sub_before.append(C.measure_subject(before, subj))
                    sub_after.append(C.measure_subject(after, subj))
                    for stage, video in zip(SUBJECT_PART_STAGES, (after, fused), strict=True):
                        measured = C.measure_subject_parts(video, subj)
                        for key, values in parts[stage].items():
                            values.append(measured[key])
        # motion: the base model; the motion as the pipeline uses it (LoRA + its noise prior); and
        # each half alone, to show where the motion comes from
        mot = {k: [] for k in MOTION_ROWS}
        mseeds = max(1, math.ceil(self.min_samples / len(self.motions)))
        for j, motion in enumerate(self.motions):
            prompt = C.motion_stage_prompt(motion)
            ref, art = self.references[motion], arts[f"motion_{motion}"]
            probes = dict(zip(MOTION_ROWS, [(None, None), (art, art), (art, None), (None, art)],
                              strict=True))  # adapter, prior per row
            for s in range(mseeds):
                seed = 4000 + 100 * j + s
                for key, (adapter, prior) in probes.items():
                    video = C.generate_with(m, adapter, prompt, r, seed, prior_from=prior)
                    mot[key].append(C.measure_motion(video, ref))
        ceiling = C.vae_ceiling(m, [s for p in self.pairs for s in p], list(self.references.values()), r)
        self.log(f"  customization: subject {np.mean(sub_before):.3f} -> {np.mean(sub_after):.3f}, "
                 + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in mot.items())
                 + ", VAE ceiling " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in ceiling.items()))
        return {"subject_before": stat(sub_before), "subject_after": stat(sub_after),
                "subject_parts": {stage: {k: stat(v) for k, v in p.items()} for stage, p in parts.items()},
                **{k: stat(v) for k, v in mot.items()},
                "vae_ceiling": {k: stat(v) for k, v in ceiling.items()},
                "scores": {"subject_before": sub_before, "subject_after": sub_after, **mot,
                           **{f"{stage}_{k}": v for stage, p in parts.items() for k, v in p.items()},
                           **{f"vae_ceiling_{k}": v for k, v in ceiling.items()}}}

    def methods(self, arts) -> list[dict]:
        """Every method on every (pair, motion, seed) cell; one record per video."""
        r, m = self.recipe, self.model
        records = []
        total = len(self.pairs) * len(self.motions) * self.n_seeds
        done = 0
        for i, pair in enumerate(self.pairs):
            for motion in self.motions:
                prompt = C.customized_prompt(motion, (self.token(i, 0), self.token(i, 1)))
                for s in range(self.n_seeds):
                    seed = 5000 + 97 * i + 13 * self.motions.index(motion) + s

                    def cell(i=i, pair=pair, motion=motion, prompt=prompt, seed=seed):
                        out = []
                        nxt = self.motions[(self.motions.index(motion) + 1) % len(self.motions)]
                        for name, recipe_name, guided, prior, option in VARIANTS:
                            sk, mk, mode = CELL_RECIPES[recipe_name]
                            video = C.generate(m, arts[sk.format(i=i)], arts[mk.format(m=motion)], prompt, r, seed,
                                               mode, noise_prior=prior, guided=guided,
                                               early_subject=option == "customcrafter",
                                               motion_2=arts[f"motion_{nxt}"] if option == "two_motions" else None,
                                               regional=option == "scs_regions")
                            rec = C.measure_customized(video, pair, self.references[motion])
                            rec["motion_fidelity_next"] = C.measure_motion(video, self.references[nxt])
                            out.append({"method": name, "pair": i, "motion": motion, "seed": seed, **rec})
                        return out

                    found, measured = self._measured(f"p{i}-{motion}-{seed}", cell)
                    records.extend(measured)
                    self.reused["cells"] += found
                    done += 1
                    if done % max(1, total // 10) == 0 or done == total:
                        self.log(f"  methods: {done}/{total} cells ({self.reused['cells']} reused)")
        return records


def base_controllability(model_dir: Path) -> dict:
    path = model_dir / "controllability.json"
    if not path.is_file():
        return {k: {"mean": None, "ci95": None, "n": 0} for k in ("colour", "shape", "motion")} | {
            "source": "not measured (no controllability.json next to the model)"}
    data = json.loads(path.read_text())
    out = {k: data["overall"][k] for k in ("colour", "shape", "motion")}
    out["source"] = (f"From the model card's measurement ({model_dir.name}/controllability.json, "
                     f"{data.get('settings', {}).get('samples_per_cell', '?')} samples per held-out prompt).")
    return out


def run(model_dir: Path, out: Path, pairs: int, seeds: int, scale: str = "full", results: Path | None = None,
        log=say, min_samples: int = 16, motions: tuple[str, ...] | None = None, recipe: dict | None = None) -> dict:
    from videomage_core.model import load_model

    t0 = time.perf_counter()
    model = load_model(model_dir)
    recipe = C.Recipe.for_model(model, **{**SCALES[scale], **(recipe or {})})
    q = Quality(model, recipe, out, pairs, seeds, log, min_samples, motions, MOTION_CHECKS[scale])
    log(f"quality: {pairs} pairs x {len(q.motions)} motions x {seeds} seeds, recipe {recipe}")
    arts = q.train()
    custom = q.customization(arts)
    records = q.methods(arts)
    methods, controls, options, claims = summarize(records)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "seconds": round(time.perf_counter() - t0, 1),
        "settings": {"model": str(model_dir), "model_fingerprint": model.fingerprint, "pairs": pairs,
                     "seeds": seeds, "motions": list(q.motions), "cells": pairs * len(q.motions) * seeds,
                     "scale": scale, "recipe": C.recipe_dict(recipe),
                     "subjects": [[repr(s) for s in p] for p in q.pairs],
                     "references": {k: v.caption for k, v in q.references.items()},
                     "motion_checks": {m: arts[f"motion_{m}_checked"].info["motion_checks"] for m in q.motions}},
        "base": base_controllability(Path(model_dir)),
        "customization": {k: v for k, v in custom.items() if k != "scores"},
        "methods": methods,
        "controls": controls,
        "options": options,
        "claims": claims,
        "timings": q.timings,
        "reused": q.reused,
        "records": records,
        "customization_scores": custom["scores"],
    }
    if results is not None:
        results.mkdir(parents=True, exist_ok=True)
        atomic_write_json(results / "quality.json", result, indent=1)
        write_section(results / "RESULTS.md", "quality", markdown(result))
        log(f"wrote {results / 'quality.json'} and the quality section of {results / 'RESULTS.md'}")
    return result


def recipe_overrides(text: str) -> dict:
    """``"motion_rank=64,motion_coverage=all_linear"`` -> ``{"motion_rank": 64, ...}``, each value of its
    :class:`~videomage_core.shapesworld.customization.Recipe` field's type (ValueError names what is wrong)."""
    fields = {f.name: f for f in dataclasses.fields(C.Recipe)}
    out = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep or name not in fields:
            raise ValueError(f"expected field=value with a field of {sorted(fields)}, got '{item}'")
        annotation = str(fields[name].type)  # a string: this module's annotations are postponed
        kind = next((t for t in (float, int, str) if t.__name__ in annotation), type(fields[name].default))
        if value.lower() == "none" and "None" in annotation:
            out[name] = None
            continue
        if "bool" in annotation and value.lower() in ("true", "false"):  # bool("false") would be True
            out[name] = value.lower() == "true"
            continue
        if annotation == "bool":
            raise ValueError(f"{name}: expected true or false, got '{value}'")
        try:
            out[name] = kind(value)
        except ValueError:
            raise ValueError(f"{name}: expected a value of type {kind.__name__}, got '{value}'") from None
    return out


def main(argv=None) -> int:
    from videomage_core.pretrained import shapesworld_model_dir

    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model folder (default: the built-in ShapesWorld model)")
    p.add_argument("--out", default="outputs/quality", help="artifacts and cache (a re-run resumes)")
    p.add_argument("--results", default="bench", help="where quality.json and RESULTS.md go")
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--seeds", type=int, default=2, help="seeds per pair and motion (2: 24 videos per method)")
    p.add_argument("--scale", choices=sorted(SCALES), default="full")
    p.add_argument("--motions", help=f"comma-separated held-out motions (default: all of {','.join(HELD_OUT_INTERACTIONS)})")
    p.add_argument("--recipe", default="", help="recipe overrides, e.g. 'motion_coverage=attention,motion_rank=4,"
                   "motion_steps=200' (the paper's motion LoRA; fields of videomage_core.shapesworld.customization.Recipe)")
    a = p.parse_args(argv)
    try:
        overrides = recipe_overrides(a.recipe)
    except ValueError as exc:
        p.error(f"--recipe: {exc}")
    motions = tuple(m.strip() for m in a.motions.split(",") if m.strip()) if a.motions else None
    if motions is not None and (not motions or set(motions) - set(HELD_OUT_INTERACTIONS)):
        p.error(f"--motions: expected some of {','.join(HELD_OUT_INTERACTIONS)}, got '{a.motions}'")
    if a.pairs < 1 or a.seeds < 1:
        p.error("--pairs and --seeds must be at least 1")
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    model_dir = Path(a.model) if a.model else shapesworld_model_dir()
    run(model_dir, Path(a.out), a.pairs, a.seeds, a.scale, Path(a.results), motions=motions, recipe=overrides)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
