"""The codecs ``stlic eval`` measures: a checkpoint's model, or the JPEG anchor, behind one interface.

A coder turns a (3, H, W) image in [0, 1] into a file (``encode``: the bytes, the rate setting
used, and whether the requested bpp was reached) and a file back into its two reconstructions
(``decode``: decoder output and refined output; JPEG has no refiner, so both are the decoded image).
So the same evaluation loop, metrics and files serve the learned codec and its anchor, and a
comparison at matched bpp uses one protocol for both.

- :class:`ModelCoder`: real ``.stlic`` bitstreams at a QVRF level, or at the level whose file rate
  is closest to a target (:func:`stlic.codec.codec.find_level_for_bpp`).
- :class:`JpegCoder`: Pillow's JPEG (libjpeg) with 4:2:0 chroma subsampling and the default
  tables, the anchor of ``benchmarks/jpeg_kodak.py``, at a quality in [1, 95] or at the quality
  whose file rate is closest to a target (bisection on the integer quality). JPEG cannot go below
  its quality-1 rate (about 0.17 bpp on Kodak at 4:2:0): a lower target is coded at quality 1 and
  counted as off target, never silently.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from stlic.codec.codec import bits_per_pixel

#: Pillow's quality scale; above 95 its docs advise against (larger files, no visible gain)
JPEG_QUALITIES = (1, 95)
#: relative bpp tolerance of a target-bpp search (find_level_for_bpp's default)
RATE_TOLERANCE = 0.02


class CodedImage(NamedTuple):
    data: bytes
    level: float  # the QVRF level, or the JPEG quality
    feasible: bool  # False when a target bpp was asked for and not reached within RATE_TOLERANCE


def jpeg_bytes(x: Tensor, quality: int) -> bytes:
    """Pillow JPEG file of a (3, H, W) image in [0, 1] (rounded to 8 bits), 4:2:0, default tables."""
    pixels = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(quality), subsampling=2)
    return buffer.getvalue()


def jpeg_decode(data: bytes) -> Tensor:
    """A JPEG file decoded to a (1, 3, H, W) float tensor in [0, 1]."""
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).unsqueeze(0).float().div(255)


class JpegCoder:
    """Pillow JPEG at a fixed ``quality`` or at the quality closest to ``target_bpp`` (see module doc)."""

    name = "JPEG (Pillow 4:2:0)"
    level_name = "JPEG quality"
    tolerance = RATE_TOLERANCE

    def __init__(self, quality: float | None = None, target_bpp: float | None = None) -> None:
        low, high = JPEG_QUALITIES
        if target_bpp is None:
            if quality is None or quality != int(quality) or not low <= quality <= high:
                raise ValueError(f"JPEG needs a target bpp or a quality, an integer in [{low}, {high}] "
                                 f"(--rate-level), got {quality}")
        elif quality is not None:
            raise ValueError("give either a JPEG quality or a target bpp, not both")
        self.quality = None if quality is None else int(quality)
        self.target_bpp = target_bpp

    def encode(self, x: Tensor) -> CodedImage:
        if self.target_bpp is None:
            return CodedImage(jpeg_bytes(x, self.quality), float(self.quality), True)
        target = self.target_bpp
        files: dict[int, bytes] = {}

        def rate(quality: int) -> float:
            if quality not in files:
                files[quality] = jpeg_bytes(x, quality)
            return bits_per_pixel(files[quality], x)

        low, high = JPEG_QUALITIES
        if rate(high) < target:  # even the top quality is under the target
            best = high
        else:  # the file rate grows with quality: bisect for the first quality at or over the target
            while low < high:
                middle = (low + high) // 2
                low, high = (middle + 1, high) if rate(middle) < target else (low, middle)
            candidates = [q for q in (low - 1, low) if q >= JPEG_QUALITIES[0]]
            best = min(candidates, key=lambda q: abs(rate(q) - target))
        return CodedImage(files[best], float(best), abs(rate(best) - target) <= self.tolerance * target)

    def decode(self, data: bytes) -> tuple[Tensor, Tensor]:
        y = jpeg_decode(data)
        return y, y


class ModelCoder:
    """A checkpoint's model (a ``model.pt`` or a training ``checkpoint.pt``) coding real bitstreams."""

    level_name = "QVRF level"
    tolerance = RATE_TOLERANCE

    def __init__(self, checkpoint: str | Path, level: float | None = None, target_bpp: float | None = None,
                 device: str = "auto") -> None:
        from stlic.codec.codec import coding_level
        from stlic.devices import resolve_device
        from stlic.training.checkpoint import load_inference_model

        model, _, _ = load_inference_model(checkpoint)  # a training checkpoint.pt is accepted (warned)
        self.model = model.to(resolve_device(device))
        self.level = coding_level(self.model, level or 0.0)  # a bad level raises here, before any coding
        self.target_bpp = target_bpp
        self.name = Path(checkpoint).stem

    def encode(self, x: Tensor) -> CodedImage:
        from stlic.codec.codec import compress_image, find_level_for_bpp

        if self.target_bpp is not None:
            search = find_level_for_bpp(self.model, x, self.target_bpp, rel_tolerance=self.tolerance)
            return CodedImage(search.data, search.level, search.feasible)
        return CodedImage(compress_image(self.model, x, self.level), self.level, True)

    def decode(self, data: bytes) -> tuple[Tensor, Tensor]:
        from stlic.codec.codec import decompress_image  # looked up per call, as the codec module holds it

        decoded = decompress_image(self.model, data)
        return decoded.x_hat, decoded.x_refined
