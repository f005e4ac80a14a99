"""Rate term: estimated bits per pixel from entropy-model likelihoods (CompressAI convention).

    R = sum_k sum_i -log2 p_k[i] / num_pixels,      num_pixels = N * H * W,

summed over every likelihood tensor k (``{"y": ..., "z": ...}``), i.e. the batch's total
estimated bits divided by the batch's pixels = the per-image bpp averaged over the batch
(CompressAI ``RateDistortionLoss``; Balle et al., ICLR 2018).
"""
from __future__ import annotations

import math
from typing import Mapping

from torch import Tensor, nn


def _check(likelihoods: Mapping[str, Tensor]) -> None:
    if not likelihoods:
        raise ValueError("likelihoods is empty: expected e.g. {'y': Tensor, 'z': Tensor}")
    for name, value in likelihoods.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"likelihoods[{name!r}] is {type(value).__name__}, not a Tensor")


def bits_per_pixel(likelihoods: Mapping[str, Tensor], num_pixels: int) -> Tensor:
    """sum_k sum -log2 p_k / num_pixels (a scalar): the batch's bits over its pixels."""
    _check(likelihoods)
    if num_pixels <= 0:
        raise ValueError(f"num_pixels must be positive, got {num_pixels}")
    return sum(p.log().sum() for p in likelihoods.values()) / (-math.log(2) * num_pixels)


def bits_per_pixel_per_image(likelihoods: Mapping[str, Tensor], image_pixels: int) -> Tensor:
    """The bpp of each image, shape (N,): per-image bits over ``image_pixels = H * W``."""
    _check(likelihoods)
    if image_pixels <= 0:
        raise ValueError(f"image_pixels must be positive, got {image_pixels}")
    sizes = {p.shape[0] for p in likelihoods.values()}
    if len(sizes) != 1:
        raise ValueError(f"likelihood tensors disagree on the batch size: {sorted(sizes)}")
    bits = sum(p.log().flatten(1).sum(dim=1) for p in likelihoods.values())
    return bits / (-math.log(2) * image_pixels)


class RateLoss(nn.Module):
    """``RateLoss()(likelihoods, num_pixels)`` -> bits per pixel (see :func:`bits_per_pixel`)."""

    def forward(self, likelihoods: Mapping[str, Tensor], num_pixels: int) -> Tensor:
        return bits_per_pixel(likelihoods, num_pixels)
