"""Multi-scale structural similarity (Wang, Simoncelli & Bovik 2003), per image.

    MS-SSIM = cs_1^w1 * ... * cs_{M-1}^w_{M-1} * (l_M cs_M)^w_M,   M = 5 scales,
    w = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 11x11 Gaussian window (sigma 1.5)

Computed by ``pytorch_msssim`` (the implementation CompressAI's evaluation uses). With five
scales and an 11-px window the coarsest scale is 1/16 of the input, so each side must exceed
``(11 - 1) * 2**4 = 160`` px: smaller images raise a ValueError naming the size (no padding
fallback, because padding would change the score).
"""
from __future__ import annotations

import torch
from pytorch_msssim import ms_ssim as _pytorch_ms_ssim
from torch import Tensor

WINDOW_SIZE = 11
NUM_SCALES = 5
#: smallest image side accepted: (WINDOW_SIZE - 1) * 2 ** (NUM_SCALES - 1) + 1
MS_SSIM_MIN_SIZE = (WINDOW_SIZE - 1) * 2 ** (NUM_SCALES - 1) + 1


def ms_ssim(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """MS-SSIM of each image of a (B, 3, H, W) batch: shape (B,), float64.

    Raises:
        ValueError: shapes differ, or ``min(H, W) < MS_SSIM_MIN_SIZE`` (161 px).
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two (B, C, H, W) batches of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    height, width = x.shape[-2:]
    if min(height, width) < MS_SSIM_MIN_SIZE:
        raise ValueError(
            f"MS-SSIM needs images of at least {MS_SSIM_MIN_SIZE}x{MS_SSIM_MIN_SIZE} px "
            f"({NUM_SCALES} scales, {WINDOW_SIZE}-px window), got {height}x{width}"
        )
    x64 = x.detach().to(torch.float64)
    y64 = y.detach().to(torch.float64)
    return _pytorch_ms_ssim(x64, y64, data_range=data_range, size_average=False, win_size=WINDOW_SIZE)
