"""Distortion terms on the decoder output x_hat (ST-LIC eq. 2): L1 and L2 (MSE).

Scale convention: images in [0, 1], mean over all elements (batch, channels, pixels):

    L1  = mean |x - x_hat|,        L2 = mean (x - x_hat)^2.

This is the quantity CompressAI's ``RateDistortionLoss`` computes before its 255^2 factor, and
it is what makes ST-LIC's coefficients (l2 ~ 40-50 next to bpp ~ 0.1-1) balance; for the
[0, 255] convention of HiFiC / MS-ILLM pass ``data_range=255`` (L2 scales by 255^2, L1 by 255).
Unlike ``torch.nn.MSELoss`` a shape mismatch is an error, never a silent broadcast.
"""
from __future__ import annotations

from torch import Tensor, nn


class _PixelLoss(nn.Module):
    def __init__(self, data_range: float = 1.0) -> None:
        super().__init__()
        if data_range <= 0:
            raise ValueError(f"data_range must be positive, got {data_range}")
        self.data_range = data_range

    def _difference(self, x_hat: Tensor, x: Tensor) -> Tensor:
        if x_hat.shape != x.shape:
            raise ValueError(f"{type(self).__name__}: shapes differ, {tuple(x_hat.shape)} vs {tuple(x.shape)}")
        return (x_hat - x) * self.data_range


class L1Loss(_PixelLoss):
    """mean |x_hat - x| (times ``data_range``)."""

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        return self._difference(x_hat, x).abs().mean()


class MSELoss(_PixelLoss):
    """mean (x_hat - x)^2 (times ``data_range``^2)."""

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        return self._difference(x_hat, x).square().mean()
