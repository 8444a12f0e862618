"""Reading reference videos and writing results: frame folders, animated WEBP/GIF, PNG frames."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = _to_pil(frames)
    fmt = "GIF" if path.suffix.lower() == ".gif" else "WEBP"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        kwargs = {"lossless": True} if fmt == "WEBP" else {}
        images[0].save(tmp, format=fmt, save_all=True, append_images=images[1:],
                       duration=int(round(1000 / fps)), loop=0, **kwargs)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_image(frame: torch.Tensor, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _to_pil(frame[None])[0].save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
