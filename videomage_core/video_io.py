"""Reading reference videos and writing results: frame folders, animated WEBP/GIF, PNG frames."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write
from .data import IMAGE_SUFFIXES, load_image_files
from .errors import VideoMageInputError, require


def load_video(path: str | os.PathLike, input_name: str = "video") -> torch.Tensor:
    """Frames ``[F, H, W, 3]`` from a folder of images or an animated GIF/WEBP/APNG."""
    from PIL import Image, ImageSequence

    p = Path(path)
    require(p.exists(), input_name, f"no video at '{p}' (expected a folder of frames or an animated "
            "GIF/WEBP)")
    if p.is_dir():
        frames, _ = load_image_files(p, input_name)
        return frames
    require(p.suffix.lower() in IMAGE_SUFFIXES | {".gif"}, input_name,
            f"'{p.name}': expected a folder of frames or an animated GIF/WEBP/PNG")
    try:
        with Image.open(p) as im:
            frames = [np.asarray(f.convert("RGB"), dtype=np.float32) / 255 for f in ImageSequence.Iterator(im)]
    except Exception as exc:
        raise VideoMageInputError(input_name, f"'{p}' is not a readable animation ({exc})") from exc
    return torch.from_numpy(np.stack(frames))


def _to_pil(frames: torch.Tensor):
    from PIL import Image

    arr = (frames.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


def save_animation(frames: torch.Tensor, path: str | os.PathLike, fps: float = 8.0) -> Path:
    """Write frames as an animated WEBP (or GIF by suffix), atomically."""
    images = _to_pil(frames)
    fmt = "GIF" if Path(path).suffix.lower() == ".gif" else "WEBP"
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    kwargs.update(save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
    return atomic_write(path, lambda tmp: images[0].save(tmp, format=fmt, **kwargs))


def save_image(frame: torch.Tensor, path: str | os.PathLike) -> Path:
    image = _to_pil(frame[None])[0]
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def side_by_side(videos: list[torch.Tensor], gap: int = 4) -> torch.Tensor:
    """Tile videos ``[F, H, W, 3]`` horizontally (frames padded/resized to the first one's size)."""
    import torch.nn.functional as F

    f, h = videos[0].shape[0], videos[0].shape[1]
    tiles = []
    for v in videos:
        if v.shape[0] != f:
            idx = torch.linspace(0, v.shape[0] - 1, f).round().long()
            v = v[idx]
        if v.shape[1] != h:
            w = round(v.shape[2] * h / v.shape[1])
            v = F.interpolate(v.permute(0, 3, 1, 2), size=(h, w), mode="bilinear").permute(0, 2, 3, 1)
        tiles += [v, torch.ones(f, h, gap, 3)]
    return torch.cat(tiles[:-1], 2)


def labelled(video: torch.Tensor, text: str, height: int = 14) -> torch.Tensor:
    """``video`` ``[F, H, W, 3]`` with a dark strip on top holding ``text`` (PIL's built-in font),
    so that a side-by-side says what each column is."""
    from PIL import Image, ImageDraw

    f, _, w, _ = video.shape
    strip = Image.new("RGB", (w, height), (24, 24, 24))
    draw = ImageDraw.Draw(strip)
    tw = draw.textlength(text)
    draw.text((max(1, (w - tw) / 2), 1), text, fill=(235, 235, 235))
    band = torch.from_numpy(np.asarray(strip, dtype=np.float32) / 255.0)
    return torch.cat([band[None].expand(f, -1, -1, -1).to(video.dtype), video], 1)
