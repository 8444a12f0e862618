"""``python -m videomage_core``: tiny-model, export, train-subject, train-motion, fuse, sample, demo."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .bases import COVERAGES, FAMILIES
from .errors import (IncompatibleArtifactError, NonFiniteLossError, TrainingCancelled, VideoMageInputError,
                     require)


def terminal_progress(info) -> None:
    """Print one updating line per stage: ``[subject] 120/300 loss 0.1234 L_sub 0.1 L_reg 0.02``, or
    ``[prior_videos] 30/100 1.2 s/step`` for a generation stage. Losses keep 4 significant digits
    (L_fusion is about 1e-5)."""
    if info.has_loss:
        parts = " ".join(f"{k} {float(v):.4g}" for k, v in info.parts.items())
        text = f"loss {info.loss:.4g} {parts}"
    else:
        text = f"{info.seconds:.2f} s/step"
    end = "\n" if info.step == info.total else ""
    print(f"\r[{info.stage}] {info.step}/{info.total} {text}   ", end=end, flush=True)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help ends with its default, where it has one."""

    def _get_help_string(self, action):
        if action.required or action.default in (None, argparse.SUPPRESS) or not action.help:
            return action.help
        return super()._get_help_string(action)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 576x320, got '{text}'") from exc
    return w, h


def _model_args(p):
    p.add_argument("--model", required=True, help="a diffusers model folder (ZeroScope, or AnimateDiff: an "
                   "AnimateDiffPipeline folder or an SD1.5 folder with motion_adapter/), 'shapesworld_builtin' "
                   "for the built-in ShapesWorld model, an SD1.5 checkpoint file (with --motion-module), or a Wan "
                   "diffusion model file (with --text-encoder and --vae)")
    p.add_argument("--motion-module", help="with an SD1.5 checkpoint file as --model: an AnimateDiff motion "
                   "module (.safetensors, or .ckpt / .pt read weights-only)")
    p.add_argument("--tokenizer", help="with a checkpoint file: a CLIP tokenizer folder (vocab.json + "
                   "merges.txt), e.g. ComfyUI's comfy/sd1_tokenizer or an SD1.5 folder's tokenizer/")
    p.add_argument("--text-encoder", help="with a Wan diffusion model file as --model: ComfyUI's umT5-XXL file "
                   "(models/text_encoders; its tokenizer is inside)")
    p.add_argument("--vae", help="with a Wan diffusion model file as --model: the Wan 2.1 VAE (models/vae)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="auto: bf16 on a GPU with native bf16, else fp16 (training scales its loss), "
                   "fp32 on the CPU")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (same seed, same result)")
    p.add_argument("--size", type=_size, help="WIDTHxHEIGHT, multiples of 8 (default: the model's own, "
                   "videomage.json, else 576x320)")


def _train_args(p, steps=300):
    p.add_argument("--steps", type=int, default=steps, help="optimiser steps (with --checkpoint, more steps "
                   "continue a finished run)")
    p.add_argument("--rank", type=int, default=4, help="LoRA rank")
    p.add_argument("--lr-lora", type=float, default=1e-4, help="LoRA learning rate")
    p.add_argument("--checkpoint", help="checkpoint file to resume from / write to (every 50 steps, on "
                   "cancel and on Ctrl-C; train-motion also writes FILE.inversion for its textual inversion); "
                   "a file that is not this run's checkpoint is refused, never overwritten")
    p.add_argument("--gradient-checkpointing", nargs="?", const="on", default="auto",
                   choices=["auto", "on", "off"],
                   help="recompute activations in the backward (less GPU memory, slower, same result); auto: "
                   "on when the memory estimate says the step would not fit the GPU")
    p.add_argument("--out", required=True, help="output .safetensors file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m videomage_core",
                                     description="VideoMage: multi-subject and motion customization "
                                                 "of text-to-video diffusion models")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tiny-model", formatter_class=_Help, help="build a tiny random model folder of a base's layout")
    p.add_argument("folder", help="folder to create (refused if it holds something else)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--base", default="zeroscope", choices=list(FAMILIES),
                   help="the base family whose layout it has")

    p = sub.add_parser("export", formatter_class=_Help,
                       help="write a subject or motion in the formats ComfyUI's own nodes load (AnimateDiff)")
    p.add_argument("artifact", help="a VideoMage subject or motion .safetensors")
    p.add_argument("--out", required=True, help="ComfyUI's models folder (or any folder): files go into its "
                   "loras/, embeddings/ and animatediff_motion_lora/ sub-folders, never over an existing file")
    p.add_argument("--name", help="file name stem (default: the artifact's file name)")

    p = sub.add_parser("train-subject", formatter_class=_Help, help="learn a subject (token + spatial LoRA) from 3-5 images")
    _model_args(p)
    _train_args(p)
    p.add_argument("--images", nargs="+", required=True, help="image files or a folder (alpha = mask)")
    p.add_argument("--token", required=True, help="new token, e.g. '<my_toy>'")
    p.add_argument("--superclass", required=True, help="its class word, e.g. 'toy'")
    p.add_argument("--lr-token", type=float, default=1e-3, help="the token's learning rate")
    p.add_argument("--lambda1", type=float, default=0.25, help="weight of L_reg (prior preservation)")
    p.add_argument("--aux-video", nargs=2, action="append", metavar=("VIDEO", "CAPTION"),
                   help="auxiliary video + caption for L_reg (repeatable); default: prior videos")
    p.add_argument("--image-captions", help="beyond the paper: a text file with one caption per image, one "
                   "per line, in --images' order (a folder's files sort by name), each naming the subject as "
                   "{token} or the token itself; default: 'A <token>' for every image")
    p.add_argument("--cache-dir", default="outputs/cache", help="where generated prior videos are cached")

    p = sub.add_parser("train-motion", formatter_class=_Help, help="learn a motion (temporal LoRA) from a reference video")
    _model_args(p)
    _train_args(p)
    p.add_argument("--video", required=True, help="folder of frames or animated GIF/WEBP")
    p.add_argument("--prompt", required=True, help="motion prompt, e.g. 'a person riding a horse'")
    p.add_argument("--subjects", required=True, help="reference subjects' words, e.g. 'person,horse'")
    p.add_argument("--masks", nargs="*", help="one mask image per subject for the chosen frame")
    p.add_argument("--frame-index", type=int, help="frame for the reference subjects' textual inversion "
                   "(default: the middle one)")
    p.add_argument("--frames", type=int, help="frames sampled uniformly over the clip (a shorter clip "
                   "is used whole); default: the model's own, else 24 (ZeroScope)")
    p.add_argument("--omega", type=float, default=0.5, help="appearance-free target's weight (0: the plain "
                   "loss, the 'w/o L_mot' ablation)")
    p.add_argument("--inversion-steps", type=int, default=300, help="textual-inversion steps of the reference "
                   "subjects")
    p.add_argument("--lr-token", type=float, default=1e-3, help="the reference tokens' learning rate")
    p.add_argument("--coverage", choices=COVERAGES, default="attention", help="the layers the motion LoRA trains: "
                   "the temporal attention projections (the paper), or every Linear of the temporal transformers "
                   "(all_linear, MotionDirector's; ZeroScope-layout models)")

    p = sub.add_parser("fuse", formatter_class=_Help, help="fuse 2+ subjects into one LoRA (L_fusion + lambda2 L_attn)")
    _model_args(p)
    _train_args(p)
    p.add_argument("--subject", action="append", required=True, help="subject .safetensors (2+)")
    p.add_argument("--lambda2", type=float, default=0.6, help="weight of L_attn (0: the 'w/o L_attn' ablation)")
    p.add_argument("--frames", type=int, default=8, help="frames of each generated and CutMix video")
    p.add_argument("--generation-steps", type=int, default=25, help="DDIM steps of the generated videos")
    p.add_argument("--cache-dir", default="outputs/cache", help="where generated videos are cached")

    p = sub.add_parser("sample", formatter_class=_Help, help="generate a video with SCS (or w/o SCS)")
    _model_args(p)
    p.add_argument("--subject", required=True, help="(fused) subject .safetensors")
    p.add_argument("--motion", help="motion .safetensors (required for SCS)")
    p.add_argument("--prompt", required=True, help="prompt with the tokens, e.g. 'A <toy> rides a <dog>'")
    p.add_argument("--mode", default="scs", choices=["scs", "wo_scs"],
                   help="scs: Algorithm 1; wo_scs: both LoRAs at once, plain sampling (the ablation)")
    p.add_argument("--frames", type=int, help="default: the motion's (what it was trained on), else the "
                   "model's own, else 24 (the paper)")
    p.add_argument("--steps", type=int, help="DDIM steps; default: the model's own, else 50 (the paper)")
    p.add_argument("--cfg", type=float, help="default: the model's own, else 9.0 (the paper)")
    p.add_argument("--tau", type=int, default=15, help="guided steps (the first tau of the DDIM steps)")
    p.add_argument("--alpha", type=float, help="SCS step size alpha_0; default: the model's scs_alpha, else "
                   "1e4 (the paper); with --step-mode normalized the relative step ||step||/||x|| (default "
                   "the model's scs_relative_step, else 0.02)")
    p.add_argument("--step-mode", default="paper", choices=["paper", "normalized"],
                   help="paper: Algorithm 1's alpha_t * grad (alpha depends on frames, size, levels); "
                   "normalized: alpha_t is the relative step at any size")
    p.add_argument("--scs-gradient-checkpointing", action="store_true",
                   help="recompute the guided pass's activations in its backward (less memory, slower)")
    p.add_argument("--beta-s", type=float, default=0.5, help="weight of the subject branch's prediction")
    p.add_argument("--beta-m", type=float, default=0.5, help="weight of the motion branch's prediction")
    p.add_argument("--noise-prior-beta", type=float, default=0.3, help="share of the inverted reference in "
                   "the initial noise (0: plain noise)")
    p.add_argument("--motion-2", help="beyond the paper (Customize-A-Video): a second motion .safetensors, "
                   "active with the first (its noise prior stays the first's)")
    p.add_argument("--motion-2-weight", type=float, default=1.0, help="the second motion LoRA's weight (0..2)")
    p.add_argument("--subject-early-scale", type=float, default=1.0, help="beyond the paper (CustomCrafter): "
                   "the subject LoRA's scale (0..1) during the first --subject-early-steps steps")
    p.add_argument("--subject-early-steps", type=int, default=0, help="steps that use --subject-early-scale "
                   "(0: off)")
    p.add_argument("--region-weights", type=float, nargs=2, metavar=("OUTSIDE", "INSIDE"),
                   help="beyond the paper, SCS only: the subject branch's share of each DDIM step where its tokens "
                   "are not attended / attended most (its cross-attention maps), e.g. 0.2 0.9; default: "
                   "--beta-s / --beta-m everywhere (the paper)")
    p.add_argument("--fps", type=float, default=8.0, help="frame rate of the written animation")
    p.add_argument("--out", required=True, help="output .webp or .gif")

    p = sub.add_parser("demo", formatter_class=_Help, help="the whole pipeline on built-in inputs (no download)")
    p.add_argument("--out", default="outputs/demo", help="output folder")
    p.add_argument("--scale", default="demo", choices=["demo", "test"],
                   help="'test' runs in seconds (tiny steps); 'demo' takes a few minutes")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs and of every random draw")
    p.add_argument("--model", help="model folder or 'shapesworld_builtin' (default: the built-in model)")
    return parser


def _or_model(value, model, name: str, paper):
    """A flag's value, else the model's own sampling default (videomage.json), else the paper's."""
    return value if value is not None else type(paper)(model.default(name, paper))


def _size_for(args, model) -> tuple[int, int]:
    if args.size is not None:
        return args.size
    return _or_model(None, model, "width", 576), _or_model(None, model, "height", 320)


def check_output(args) -> None:
    """Flags checked before a model loads, so that a typo costs no training or sampling time."""
    if args.command == "sample":
        require(args.fps > 0, "--fps", f"expected a positive frame rate, got {args.fps}")
        require(str(args.out).lower().endswith((".webp", ".gif")), "--out",
                f"expected a .webp or .gif file, got '{args.out}'")
    else:
        require(str(args.out).lower().endswith(".safetensors"), "--out",
                f"expected a .safetensors file, got '{args.out}'")


def _captions(path) -> tuple[str, ...] | None:
    """--image-captions: the file's non-empty lines, or None without the flag."""
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VideoMageInputError("--image-captions", f"cannot read '{path}' as UTF-8 text ({exc})") from None
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _checkpointing(args):
    from .preflight import parse_checkpointing

    return parse_checkpointing(args.gradient_checkpointing)


def _preflight(model, stage, settings, input_name="--gradient-checkpointing", **shape):
    """A clear error before the stage starts if its estimated peak will not fit the GPU."""
    from .preflight import check_memory

    check_memory(model, stage, settings, input_name, **shape)


def _load(args):
    from .model import load_animatediff_files, load_model, load_wan_files
    from .pretrained import resolve_model_path

    if args.text_encoder or args.vae:
        require(bool(args.text_encoder and args.vae), "text_encoder", "a Wan diffusion model file needs both "
                "--text-encoder (umT5-XXL) and --vae (the Wan VAE)")
        model = load_wan_files(args.model, args.text_encoder, args.vae, args.dtype, args.device)
    elif Path(args.model).is_file() or args.motion_module:
        require(bool(args.motion_module), "motion_module", f"'{args.model}' is a file: an SD1.5 checkpoint "
                "needs --motion-module (an AnimateDiff motion module) and --tokenizer; a Wan diffusion model "
                "needs --text-encoder and --vae")
        model = load_animatediff_files(args.model, args.motion_module, args.tokenizer, args.dtype, args.device)
    else:
        model = load_model(resolve_model_path(args.model), args.dtype, args.device)
    print(f"model: {str(model.dtype).replace('torch.', '')} on {model.device} ({model.dtype_reason})",
          file=sys.stderr)
    return model


def run(args) -> int:
    from . import artifacts

    if args.command == "tiny-model":
        from .tiny import build_tiny_model

        print(build_tiny_model(args.folder, seed=args.seed, base=args.base))
        return 0
    if args.command == "demo":
        from .demo import run_demo
        from .pretrained import resolve_model_path

        model_dir = resolve_model_path(args.model) if args.model else None
        report = run_demo(args.out, scale=args.scale, seed=args.seed, model_dir=model_dir,
                          callback=terminal_progress)
        print(f"wrote {args.out} ({report['timings']['total']:.1f} s)")
        return 0
    if args.command == "export":
        from .artifacts import load_artifact
        from .export import export_artifact, usage

        art = load_artifact(args.artifact, input_name="artifact")
        name = args.name or Path(args.artifact).stem
        for line in usage(export_artifact(art, name, lambda kind: Path(args.out) / kind)):
            print(line)
        return 0
    check_output(args)
    if args.command == "train-subject":
        from .data import load_image_files
        from .subject import SubjectSettings, image_count_note, train_subject
        from .video_io import load_video

        images, masks = load_image_files(args.images, "--images")
        note = image_count_note(images.shape[0])
        if note:
            print(note, file=sys.stderr)
        model = _load(args)
        width, height = _size_for(args, model)
        aux = [(load_video(v, "--aux-video"), c) for v, c in (args.aux_video or [])]
        settings = SubjectSettings(token=args.token, superclass=args.superclass, steps=args.steps,
                                   rank=args.rank, lr_lora=args.lr_lora, lr_token=args.lr_token,
                                   lambda1=args.lambda1, seed=args.seed, height=height, width=width,
                                   image_captions=_captions(args.image_captions),
                                   gradient_checkpointing=_checkpointing(args))
        _preflight(model, "subject", settings, images=images.shape[0])
        art = train_subject(model, images, settings, masks=masks, aux_videos=aux or None,
                            callback=terminal_progress, checkpoint_path=args.checkpoint,
                            cache_dir=args.cache_dir)
    elif args.command == "train-motion":
        from .data import load_image_files
        from .motion import MotionSettings, train_motion
        from .video_io import load_video

        video = load_video(args.video, "--video")
        masks = None
        if args.masks:
            m_imgs, alpha = load_image_files(args.masks, "--masks")
            masks = alpha if alpha is not None else m_imgs.mean(-1)
        model = _load(args)
        width, height = _size_for(args, model)
        settings = MotionSettings(motion_prompt=args.prompt,
                                  reference_words=tuple(w.strip() for w in args.subjects.split(",")),
                                  omega=args.omega, steps=args.steps, inversion_steps=args.inversion_steps,
                                  rank=args.rank, lr_lora=args.lr_lora, lr_token=args.lr_token,
                                  seed=args.seed, height=height, width=width, frame_index=args.frame_index,
                                  frames=args.frames, coverage=args.coverage,
                                  gradient_checkpointing=_checkpointing(args))
        _preflight(model, "motion", settings, images=len(settings.reference_words),
                   video_frames=video.shape[0])
        art = train_motion(model, video, settings, masks=masks, callback=terminal_progress,
                           checkpoint_path=args.checkpoint)
    elif args.command == "fuse":
        from .fusion import FusionSettings, fuse_subjects

        subjects = [artifacts.load_artifact(p, "subject", "--subject") for p in args.subject]
        model = _load(args)
        width, height = _size_for(args, model)
        settings = FusionSettings(steps=args.steps, lambda2=args.lambda2, lr_lora=args.lr_lora,
                                  seed=args.seed, frames=args.frames, height=height, width=width,
                                  generation_steps=args.generation_steps,
                                  gradient_checkpointing=_checkpointing(args))
        _preflight(model, "fusion", settings, subjects=len(subjects), ranks=sum(a.rank for a in subjects))
        art = fuse_subjects(model, subjects, settings, callback=terminal_progress,
                            checkpoint_path=args.checkpoint, cache_dir=args.cache_dir)
    elif args.command == "sample":
        from .pipeline import generate_video, motion_frames
        from .sampling import SampleSettings, SCSSettings, SCSStats
        from .video_io import save_animation

        subject = artifacts.load_artifact(args.subject, "subject", "--subject")
        motion = artifacts.load_artifact(args.motion, "motion", "--motion") if args.motion else None
        motion_2 = artifacts.load_artifact(args.motion_2, "motion", "--motion-2") if args.motion_2 else None
        model = _load(args)
        width, height = _size_for(args, model)
        frames = args.frames if args.frames is not None else motion_frames(motion)
        settings = SampleSettings(frames=_or_model(frames, model, "frames", 24), height=height,
                                  width=width, steps=_or_model(args.steps, model, "steps", 50),
                                  cfg=_or_model(args.cfg, model, "cfg", 9.0), seed=args.seed,
                                  subject_early_scale=args.subject_early_scale,
                                  subject_early_steps=args.subject_early_steps)
        scs = SCSSettings(tau=args.tau, alpha0=args.alpha, beta_s=args.beta_s, beta_m=args.beta_m,
                          step_mode=args.step_mode, gradient_checkpointing=args.scs_gradient_checkpointing,
                          region_weights=tuple(args.region_weights) if args.region_weights else None)
        _preflight(model, "sample", settings, "--frames", mode=args.mode, tau=scs.tau, ranks=subject.rank,
                   checkpointing=scs.gradient_checkpointing)
        stats = SCSStats()
        notes = []
        frames = generate_video(model, subject, motion, args.prompt, settings, mode=args.mode, scs=scs,
                                noise_prior_beta=args.noise_prior_beta, callback=terminal_progress,
                                notes=notes, stats=stats, motion_2=motion_2, motion_2_weight=args.motion_2_weight)
        if stats.relative_step_sub:
            print("SCS relative step ||alpha_t grad|| / ||x|| per guided step:\n  subject "
                  + " ".join(f"{v:.3g}" for v in stats.relative_step_sub) + "\n  motion  "
                  + " ".join(f"{v:.3g}" for v in stats.relative_step_mot), file=sys.stderr)
        for note in notes:
            print(note, file=sys.stderr)
        print(save_animation(frames, args.out, fps=args.fps))
        return 0
    if art.train_args.get("resumed_from"):
        print(f"resumed from step {art.train_args['resumed_from']} of the checkpoint {args.checkpoint}",
              file=sys.stderr)
    print(artifacts.save_artifact(art, args.out))
    return 0


# engine input names that are not the flag's own name
FLAG_OF_INPUT = {"model_path": "--model", "checkpoint_file": "--model", "motion_module": "--motion-module",
                 "diffusion_model": "--model", "text_encoder": "--text-encoder", "vae": "--vae",
                 "tokenizer": "--tokenizer", "width": "--size", "height": "--size", "reference_words": "--subjects",
                 "motion_prompt": "--prompt", "subjects": "--subject", "aux_videos": "--aux-video",
                 "alpha": "--alpha", "noise_prior_beta": "--noise-prior-beta"}


def user_error(exc: Exception, flags: dict[str, str]) -> str:
    """An engine error in the user's words: its input named as the flag they typed (``--model``, not
    ``model_path``), where there is one. ``flags``: the command's option dests -> their flag."""
    name = getattr(exc, "input_name", None)
    text = str(exc)
    if not name or not text.startswith(f"{name}: "):
        return text
    base = name.split("[")[0].split(" ")[0]  # 'subjects[1]' -> 'subjects'
    flag = FLAG_OF_INPUT.get(base) or flags.get(base)
    if flag is None:
        return text
    return f"{flag}{name[len(base):]}: {text[len(name) + 2:]}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = parser._subparsers._group_actions[0].choices[args.command]
    flags = {a.dest: a.option_strings[-1] for a in command._actions if a.option_strings}
    started = time.perf_counter()
    try:
        code = run(args)
    except (VideoMageInputError, IncompatibleArtifactError, NonFiniteLossError) as exc:
        print(f"\nerror: {user_error(exc, flags)}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, TrainingCancelled) as exc:
        ckpt = getattr(args, "checkpoint", None)
        kept = (f"; the steps done so far are in the checkpoint {ckpt} (run the same command again to resume)"
                if ckpt and Path(ckpt).is_file() else "")
        print(f"\ncancelled ({exc or 'Ctrl-C'}): no output was written{kept}", file=sys.stderr)
        return 130
    if args.command != "tiny-model":
        print(f"done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
