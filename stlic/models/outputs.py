"""Typed outputs of the LALIC main network and the ST-LIC model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

from torch import Tensor


@dataclass
class LALICOutput:
    """Training / evaluation pass of the main network (CompressAI's ``{"x_hat", "likelihoods"}``)."""

    x_hat: Tensor
    likelihoods: Dict[str, Tensor]  # {"y": ..., "z": ...}
    y_hat: Tensor


@dataclass
class STLICOutput:
    """``x_hat`` takes the distortion losses, ``x_refined`` the perceptual ones (ST-LIC Sec. III)."""

    x_hat: Tensor
    x_refined: Tensor
    likelihoods: Dict[str, Tensor]  # {"y": ..., "z": ...}
    y_hat: Tensor  # (B, M, H/16, W/16), the discriminator's condition


@dataclass
class CompressedImage:
    """Strings and sizes of a batch of compressed images.

    ``strings = [y_strings, z_strings]``, each a list with one ``bytes`` per image (CompressAI's
    order). ``shape`` is the (h, w) of z; ``original_size`` the (H, W) of the input before
    padding to a multiple of 64; ``level`` the continuous QVRF rate level used.
    """

    strings: List[List[bytes]]
    shape: Tuple[int, int]
    level: float
    original_size: Tuple[int, int]

    @property
    def num_bytes(self) -> int:
        return sum(len(s) for per_image in self.strings for s in per_image)


@dataclass
class DecodedImage:
    """Decoder output cropped to the original size: decoder image and refined image, in [0, 1]."""

    x_hat: Tensor
    x_refined: Tensor
