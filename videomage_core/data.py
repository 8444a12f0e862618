"""Input checks and preprocessing: images, masks and videos in ComfyUI's layout.

Images and video frames are float tensors ``[N, H, W, 3]`` in 0..1; masks ``[N, H, W]`` in 0..1.
Every check raises :class:`VideoMageInputError` naming the input.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import VideoMageInputError, require

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def to_cpu(tensor: torch.Tensor, input_name: str) -> torch.Tensor:
    """An input tensor on the CPU, wherever it came from (ComfyUI may hand CUDA tensors): the checks,
    crops and hashes below run there and the model's own device is reached in ``encode_video``.
    A tensor without data (the 'meta' device) is refused."""
    require(tensor.device.type != "meta", input_name,
            "the tensor has no data (it is on the 'meta' device); pass real pixel values")
    return tensor.detach().to("cpu")


def check_images(images, input_name: str = "images", min_count: int = 1) -> torch.Tensor:
    require(isinstance(images, torch.Tensor), input_name,
            f"expected an image tensor [N, H, W, 3], got {type(images).__name__}")
    images = to_cpu(images, input_name)
    require(images.ndim == 4 and images.shape[-1] in (3, 4), input_name,
            f"expected shape [N, H, W, 3], got {list(images.shape)}")
    require(images.shape[0] >= min_count, input_name,
            f"expected at least {min_count} image(s), got {images.shape[0]}")
    images = images[..., :3].float()
    require(bool(torch.isfinite(images).all()) and images.min() >= -1e-3 and images.max() <= 1 + 1e-3,
            input_name, "pixel values must be finite and within 0..1")
    return images.clamp(0, 1)


def check_masks(masks, images: torch.Tensor, input_name: str = "masks",
                images_name: str = "images") -> torch.Tensor | None:
    if masks is None:
        return None
    require(isinstance(masks, torch.Tensor), input_name, f"expected a mask tensor [N, H, W], got "
            f"{type(masks).__name__}")
    masks = to_cpu(masks, input_name)
    if masks.ndim == 2:
        masks = masks[None]
    require(masks.ndim == 3, input_name, f"expected shape [N, H, W], got {list(masks.shape)}")
    require(tuple(masks.shape[1:]) == tuple(images.shape[1:3]), input_name,
            f"mask size {masks.shape[2]}x{masks.shape[1]} does not match the {images_name} size "
            f"{images.shape[2]}x{images.shape[1]}")
    if masks.shape[0] == 1 and images.shape[0] > 1:
        masks = masks.expand(images.shape[0], -1, -1)
    require(masks.shape[0] == images.shape[0], input_name,
            f"{masks.shape[0]} masks for {images.shape[0]} {images_name}")
    masks = masks.float().clamp(0, 1)
    require(bool((masks.flatten(1).amax(1) > 0).all()), input_name, "a mask is empty (all zero)")
    return masks


def check_video(frames, input_name: str = "video") -> torch.Tensor:
    frames = check_images(frames, input_name)
    require(frames.shape[0] >= 2, input_name, f"a video needs at least 2 frames, got {frames.shape[0]}")
    return frames


def check_size(width: int, height: int, input_name: str = "size") -> None:
    require(int(width) > 0 and int(height) > 0 and int(width) % 8 == 0 and int(height) % 8 == 0,
            input_name, f"width and height must be positive multiples of 8, got {width}x{height}")


def resize_images(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize ``[N, H, W, C]`` (or masks ``[N, H, W]``) by area/bilinear; no-op at the right size."""
    squeeze = images.ndim == 3
    x = images[..., None] if squeeze else images
    if tuple(x.shape[1:3]) != (height, width):
        mode = "area" if x.shape[1] >= height and x.shape[2] >= width else "bilinear"
        x = F.interpolate(x.permute(0, 3, 1, 2), size=(height, width), mode=mode).permute(0, 2, 3, 1)
    return x[..., 0] if squeeze else x


def mask_to_latent(masks: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """Masks ``[N, H, W]`` -> ``(N, 1, 1, h, w)`` loss weights on the latent grid (area average)."""
    m = F.interpolate(masks.float()[:, None], size=latent_hw, mode="area")
    return m[:, :, None]


def _grow(lo: int, hi: int, size: int, limit: int) -> tuple[int, int]:
    """A span of ``size`` around ``[lo, hi)``: inside ``[0, limit)`` when it fits (shifted, never
    cut), else centred on ``[0, limit)`` and reaching past it on both sides (padding)."""
    if size > limit:
        start = (limit - size) // 2
    else:
        start = min(max(0, (lo + hi - size) // 2), limit - size)
    return start, start + size


def crop_to_mask(image: torch.Tensor, mask: torch.Tensor, height: int, width: int,
                 margin: float = 0.1, pad_value: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop ``image [H, W, 3]`` around ``mask``'s bounding box (plus a margin), keeping its aspect.

    The box grows to the target's aspect ratio ``width / height`` within the frame; where the frame
    is too small in one direction the crop reaches past it and is padded with ``pad_value`` (grey,
    0 in the VAE's -1..1) rather than stretched. Returns the crop resized to ``height x width`` and
    its mask (the loss weight), which is 0 in the padding.
    """
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    if ys.numel() == 0:
        ys, xs = torch.nonzero(mask > 0, as_tuple=True)
    y0, y1, x0, x1 = ys.min().item(), ys.max().item() + 1, xs.min().item(), xs.max().item() + 1
    my, mx = int((y1 - y0) * margin), int((x1 - x0) * margin)
    H, W = image.shape[:2]
    y0, y1 = max(0, y0 - my), min(H, y1 + my)
    x0, x1 = max(0, x0 - mx), min(W, x1 + mx)
    box_h, box_w = y1 - y0, x1 - x0
    if box_w * height < box_h * width:  # too narrow for the target: widen
        box_w = max(box_w, round(box_h * width / height))
    else:  # too flat: heighten
        box_h = max(box_h, round(box_w * height / width))
    cy0, cy1 = _grow(y0, y1, box_h, H)
    cx0, cx1 = _grow(x0, x1, box_w, W)
    canvas = torch.full((box_h, box_w, image.shape[2]), float(pad_value), dtype=image.dtype)
    canvas_mask = torch.zeros(box_h, box_w, dtype=mask.dtype)
    iy0, iy1, ix0, ix1 = max(cy0, 0), min(cy1, H), max(cx0, 0), min(cx1, W)
    canvas[iy0 - cy0:iy1 - cy0, ix0 - cx0:ix1 - cx0] = image[iy0:iy1, ix0:ix1]
    canvas_mask[iy0 - cy0:iy1 - cy0, ix0 - cx0:ix1 - cx0] = mask[iy0:iy1, ix0:ix1]
    crop = resize_images(canvas[None], height, width)[0]
    crop_mask = resize_images(canvas_mask[None], height, width)[0]
    return crop, crop_mask


def uniform_frame_indices(total: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over ``0..total-1`` (first and last included); with
    ``count > total`` some frames repeat (nearest frame of the even spread)."""
    if count == 1:
        return [0]
    return [int(i * (total - 1) / (count - 1) + 0.5) for i in range(count)]  # halves up, evenly


def motion_frame_indices(total: int, frames: int) -> list[int]:
    """The frames of a ``total``-frame reference clip a motion trains on: ``frames`` sampled uniformly
    over the whole clip (a longer clip is sampled, never stacked into one step). A clip shorter than
    ``frames`` is used whole, each frame once (never repeated, which would slow its motion)."""
    return uniform_frame_indices(total, frames) if total > frames else list(range(total))


def prior_frame_indices(reference: int, frames: int) -> tuple[list[int], str]:
    """Which of a motion's ``reference`` latent frames the noise prior uses for a ``frames``-frame
    sample, and a note when they differ. Training and sampling see the same timing only when the
    counts agree (the samplers default to the motion's count). Fewer frames: the first ``frames``
    (the motion's speed per frame kept, the clip's end left out). More frames: uniform selection with
    repeats, the prior's motion slowed by ``reference / frames``. Never interpolated in time."""
    if frames == reference:
        return list(range(frames)), ""
    if frames < reference:
        return list(range(frames)), (f"noise prior: the motion was trained on {reference} frames; sampling "
                                     f"{frames} uses its first {frames} (same speed, the end left out)")
    return uniform_frame_indices(reference, frames), (
        f"noise prior: the motion was trained on {reference} frames; sampling {frames} repeats reference "
        f"frames (its motion {reference / frames:.2f}x as fast); sample {reference} frames to keep its "
        "timing")


def load_image_files(paths, input_name: str = "images") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read image files (or every image in a folder) -> ``([N, H, W, 3], alpha masks or None)``."""
    from PIL import Image

    files: list[Path] = []
    for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths):
        p = Path(p)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            require(p.is_file(), input_name, f"no image file at '{p}'")
            files.append(p)
    require(len(files) > 0, input_name, f"no images found in {paths}")
    imgs, alphas = [], []
    size = None
    for f in files:
        try:
            im = Image.open(f)
            im.load()
        except Exception as exc:  # PIL raises many kinds
            raise VideoMageInputError(input_name, f"'{f}' is not a readable image ({exc})") from exc
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        if size is None:
            size = rgba.shape[:2]
        elif rgba.shape[:2] != size:
            rgba = np.asarray(im.convert("RGBA").resize((size[1], size[0])), dtype=np.float32) / 255.0
        imgs.append(rgba[..., :3])
        alphas.append(rgba[..., 3])
    images = torch.from_numpy(np.stack(imgs))
    alpha = torch.from_numpy(np.stack(alphas))
    has_alpha = bool((alpha < 0.999).any())
    return images, (alpha if has_alpha else None)


def fit_to_size(images: torch.Tensor, height: int, width: int,
                masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Center-crop to the target aspect ratio, then resize (images and their masks alike)."""
    h, w = images.shape[1:3]
    target = width / height
    if w / h > target:
        cw = max(1, round(h * target))
        x0 = (w - cw) // 2
        images, masks = images[:, :, x0:x0 + cw], (masks[:, :, x0:x0 + cw] if masks is not None else None)
    else:
        ch = max(1, round(w / target))
        y0 = (h - ch) // 2
        images, masks = images[:, y0:y0 + ch], (masks[:, y0:y0 + ch] if masks is not None else None)
    images = resize_images(images, height, width)
    masks = resize_images(masks, height, width) if masks is not None else None
    return images, masks
