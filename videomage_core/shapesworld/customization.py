"""Customization experiments on ShapesWorld: inputs from the generator, engine calls, exact measures.

What ``make demo`` and ``make quality`` (``bench/quality.py``) share. Subjects are objects of
unnamed hues (the model has no word for them, as ZeroScope has none for a user's dog); the
reference motion is a held-out interaction (never shown in pretraining) performed by two other,
named-colour objects, so that copying their appearance into the output is measurable as leakage.

Every trained piece is an ordinary engine artifact (:func:`train_subject`, :func:`train_motion`,
:func:`fuse_subjects`); sampling is :func:`generate_video`. The knobs for a given scale are one
:class:`Recipe`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from ..errors import VideoMageInputError, require
from ..tokens import TOKEN_IN_TEXT
from . import measures as M
from .generator import (
    HELD_OUT_INTERACTIONS,
    NAMED_COLOURS,
    NAMED_SHAPES,
    PAIR_SIZE,
    PRETRAIN_INTERACTIONS,
    SHAPES,
    STILL_PAIR,
    SUPERCLASS,
    Clip,
    ObjectSpec,
    hue_distance,
    interaction_prompt,
    render_background,
    render_clip,
    render_subject_images,
    sample_background,
    sample_interaction,
    sample_object,
)

MEASURES = ("subject_fidelity", "motion_fidelity", "leakage", "binding", "temporal_consistency", "interaction",
            "subject_hue", "subject_shape")
#: Value a measure takes when the video has no detectable object to score (a failed video counts
#: as a failure; leakage has no meaning without an object and is left out, counted in ``failed``).
FAILED = {"subject_fidelity": 0.0, "motion_fidelity": 0.0, "leakage": None, "binding": 0.0,
          "temporal_consistency": 0.0, "interaction": 0.0, "subject_hue": 0.0, "subject_shape": 0.0}
SUBJECT_SHAPES = ("star", "ring", "cross", "diamond")  # shapes captions never name


@dataclass(frozen=True)
class Recipe:
    """Every knob of one customization run (steps, learning rates, sampling)."""

    size: int = 32
    frames: int = 8
    subject_steps: int = 200
    motion_steps: int = 1000  # with the two fields below: the motion LoRA that transfers a motion on its
    # own on the built-in model (bench/motion_recipe.md: 0.94-1.00 alone; rank 4 / 200 steps on the
    # attention projections, the paper's real-size setting, transfers nothing here)
    inversion_steps: int = 100
    fusion_steps: int = 100
    sample_steps: int = 30
    cfg: float = 3.0
    tau: int = 9
    rank: int = 4
    motion_rank: int | None = 64  # the motion LoRAs' (VideoMage's and MotionDirector's); None: ``rank``
    motion_coverage: str = "all_linear"  # their layers (videomage_core.bases.COVERAGES)
    lr_lora: float = 1e-3
    lr_token: float = 1e-2
    lambda1: float = 0.25
    lambda2: float = 0.6
    omega: float = 0.5
    prior_videos: int = 2
    prior_steps: int = 20
    generation_steps: int = 20
    images: int = 8  # with whole-image L_sub: the subject LoRA that draws its subject best on the built-in
    # model (bench/subject_recipe.md: 0.53 against 0.37 for 4 masked images; the paper learns from 3-5)
    subject_masks: bool = False  # True: L_sub on the subject's pixels only (our MASK input); False: whole
    # images, as the paper trains
    noise_prior_beta: float = 0.1  # with the renderings below; 0.3 with the reference alone (the paper's
    # recipe here, docs/shapesworld.md)
    alpha: float | None = None  # SCS alpha0; None: the model's scs_alpha
    beta_s: float = 0.5  # SCS: the subject branch's weight in the DDIM step (the motion branch's is 1 - beta_s)
    motion_prompt: str = "superclass"  # SCS's motion branch prompt (sampling.MOTION_PROMPTS; "tokens" beyond the paper)
    # beyond the paper: SCS's subject branch prompted with this pretraining interaction's caption of the two
    # subjects ("a <s1> chases a <s2>") instead of the target prompt, whose held-out verb ("orbits") no
    # caption ever showed; "still_pair": "a <s1> and a <s2>" (fusion's L_attn caption; a pretraining caption
    # only on a model pretrained with PretrainConfig.p_still_pair > 0); "": the target prompt (the paper)
    subject_interaction: str = ""
    # beyond the paper: fusion also trains denoising on its CutMix pair videos, "a <s1> and a <s2>", with this
    # weight (fusion.FusionSettings.pair_denoising); 0: the paper. At 1, no measure fell; over three sampling
    # seeds subjects level, motion +0.05 (docs/shapesworld.md, session 17)
    fusion_pair_denoising: float = 1.0
    # beyond the paper: the motion LoRA also trains on this many renderings of the reference clip's very paths
    # with every object re-hued and re-shaped at random (motion.train_motion's ``renderings``), so it cannot
    # keep the reference's looks; 0: the reference alone (the paper). 8 with the prior at 0.1 trades motion for
    # subjects (make quality, 6 cells: VideoMage's subjects 0.15 -> 0.35, leakage 0.57 -> 0.40, motion 0.99 ->
    # 0.47; the motion stage 0.76 -> 0.85; docs/shapesworld.md "The renderings recipe")
    motion_renderings: int = 8
    # which objects a rendering re-hues and re-shapes: "all" or "moving", only the objects whose path moves (a
    # still one, orbit's centre or jump_over's ground object, keeps its reference look). "moving" keeps the demo
    # draw's still object but costs make quality's cells subjects and motion (docs/shapesworld.md "Renderings
    # that re-look only what moves")
    motion_renderings_look: str = "all"
    # beyond the paper: what the noise prior inverts: "reference" (the paper) or "looks", the mean latents of the
    # reference and its ``motion_renderings`` (motion.MotionSettings.noise_prior_from)
    motion_prior_from: str = "reference"
    # what fusion's CutMix videos paste the subjects on: "world", an empty scene the generator renders (the
    # built-in model cannot draw one: "" draws an object, which L_attn then teaches both tokens to ignore;
    # docs/shapesworld.md "Fusion's CutMix background"), or "generated" (the paper: the model's background prompt)
    fusion_background: str = "world"
    # beyond the paper, used only where asked (generate's ``early_subject``): CustomCrafter's lower
    # subject-LoRA scale during the first steps, where motion and layout form
    early_subject_scale: float = 0.5
    early_subject_steps: int = 10
    # beyond the paper, used only where asked (generate's ``regional``): SCS's DDIM step gives the subject branch
    # this share (outside, inside) of the noise per pixel, by its tokens' attention maps (SCSSettings.region_weights)
    region_weights: tuple[float, float] = (0.2, 0.9)
    # beyond the paper: each subject image also shows a second, named world object, and says so in its own
    # caption ("a <s> and a red circle"; subject.SubjectSettings.image_captions). Two subject LoRAs learned so
    # no longer merge into one object on "a <s1> and a <s2>" (fused: make demo's draw 0.04 -> 0.24-0.30, make
    # quality's pairs 0.14 -> 0.22), but under SCS they are level with the recipe's (make quality's option
    # subject_companion: +0.02 +- 0.12 subjects, +0.02 +- 0.30 motion per cell; docs/shapesworld.md, session 20)
    subject_companion: bool | float = False
    # (a number in (0, 1): that share of the subject images shows the companion, the rest the subject alone with
    # the subject stage's template caption; True is every image, False none)

    @classmethod
    def for_model(cls, model, **overrides) -> Recipe:
        """Size, frames, steps and CFG from the model's ``videomage.json``, then ``overrides``."""
        base = cls(size=int(model.default("height", cls.size)), frames=int(model.default("frames", cls.frames)),
                   sample_steps=int(model.default("steps", cls.sample_steps)),
                   cfg=float(model.default("cfg", cls.cfg)))
        return replace(base, **overrides)


# --------------------------------------------------------------------------- inputs


def subject_pairs(seed: int, n: int, drawn_shapes: bool = False) -> list[tuple[ObjectSpec, ObjectSpec]]:
    """``n`` pairs of subjects with unnamed hues (>= 60 deg apart), unnamed shapes and textures
    drawn from the whole space; the two subjects of a pair differ in shape. Pair ``i``'s shapes are
    ``SUBJECT_SHAPES[i]`` and ``[i + 1]`` (cycled, so ``make quality``'s pairs cover every shape evenly), or,
    with ``drawn_shapes``, two distinct shapes drawn from ``seed`` like the hues (a single draw, the demo's)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        if drawn_shapes:
            shapes = [str(s) for s in rng.choice(SUBJECT_SHAPES, 2, replace=False)]
        else:
            shapes = [SUBJECT_SHAPES[i % len(SUBJECT_SHAPES)], SUBJECT_SHAPES[(i + 1) % len(SUBJECT_SHAPES)]]
        first = sample_object(rng, named_colour=False, shape=shapes[0])
        second = sample_object(rng, named_colour=False, shape=shapes[1], avoid_hue=first.hue)
        pairs.append((first, second))
    return pairs


def reference_clip(seed: int, interaction: str, avoid: tuple[ObjectSpec, ...], frames: int, size: int) -> Clip:
    """A clip of ``interaction`` by two plain objects of named shapes (the subjects' shapes are never
    named) in the two named colours farthest in hue from every ``avoid`` subject: what leakage
    would copy."""
    rng = np.random.default_rng(seed)
    far = sorted(NAMED_COLOURS, key=lambda c: -min([hue_distance(NAMED_COLOURS[c], o.hue) for o in avoid] or [180]))
    colours = list(far[:2])
    rng.shuffle(colours)
    shapes = rng.choice(list(NAMED_SHAPES), 2, replace=False)
    objs = [replace(sample_object(rng, named_colour=True, shape=str(sh), texture="plain", size_range=PAIR_SIZE),
                    hue=NAMED_COLOURS[c])
            for sh, c in zip(shapes, colours)]
    return sample_interaction(rng, interaction, subjects=objs, frames=frames, height=size, width=size)


def subject_images(subject: ObjectSpec, seed: int, size: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` still images ``[N, H, W, 3]`` and masks ``[N, H, W]`` of one subject."""
    imgs = render_subject_images(subject, n, np.random.default_rng(seed), height=size, width=size)
    return torch.from_numpy(imgs.images).float(), torch.from_numpy(imgs.masks).float()


def subject_images_with_companion(subject: ObjectSpec, token: str, seed: int, size: int, n: int
                                  ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """``n`` still images ``[N, H, W, 3]`` of one subject beside a second, named object (a named colour at
    least 60 degrees from the subject's hue, a named shape, placed as pretraining's still pairs), the
    subject's masks ``[N, H, W]`` and each image's caption, "a <s> and a red circle"."""
    rng = np.random.default_rng([seed, 6521])
    colours = [c for c, h in NAMED_COLOURS.items() if hue_distance(h, subject.hue) >= 60]
    images, masks, captions = [], [], []
    for _ in range(n):
        subj = replace(subject, size=subject.size * float(rng.uniform(0.9, 1.2)))
        colour, shape = colours[int(rng.integers(len(colours)))], NAMED_SHAPES[int(rng.integers(len(NAMED_SHAPES)))]
        other = replace(sample_object(rng, named_colour=True, shape=shape, texture="plain", size_range=PAIR_SIZE),
                        hue=NAMED_COLOURS[colour])
        first = rng.random() < 0.5
        clip = sample_interaction(rng, STILL_PAIR, subjects=[subj, other] if first else [other, subj], frames=1,
                                  height=size, width=size)
        images.append(clip.frames[0])
        masks.append(clip.masks[0 if first else 1, 0])
        captions.append(interaction_prompt(STILL_PAIR, f"a {token}", f"a {colour} {shape}"))
    return torch.from_numpy(np.stack(images)).float(), torch.from_numpy(np.stack(masks)).float(), tuple(captions)


def customized_prompt(motion: str, tokens: tuple[str, str]) -> str:
    """"a <s1> orbits a <s2>": the held-out interaction's caption with the subjects' tokens."""
    return interaction_prompt(motion, f"a {tokens[0]}", f"a {tokens[1]}")


# --------------------------------------------------------------------------- engine calls


def subject_training_images(subject: ObjectSpec, token: str, recipe: Recipe, seed: int):
    """What a subject LoRA trains on under ``recipe``: images, masks and each image's caption (None: the
    template's), with a named companion object in ``recipe.subject_companion``'s share of them (True: all)."""
    from ..subject import SubjectSettings

    share = float(recipe.subject_companion)
    require(0.0 <= share <= 1.0, "subject_companion", f"True, False or a share in [0, 1], got {share}")
    with_companion = round(share * recipe.images)
    if with_companion == 0:
        return (*subject_images(subject, seed, recipe.size, recipe.images), None)
    images, masks, captions = subject_images_with_companion(subject, token, seed, recipe.size, with_companion)
    alone = recipe.images - with_companion
    if alone == 0:
        return images, masks, captions
    alone_images, alone_masks = subject_images(subject, seed, recipe.size, alone)
    template = SubjectSettings.prompt_template.format(token=token)
    return (torch.cat([images, alone_images]), torch.cat([masks, alone_masks]),
            captions + (template,) * alone)


def train_subject_artifact(model, subject: ObjectSpec, token: str, recipe: Recipe, seed: int, cache_dir=None,
                           callback=None):
    from ..subject import SubjectSettings, train_subject

    images, masks, captions = subject_training_images(subject, token, recipe, seed)
    settings = SubjectSettings(token=token, superclass=SUPERCLASS, steps=recipe.subject_steps, rank=recipe.rank,
                               lr_lora=recipe.lr_lora, lr_token=recipe.lr_token, lambda1=recipe.lambda1,
                               seed=seed, height=recipe.size, width=recipe.size,
                               prior_videos=recipe.prior_videos, prior_frames=recipe.frames,
                               prior_steps=recipe.prior_steps, prior_cfg=recipe.cfg, image_captions=captions)
    return train_subject(model, images, settings, masks=masks if recipe.subject_masks else None, cache_dir=cache_dir,
                         callback=callback)


def train_motion_artifact(model, reference: Clip, recipe: Recipe, seed: int, omega: float | None = None,
                          callback=None):
    from ..motion import MotionSettings, train_motion

    words = tuple(o.shape for o in reference.spec.objects)
    settings = MotionSettings(motion_prompt=reference.caption, reference_words=words,
                              omega=recipe.omega if omega is None else omega, steps=recipe.motion_steps,
                              inversion_steps=recipe.inversion_steps, rank=recipe.motion_rank or recipe.rank,
                              lr_lora=recipe.lr_lora, lr_token=recipe.lr_token, seed=seed, height=recipe.size,
                              width=recipe.size, coverage=recipe.motion_coverage,
                              noise_prior_from=recipe.motion_prior_from)
    video = torch.from_numpy(reference.frames).float()
    masks = torch.from_numpy(reference.masks[:, reference.frames.shape[0] // 2]).float()
    renderings = [torch.from_numpy(c.frames).float()
                  for c in other_looks(reference, recipe.motion_renderings, seed, recipe.motion_renderings_look)]
    return train_motion(model, video, settings, masks=masks, callback=callback, renderings=renderings)


RENDERING_LOOKS = ("all", "moving")


def other_looks(reference: Clip, n: int, seed: int, which: str = "all") -> list[Clip]:
    """``n`` renderings of ``reference``'s very paths, sizes and background, each object of a random hue and
    shape (any of the world's): the same motion in other looks. ``which="moving"`` re-looks only the objects
    that move; a still one keeps its reference look (the draws are the same either way, so a moving object
    looks the same under both)."""
    if which not in RENDERING_LOOKS:
        raise VideoMageInputError("motion_renderings_look", f"expected one of {RENDERING_LOOKS}, got {which!r}")
    rng = np.random.default_rng([seed, 7919])
    kept = [which == "moving" and np.ptp(path, axis=0).max() < 1.0 for path in reference.spec.paths]  # still, in px
    looks = []
    for _ in range(n):
        drawn = [(float(rng.uniform(0, 360)), str(rng.choice(SHAPES))) for _ in reference.spec.objects]
        objects = tuple(o if keep else replace(o, hue=hue, shape=shape)
                        for o, keep, (hue, shape) in zip(reference.spec.objects, kept, drawn))
        looks.append(render_clip(replace(reference.spec, objects=objects)))
    return looks


def train_motiondirector_artifact(model, reference: Clip, recipe: Recipe, seed: int, callback=None):
    """The MotionDirector baseline's motion (dual-path LoRAs with its appearance-debiased loss) from
    the same reference, with the same rank, coverage, steps and learning rate as VideoMage's motion LoRA."""
    from ..motiondirector import MotionDirectorSettings, train_motiondirector

    settings = MotionDirectorSettings(motion_prompt=reference.caption, steps=recipe.motion_steps,
                                      rank=recipe.motion_rank or recipe.rank, lr_lora=recipe.lr_lora, seed=seed,
                                      height=recipe.size, width=recipe.size, coverage=recipe.motion_coverage)
    return train_motiondirector(model, torch.from_numpy(reference.frames).float(), settings, callback=callback)


def fuse_artifact(model, subjects, pair: tuple[ObjectSpec, ObjectSpec], recipe: Recipe, seed: int,
                  lambda2: float | None = None, cache_dir=None, callback=None):
    """Fuse two trained subjects; CutMix sources are the subjects' own masked images."""
    from ..fusion import FusionSettings, fuse_subjects

    settings = FusionSettings(lambda2=recipe.lambda2 if lambda2 is None else lambda2, steps=recipe.fusion_steps,
                              lr_lora=recipe.lr_lora, seed=seed, frames=recipe.frames, height=recipe.size,
                              width=recipe.size, generation_steps=recipe.generation_steps, cfg=recipe.cfg,
                              videos_per_subject=1, cutmix_videos=4, pair_denoising=recipe.fusion_pair_denoising)
    images = [subject_images(s, seed + 100 * k, recipe.size, recipe.images) for k, s in enumerate(pair)]
    return fuse_subjects(model, subjects, settings, subject_images=images, cache_dir=cache_dir, callback=callback,
                         background=fusion_background(recipe, seed))


FUSION_BACKGROUNDS = ("world", "generated")


def fusion_background(recipe: Recipe, seed: int) -> torch.Tensor | None:
    """Fusion's CutMix background for ``recipe.fusion_background``: one still ``[1, H, W, 3]`` of an empty
    scene of the world's (a background drawn as the generator draws clips'), or None ("generated": the engine
    generates one from the model's background prompt)."""
    if recipe.fusion_background not in FUSION_BACKGROUNDS:
        raise VideoMageInputError("fusion_background", f"expected one of {FUSION_BACKGROUNDS}, "
                                                       f"got {recipe.fusion_background!r}")
    if recipe.fusion_background == "generated":
        return None
    spec = sample_background(np.random.default_rng([seed, 4241]))
    return torch.from_numpy(render_background(spec, recipe.size, recipe.size))[None].float()


def sample_settings(recipe: Recipe, seed: int, early_subject: bool = False):
    from ..sampling import SampleSettings

    early = dict(subject_early_scale=recipe.early_subject_scale,
                 subject_early_steps=min(recipe.early_subject_steps, recipe.sample_steps)) if early_subject else {}
    return SampleSettings(frames=recipe.frames, height=recipe.size, width=recipe.size,
                          steps=recipe.sample_steps, cfg=recipe.cfg, seed=seed, **early)


def motion_stage_prompt(motion: str) -> str:
    """The prompt a motion is checked on by itself, with no subject: "a shape orbits another shape"."""
    return interaction_prompt(motion, f"a {SUPERCLASS}", f"another {SUPERCLASS}")


def subjects_stage_prompt(tokens: tuple[str, str]) -> str:
    """The prompt fused subjects are checked on by themselves, with no motion: "a <s1> and a <s2>" (the
    caption fusion's L_attn trains on)."""
    return interaction_prompt(STILL_PAIR, f"a {tokens[0]}", f"a {tokens[1]}")


def subject_branch_prompt(recipe: Recipe, prompt: str) -> str:
    """SCS's subject-branch prompt: "" (the target prompt itself), or ``recipe.subject_interaction``'s caption
    of the target prompt's two subject tokens, in their order."""
    if not recipe.subject_interaction:
        return ""
    known = PRETRAIN_INTERACTIONS + (STILL_PAIR,)
    if recipe.subject_interaction not in known:
        raise VideoMageInputError("subject_interaction", f"expected one of {known} or '', got "
                                                         f"{recipe.subject_interaction!r}")
    tokens = TOKEN_IN_TEXT.findall(prompt)
    if len(tokens) != 2:
        raise VideoMageInputError("prompt", f"expected two subject tokens, found {tokens} in {prompt!r}")
    return interaction_prompt(recipe.subject_interaction, f"a {tokens[0]}", f"a {tokens[1]}")


def generate(model, subject_art, motion_art, prompt: str, recipe: Recipe, seed: int, mode: str,
             noise_prior: bool = True, guided: bool = True, early_subject: bool = False,
             motion_2=None, regional: bool = False) -> torch.Tensor:
    """One customized video ``[F, H, W, 3]`` (``mode`` "scs" or "wo_scs"). ``guided=False``: SCS's
    two branches with tau = 0 (averaged, never guided), the control for the guidance itself;
    ``noise_prior=False``: sampling from fresh noise (beta = 0). Beyond the paper: ``early_subject``
    lowers the subject LoRA's scale in the first steps (CustomCrafter; the recipe's
    ``early_subject_*``), ``motion_2`` adds a second motion LoRA at weight 1 (Customize-A-Video), ``regional``
    weights SCS's DDIM step by the subject tokens' maps (the recipe's ``region_weights``)."""
    from ..pipeline import generate_video
    from ..sampling import SCSSettings

    return generate_video(model, subject_art, motion_art, prompt, sample_settings(recipe, seed, early_subject),
                          mode=mode, motion_2=motion_2,
                          scs=SCSSettings(tau=recipe.tau if guided else 0, alpha0=recipe.alpha, beta_s=recipe.beta_s,
                                          beta_m=1.0 - recipe.beta_s, motion_prompt=recipe.motion_prompt,
                                          subject_prompt=subject_branch_prompt(recipe, prompt),
                                          region_weights=tuple(recipe.region_weights) if regional else None),
                          noise_prior_beta=recipe.noise_prior_beta if noise_prior else 0.0)


def generate_with(model, artifact, prompt: str, recipe: Recipe, seed: int, prior_from=None) -> torch.Tensor:
    """Plain sampling with one artifact's adapter (or the base model when ``artifact`` is None).

    ``prior_from``: a motion artifact whose inverted reference starts the sampling (the paper's
    noise prior, ``recipe.noise_prior_beta``), as the pipeline does whenever a motion is used.
    """
    from ..artifacts import apply_artifact
    from ..diffusion import decode_latents
    from ..lora import delete_lora
    from ..sampling import ddim_sample, noise_prior_latents

    adapters = []
    settings = sample_settings(recipe, seed)
    try:
        if artifact is not None:
            apply_artifact(model, artifact, "probe", "artifact")
            adapters = ["probe"]
        x_t = None
        if prior_from is not None:
            x_t = noise_prior_latents(model, settings, prior_from.reference_latents, recipe.noise_prior_beta)
        return decode_latents(model, ddim_sample(model, prompt, settings, adapters=adapters, latents=x_t))
    finally:
        if "probe" in model.adapters:
            delete_lora(model, "probe")


# --------------------------------------------------------------------------- measures


def measure_customized(frames, subjects: tuple[ObjectSpec, ObjectSpec], reference: Clip) -> dict:
    """The five ``make quality`` measures (+ interaction accuracy) of one two-subject video.

    subject_fidelity: mean of both subjects' fidelity, counted where both are shown together
    (:func:`measures.pair_subject_fidelity`); motion_fidelity: trajectory match to the
    reference; leakage: the reference objects' appearance in the output; binding; temporal
    consistency; interaction: 1 when the detected interaction is the reference's and both objects
    are present and apart in at least 3/4 of the frames (:func:`measures.pair_valid_fraction`);
    subject_hue / subject_shape: subject fidelity's parts (:func:`measures.pair_subject_parts`; for plain
    subjects, ShapesWorld's, their mean is subject fidelity). A video with fewer than two detectable objects scores :data:`FAILED` (``failed`` = 1).
    """
    arr = np.asarray(frames.float().numpy() if isinstance(frames, torch.Tensor) else frames)
    objs = list(subjects)
    try:
        an = M.analyze(arr, 2)
        if len(an.objects) < 2:
            raise ValueError("fewer than two objects")
        tracks = [o.trajectory() for o in an.objects[:2]]
        size = float(min(arr.shape[1:3]))
        found, _ = M.classify_interaction(tracks[0], tracks[1], size)
        if M.pair_valid_fraction(an) < 0.75:  # one object gone or merged into the other in 1/4 of the frames
            found = "none"
        out = {
            "subject_fidelity": M.pair_subject_fidelity(an, objs),
            "motion_fidelity": float(M.motion_fidelity(an, reference)),
            "leakage": float(M.appearance_leakage(an, objs, list(reference.spec.objects))),
            "binding": float(M.attribute_binding(an, objs)),
            "temporal_consistency": float(M.temporal_consistency(an, 2)),
            "interaction": float(found == reference.spec.motion),
            **{f"subject_{k}": v for k, v in M.pair_subject_parts(an, objs).items()},
            "failed": 0,
        }
    except (ValueError, IndexError):
        out = {**FAILED, "failed": 1}
    return out


def measure_subject(frames, subject: ObjectSpec) -> float:
    """Fidelity of the single object of a one-subject video to ``subject`` (0 when none is found)."""
    arr = np.asarray(frames.float().numpy() if isinstance(frames, torch.Tensor) else frames)
    try:
        return float(M.subject_fidelity(arr, subject, 1))
    except (ValueError, IndexError):
        return 0.0


def measure_subject_parts(frames, subject: ObjectSpec) -> dict:
    """:func:`measure_subject` split into its parts: hue, shape and texture (None for a plain subject); zeros
    when no object is found. :func:`measure_subject` is the mean of those that are not None."""
    arr = np.asarray(frames.float().numpy() if isinstance(frames, torch.Tensor) else frames)
    try:
        return M.subject_parts(arr, subject, 1)
    except (ValueError, IndexError):
        return M.no_object_parts(subject)


def measure_motion(frames, reference: Clip) -> float:
    """Motion fidelity of a two-object video to the reference clip (0 when it has no two objects)."""
    arr = np.asarray(frames.float().numpy() if isinstance(frames, torch.Tensor) else frames)
    try:
        return float(M.motion_fidelity(arr, reference))
    except (ValueError, IndexError):
        return 0.0


def round_trip(model, frames: torch.Tensor) -> torch.Tensor:
    """Frames ``[F, H, W, 3]`` through the model's VAE and back: what a perfect UNet could output."""
    from ..diffusion import decode_latents, encode_video

    with torch.no_grad():
        return decode_latents(model, encode_video(model, frames))


def vae_ceiling(model, subjects, references, recipe: Recipe, seed: int = 0) -> dict:
    """Subject fidelity of the subjects' own images (as still videos) and motion fidelity of the
    reference clips, after a VAE round trip: the most any sampler can score through this VAE."""
    sub = []
    for k, subj in enumerate(subjects):
        images, _ = subject_images(subj, seed + k, recipe.size, recipe.images)
        sub += [measure_subject(round_trip(model, im[None].repeat(recipe.frames, 1, 1, 1)), subj) for im in images]
    mot = [measure_motion(round_trip(model, torch.from_numpy(ref.frames).float()), ref) for ref in references]
    return {"subject_fidelity": sub, "motion_fidelity": mot}


def recipe_dict(recipe: Recipe) -> dict:
    return asdict(recipe)


__all__ = ["HELD_OUT_INTERACTIONS", "MEASURES", "Recipe", "customized_prompt", "fuse_artifact", "generate",
           "generate_with", "measure_customized", "measure_motion", "measure_subject", "measure_subject_parts",
           "reference_clip",
           "round_trip", "subject_images", "subject_pairs", "subjects_stage_prompt", "train_motion_artifact",
           "train_motiondirector_artifact", "train_subject_artifact", "vae_ceiling"]
