"""PNG (and other Pillow formats) <-> (3, H, W) float tensors in [0, 1].

Gray, palette, gray+alpha and RGBA images become RGB (alpha dropped, as CompressAI's
evaluation does); 16-bit images keep their 8 most significant bits.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def read_image(path: str | os.PathLike) -> Tensor:
    """RGB image at ``path`` as a (3, H, W) float32 tensor in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in _SIXTEEN_BIT_MODES:
                gray = (np.asarray(image, dtype=np.int64) >> 8).clip(0, 255).astype(np.uint8)
                image = Image.fromarray(gray)
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{str(path)!r} is not a readable image file ({error})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) float image -> (H, W, 3) uint8, clamped and rounded."""
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image tensor, got shape {tuple(image.shape)}")
    return image.detach().cpu().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def write_image(path: str | os.PathLike, image: Tensor) -> Path:
    """Write a float image in [0, 1] as an 8-bit RGB file (format from the suffix, e.g. PNG)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        Image.fromarray(to_uint8(image)).save(path)
    except (KeyError, ValueError) as error:  # unknown suffix
        raise ValueError(f"cannot write image {str(path)!r}: {error}") from None
    return path
