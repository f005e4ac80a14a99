"""LPIPS accumulator: mean over images of a learned perceptual distance (Zhang et al. 2018).

The distance network is passed in (see :func:`stlic.evaluation.lpips_metric.load_lpips`), so the
metric carries the name of the variant it measured, e.g. ``"ST-LPIPS(vgg)"``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from stlic.evaluation.metrics.base import MeanMetric

Distance = Callable[[Tensor, Tensor], Tensor]


class LPIPSMetric(MeanMetric):
    """Mean per-image LPIPS; ``distance(x, y)`` takes images in [0, 1] and returns (B,) or (B,1,1,1)."""

    def __init__(self, distance: Distance, name: str = "LPIPS") -> None:
        self.distance = distance
        self.name = name
        super().__init__()

    @torch.no_grad()
    def update(self, x: Tensor, y: Tensor) -> Tensor:
        """Accumulate a (B, 3, H, W) pair in [0, 1]; returns the per-image distance (B,)."""
        if x.shape != y.shape or x.ndim != 4:
            raise ValueError(f"expected two (B, 3, H, W) batches of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        values = torch.as_tensor(self.distance(x, y)).reshape(x.shape[0], -1).mean(dim=1)
        self.update_values(values)
        return values.detach().to(torch.float64).cpu()
