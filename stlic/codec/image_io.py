"""PNG (and other Pillow formats) <-> (3, H, W) float tensors in [0, 1].

Gray, palette, gray+alpha and RGBA images become RGB (alpha dropped, as CompressAI's
evaluation does); 16-bit images keep their 8 most significant bits. Images above Pillow's
decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) are refused with a clear error. Writes
are atomic (:func:`stlic.output_files.atomic_write`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from stlic.output_files import atomic_write, check_input_file

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def read_image(path: str | os.PathLike) -> Tensor:
    """RGB image at ``path`` as a (3, H, W) float32 tensor in [0, 1]."""
    path = check_input_file(path, "image")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in _SIXTEEN_BIT_MODES:
                gray = (np.asarray(image, dtype=np.int64) >> 8).clip(0, 255).astype(np.uint8)
                image = Image.fromarray(gray)
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as error:
        raise ValueError(f"image {str(path)!r} is too large to decode safely ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{str(path)!r} is not a readable image file ({error})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) float image -> (H, W, 3) uint8, clamped and rounded."""
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image tensor, got shape {tuple(image.shape)}")
    return image.detach().cpu().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def image_format(path: str | os.PathLike) -> str:
    """Pillow's format name for the suffix of ``path`` (ValueError for an unknown suffix)."""
    suffix = Path(path).suffix.lower()
    formats = Image.registered_extensions()
    if suffix not in formats:
        raise ValueError(f"cannot write image {str(path)!r}: unknown image suffix {suffix!r} (use e.g. .png)")
    return formats[suffix]


def write_image(path: str | os.PathLike, image: Tensor) -> Path:
    """Write a float image in [0, 1] as an 8-bit RGB file (format from the suffix, e.g. PNG), atomically."""
    fmt = image_format(path)
    pixels = Image.fromarray(to_uint8(image))
    try:
        return atomic_write(path, lambda handle: pixels.save(handle, format=fmt))
    except (KeyError, ValueError) as error:  # a format Pillow reads but cannot write
        raise ValueError(f"cannot write image {str(path)!r}: {error}") from None
