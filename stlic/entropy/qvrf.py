"""Quantization-error-aware variable rate (QVRF, Tong et al., "QVRF: A Quantization-error-aware
Variable Rate Framework for Learned Image Compression", ICIP 2023).

One scalar gain ``a_l`` per rate level scales the residual before rounding::

    s     = round((y - mu) * a)            (coded symbols)
    y_hat = s / a + mu                     (dequantised latent)
    p(s)  = N(0, (sigma * a)^2) * U(-1/2, 1/2) evaluated at s

A smaller gain is a coarser quantiser, i.e. a lower rate. Level 0 keeps ``a_0 = 1`` fixed
(the base model); levels ``l >= 1`` are learned, stored as ``log a_l`` so they stay positive,
and initialised to ``a_l = sqrt(lambda_0 / lambda_l)`` (the high-rate optimum of
``lambda R + D`` with ``D ~ Delta^2 / 12`` gives ``Delta ~ sqrt(lambda)``).

A continuous level ``l + t`` (0 <= t < 1) interpolates geometrically (QVRF Eq. 9)::

    a_{l+t} = a_l^(1 - t) * a_{l+1}^t
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
from torch import Tensor


class QuantGain(nn.Module):
    """Per-level quantisation gains with continuous interpolation between levels."""

    def __init__(self, rate_lambdas: Sequence[float]) -> None:
        super().__init__()
        if len(rate_lambdas) < 1 or any(v <= 0 for v in rate_lambdas):
            raise ValueError(f"rate_lambdas must be non-empty and positive, got {tuple(rate_lambdas)}")
        base = rate_lambdas[0]
        init = [0.5 * math.log(base / v) for v in rate_lambdas[1:]]
        self.log_gains = nn.Parameter(torch.tensor(init, dtype=torch.float32))

    @property
    def n_levels(self) -> int:
        return self.log_gains.numel() + 1

    def all_log_gains(self) -> Tensor:
        """``log a_l`` for every level, level 0 fixed at 0."""
        return torch.cat([self.log_gains.new_zeros(1), self.log_gains])

    def check_level(self, level: float) -> float:
        level = float(level)
        if not 0.0 <= level <= self.n_levels - 1:
            raise ValueError(f"rate level must lie in [0, {self.n_levels - 1}], got {level}")
        return level

    def forward(self, level: float) -> Tensor:
        """Gain ``a`` (0-dim tensor) of the continuous ``level``."""
        level = self.check_level(level)
        log_gains = self.all_log_gains()
        lower = min(int(math.floor(level)), self.n_levels - 1)
        t = level - lower
        if t == 0.0:
            return log_gains[lower].exp()
        return ((1.0 - t) * log_gains[lower] + t * log_gains[lower + 1]).exp()
