"""The paper's evaluation metrics (``shared/method.md`` section 5): CLIP-T, CLIP-I, DINO-I and
temporal consistency, computed as DreamVideo's evaluation script does.

Every score is a mean of cosine similarities between L2-normalised embeddings, with no rescaling,
no x100 and no clamp (DreamVideo averages the normalised frame embeddings first and then takes dot
products, which is the same number by linearity):

- CLIP-T: mean over frames of cos(CLIP image embedding of the frame, CLIP text embedding of the
  prompt); the projected embeddings (``get_image_features`` / ``get_text_features``).
- CLIP-I: mean over frames x subject reference images of cos(CLIP frame, CLIP reference).
- DINO-I: the same with a DINO ViT (``ViTModel``, facebook/dino-vits16 layout), embedding = CLS
  token of ``last_hidden_state`` (after the final LayerNorm, as DINO's own ``vit_small`` returns).
- Temporal consistency: mean over consecutive frame pairs of cos(CLIP frame i, CLIP frame i+1).

Images are ComfyUI IMAGE tensors ``[N, H, W, 3]`` in 0..1. Preprocessing reproduces DreamVideo's
torchvision pipelines without torchvision: quantise to uint8 as a saved video/image file holds it,
PIL bicubic resize of the shorter side, centre crop (torchvision's rounding), ``/255``, normalise.
CLIP (OpenAI ``clip.load`` preprocess): shorter side to the model's input size, crop to it.
DINO: shorter side to 256/224 of the input size (256 for 224), crop to the input size; note that
this is *not* what the hub's dino-vits16 processor does (it squashes to 224x224).
Mean and std come from the folder's ``preprocessor_config.json`` (OpenAI CLIP / ImageNet
defaults when it is absent).

Encoders are loaded from local ``save_pretrained`` folders only (safetensors weights); nothing is
downloaded. ``videomage_core.tiny_encoders`` writes tiny random folders of the same layout.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import VideoMageInputError, require
from .model import resolve_dtype

__all__ = [
    "ClipEncoder", "DinoEncoder", "ImageTransform", "load_clip", "load_dino", "check_images",
    "clip_t", "clip_i", "dino_i", "temporal_consistency", "evaluate_video",
    "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "IMAGENET_MEAN", "IMAGENET_STD",
]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINO_RESIZE_RATIO = 256 / 224  # DreamVideo / DreamBooth eval: Resize(256) then CenterCrop(224)
RANGE_TOLERANCE = 1e-3  # images may overshoot 0..1 by this much (then clamped); more is an error
EMBED_BATCH = 32  # images per encoder forward


@dataclass(frozen=True)
class ImageTransform:
    """Shorter side to ``resize`` (PIL bicubic), centre crop ``crop`` x ``crop``, normalise."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, H, W, 3]`` floats in 0..1 -> ``[N, 3, crop, crop]`` float32 pixel values."""
        # As ComfyUI writes images and videos to disk: clip, x255, truncate to uint8.
        u8 = (images.detach().float().clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        out = []
        for frame in u8:
            img = Image.fromarray(frame)
            w, h = img.size
            short, long = min(w, h), max(w, h)
            new_short, new_long = self.resize, int(self.resize * long / short)
            size = (new_short, new_long) if w <= h else (new_long, new_short)
            if size != (w, h):
                img = img.resize(size, Image.Resampling.BICUBIC)
            w, h = img.size
            top = int(round((h - self.crop) / 2.0))
            left = int(round((w - self.crop) / 2.0))
            img = img.crop((left, top, left + self.crop, top + self.crop))
            arr = (np.asarray(img, dtype=np.float32) / 255.0 - mean) / std
            out.append(torch.from_numpy(arr.transpose(2, 0, 1).copy()))
        return torch.stack(out)


def _projected(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor in transformers 4 and an output object whose
    ``pooler_output`` holds the projected embedding in transformers 5."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _embed_in_batches(images: torch.Tensor, transform: ImageTransform, forward) -> torch.Tensor:
    pixels = transform(images)
    feats = [forward(chunk).float() for chunk in pixels.split(EMBED_BATCH)]
    return F.normalize(torch.cat(feats), dim=-1).cpu()


class _OnDevice:
    model: torch.nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


@dataclass(eq=False)
class ClipEncoder(_OnDevice):
    """A frozen ``CLIPModel`` with its tokenizer and DreamVideo's CLIP image preprocessing."""

    model: torch.nn.Module
    tokenizer: Any
    transform: ImageTransform
    path: str

    @torch.inference_mode()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm projected CLIP image embeddings, ``[N, D]`` float32 on CPU."""
        def forward(pixels: torch.Tensor) -> torch.Tensor:
            return _projected(self.model.get_image_features(
                pixel_values=pixels.to(self.device, self.dtype)))
        return _embed_in_batches(images, self.transform, forward)

    @torch.inference_mode()
    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        """Unit-norm projected CLIP text embeddings, ``[len(prompts), D]`` float32 on CPU.
        Prompts longer than the text model's context (77 tokens) are truncated."""
        max_len = min(self.tokenizer.model_max_length,
                      self.model.config.text_config.max_position_embeddings)
        tokens = self.tokenizer(prompts, padding=True, truncation=True, max_length=max_len,
                                return_tensors="pt")
        feats = _projected(self.model.get_text_features(
            input_ids=tokens["input_ids"].to(self.device),
            attention_mask=tokens["attention_mask"].to(self.device)))
        return F.normalize(feats.float(), dim=-1).cpu()


@dataclass(eq=False)
class DinoEncoder(_OnDevice):
    """A frozen DINO ``ViTModel`` with DreamVideo's DINO image preprocessing."""

    model: torch.nn.Module
    transform: ImageTransform
    path: str

    @torch.inference_mode()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm CLS tokens of ``last_hidden_state``, ``[N, D]`` float32 on CPU."""
        def forward(pixels: torch.Tensor) -> torch.Tensor:
            out = self.model(pixel_values=pixels.to(self.device, self.dtype))
            return out.last_hidden_state[:, 0]
        return _embed_in_batches(images, self.transform, forward)


# ---------------------------------------------------------------------------------------------
# Loading


def _check_encoder_folder(folder: str | os.PathLike, input_name: str, kind: str,
                          model_type: str, weights_hint: str = "") -> Path:
    path = Path(folder)
    require(path.is_dir() and (path / "config.json").is_file(), input_name,
            f"no {kind} model folder at '{folder}' (expected a local save_pretrained folder with "
            "config.json and model.safetensors; nothing is downloaded)")
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    found = config.get("model_type")
    require(found == model_type, input_name,
            f"'{folder}' holds a '{found}' model, not a {kind} model (model_type '{model_type}')")
    require(any(path.glob("*.safetensors")), input_name,
            f"'{folder}' has no .safetensors weights (pickled .bin weights are not loaded: "
            f"convert them to safetensors{weights_hint})")
    return path


def _mean_std(path: Path, default_mean: tuple, default_std: tuple) -> tuple[tuple, tuple]:
    cfg_file = path / "preprocessor_config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
    mean = tuple(float(v) for v in cfg.get("image_mean", default_mean))
    std = tuple(float(v) for v in cfg.get("image_std", default_std))
    return mean, std


def _square_size(size: Any, input_name: str, folder: str | os.PathLike) -> int:
    if isinstance(size, (list, tuple)):
        require(len(size) == 2 and size[0] == size[1], input_name,
                f"'{folder}' has a non-square input size {list(size)}")
        size = size[0]
    return int(size)


def load_clip(folder: str | os.PathLike, device: str | torch.device = "cpu",
              dtype: str | torch.dtype = torch.float32, input_name: str = "clip_dir") -> ClipEncoder:
    """Load a CLIP model (e.g. openai/clip-vit-base-patch32, the paper's ViT-B/32), its tokenizer
    and preprocessing from a local folder, frozen, for CLIP-T / CLIP-I / temporal consistency
    (``shared/method.md`` section 5). Raises :class:`VideoMageInputError` (a ``ValueError``)
    naming ``input_name`` when ``folder`` is not such a folder."""
    from transformers import AutoTokenizer, CLIPModel

    path = _check_encoder_folder(folder, input_name, "CLIP", "clip")
    require(any((path / f).is_file() for f in ("tokenizer.json", "vocab.json")), input_name,
            f"'{folder}' has no CLIP tokenizer (tokenizer.json or vocab.json + merges.txt)")
    try:
        model = CLIPModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise VideoMageInputError(input_name, f"could not load '{folder}' as a CLIP model "
                                  f"folder: {exc}") from exc
    model.requires_grad_(False).eval().to(device=torch.device(device), dtype=resolve_dtype(dtype))
    size = _square_size(model.config.vision_config.image_size, input_name, folder)
    mean, std = _mean_std(path, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    return ClipEncoder(model=model, tokenizer=tokenizer, path=str(path),
                       transform=ImageTransform(resize=size, crop=size, mean=mean, std=std))


def load_dino(folder: str | os.PathLike, device: str | torch.device = "cpu",
              dtype: str | torch.dtype = torch.float32, input_name: str = "dino_dir") -> DinoEncoder:
    """Load a DINO ViT (``ViTModel``, e.g. facebook/dino-vits16, the paper's DINO ViT-S/16) from a
    local folder, frozen, for DINO-I (``shared/method.md`` section 5). Raises
    :class:`VideoMageInputError` (a ``ValueError``) naming ``input_name`` when ``folder`` is not
    such a folder."""
    from transformers import ViTModel

    path = _check_encoder_folder(folder, input_name, "DINO ViT", "vit", weights_hint=(
        "; facebook/dino-vits16 has model.safetensors only on its hub revision refs/pr/1"))
    try:
        model = ViTModel.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                         add_pooling_layer=False)
    except (OSError, ValueError, KeyError) as exc:
        raise VideoMageInputError(input_name, f"could not load '{folder}' as a DINO ViT model "
                                  f"folder: {exc}") from exc
    model.requires_grad_(False).eval().to(device=torch.device(device), dtype=resolve_dtype(dtype))
    size = _square_size(model.config.image_size, input_name, folder)
    mean, std = _mean_std(path, IMAGENET_MEAN, IMAGENET_STD)
    return DinoEncoder(model=model, path=str(path), transform=ImageTransform(
        resize=int(round(size * DINO_RESIZE_RATIO)), crop=size, mean=mean, std=std))


# ---------------------------------------------------------------------------------------------
# Metrics


def check_images(images: Any, input_name: str, min_count: int = 1) -> torch.Tensor:
    """Raise :class:`VideoMageInputError` unless ``images`` is a float ``[N, H, W, 3]`` tensor in
    0..1 (ComfyUI IMAGE) with ``N >= min_count``; returns it."""
    require(isinstance(images, torch.Tensor), input_name,
            f"expected a float tensor [N, H, W, 3] in 0..1, got {type(images).__name__}")
    require(images.ndim == 4 and images.shape[-1] == 3, input_name,
            f"expected shape [N, H, W, 3] (ComfyUI IMAGE), got {list(images.shape)}")
    require(images.is_floating_point(), input_name, f"expected a float tensor, got {images.dtype}")
    require(images.shape[0] >= min_count, input_name,
            f"needs at least {min_count} image(s), got {images.shape[0]}")
    require(images.shape[1] > 0 and images.shape[2] > 0, input_name,
            f"has an empty image size {list(images.shape[1:3])}")
    require(bool(torch.isfinite(images).all()), input_name, "contains NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    require(lo >= -RANGE_TOLERANCE and hi <= 1 + RANGE_TOLERANCE, input_name,
            f"values must lie in 0..1, got {lo:.4g}..{hi:.4g}")
    return images


def _check_prompt(prompt: Any) -> str:
    require(isinstance(prompt, str) and prompt.strip() != "", "prompt",
            f"expected a non-empty text prompt, got {prompt!r}")
    return prompt


def _check_encoder(encoder: Any, cls: type, input_name: str, loader: str) -> None:
    require(isinstance(encoder, cls), input_name,
            f"expected a {cls.__name__} from {loader}(folder), got {type(encoder).__name__}")


def _mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over all pairs (rows of ``a`` x rows of ``b``) of the dot product of unit vectors."""
    return float((a.double() @ b.double().T).mean())


def _consecutive_cosine(emb: torch.Tensor) -> float:
    return float((emb[:-1].double() * emb[1:].double()).sum(-1).mean())


def clip_t(frames: torch.Tensor, prompt: str, clip: ClipEncoder) -> float:
    """CLIP-T: mean over frames of cos(CLIP image emb of frame, CLIP text emb of ``prompt``)."""
    _check_encoder(clip, ClipEncoder, "clip", "load_clip")
    check_images(frames, "frames")
    return _mean_cosine(clip.embed_images(frames), clip.embed_text([_check_prompt(prompt)]))


def clip_i(frames: torch.Tensor, ref_images: torch.Tensor, clip: ClipEncoder) -> float:
    """CLIP-I: mean over frames x reference images of cos(CLIP frame, CLIP reference)."""
    _check_encoder(clip, ClipEncoder, "clip", "load_clip")
    check_images(frames, "frames")
    check_images(ref_images, "ref_images")
    return _mean_cosine(clip.embed_images(frames), clip.embed_images(ref_images))


def dino_i(frames: torch.Tensor, ref_images: torch.Tensor, dino: DinoEncoder) -> float:
    """DINO-I: mean over frames x reference images of cos(DINO CLS frame, DINO CLS reference)."""
    _check_encoder(dino, DinoEncoder, "dino", "load_dino")
    check_images(frames, "frames")
    check_images(ref_images, "ref_images")
    return _mean_cosine(dino.embed_images(frames), dino.embed_images(ref_images))


def temporal_consistency(frames: torch.Tensor, clip: ClipEncoder) -> float:
    """Temporal consistency: mean over consecutive pairs of cos(CLIP frame i, CLIP frame i+1)."""
    _check_encoder(clip, ClipEncoder, "clip", "load_clip")
    check_images(frames, "frames", min_count=2)
    return _consecutive_cosine(clip.embed_images(frames))


def evaluate_video(frames: torch.Tensor, prompt: str | None, ref_images: torch.Tensor | None,
                   clip: ClipEncoder | None = None, dino: DinoEncoder | None = None
                   ) -> dict[str, float]:
    """All metrics of ``shared/method.md`` section 5 that the given inputs allow, each frame
    embedded once per encoder. Keys, in this order, when computable: ``clip_t`` (clip and a
    prompt), ``clip_i`` (clip and ref_images), ``dino_i`` (dino and ref_images),
    ``temporal_consistency`` (clip and at least 2 frames). ``prompt`` / ``ref_images`` may be
    None to skip their metrics; a given but empty one is an error."""
    require(clip is not None or dino is not None, "clip",
            "evaluate_video needs a CLIP encoder (load_clip) and/or a DINO encoder (load_dino)")
    if clip is not None:
        _check_encoder(clip, ClipEncoder, "clip", "load_clip")
    if dino is not None:
        _check_encoder(dino, DinoEncoder, "dino", "load_dino")
    check_images(frames, "frames")
    if prompt is not None:
        _check_prompt(prompt)
    if ref_images is not None:
        check_images(ref_images, "ref_images")

    scores: dict[str, float] = {}
    frame_emb = clip.embed_images(frames) if clip is not None else None
    if clip is not None and prompt is not None:
        scores["clip_t"] = _mean_cosine(frame_emb, clip.embed_text([prompt]))
    if clip is not None and ref_images is not None:
        scores["clip_i"] = _mean_cosine(frame_emb, clip.embed_images(ref_images))
    if dino is not None and ref_images is not None:
        scores["dino_i"] = _mean_cosine(dino.embed_images(frames), dino.embed_images(ref_images))
    if clip is not None and frames.shape[0] >= 2:
        scores["temporal_consistency"] = _consecutive_cosine(frame_emb)
    return scores
