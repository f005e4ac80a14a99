"""Peak signal-to-noise ratio, per image.

    MSE_i  = mean over (C, H, W) of (x_i - y_i)^2
    PSNR_i = 10 * log10(data_range^2 / MSE_i)

Per-image values are what learned-compression papers average over Kodak (e.g. ST-LIC Table III);
:class:`stlic.evaluation.metrics.PSNRMetric` also reports PSNR of the pooled MSE (CLIC leaderboard).
"""
from __future__ import annotations

import torch
from torch import Tensor


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"images must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim != 4:
        raise ValueError(f"expected a batch (B, C, H, W), got shape {tuple(x.shape)}")


def mse_per_image(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error of each image of a (B, C, H, W) batch, in float64: shape (B,)."""
    _check_pair(x, y)
    diff = x.detach().to(torch.float64) - y.detach().to(torch.float64)
    return diff.pow(2).flatten(1).mean(dim=1)


def psnr_from_mse(mse: Tensor, data_range: float = 1.0) -> Tensor:
    """``10 log10(data_range^2 / mse)``; +inf where ``mse == 0`` (identical images)."""
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    mse = torch.as_tensor(mse, dtype=torch.float64)
    return 10.0 * torch.log10(data_range**2 / mse)


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """PSNR in dB of each image of a (B, C, H, W) batch: shape (B,), float64.

    Example:
        >>> x = torch.zeros(1, 3, 8, 8); y = torch.full_like(x, 0.1)
        >>> round(float(psnr(x, y)), 6)
        20.0
    """
    return psnr_from_mse(mse_per_image(x, y), data_range)
