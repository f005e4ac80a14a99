"""MS-SSIM accumulator: mean over images of :func:`stlic.evaluation.functional.ms_ssim`."""
from __future__ import annotations

from torch import Tensor

from stlic.evaluation.functional.ms_ssim import ms_ssim
from stlic.evaluation.metrics.base import MeanMetric


class MSSSIMMetric(MeanMetric):
    """Mean per-image MS-SSIM (images at least 161 px a side)."""

    def __init__(self, data_range: float = 1.0) -> None:
        self.data_range = data_range
        super().__init__()

    def update(self, x: Tensor, y: Tensor) -> Tensor:
        """Accumulate a (B, 3, H, W) pair; returns the per-image MS-SSIM (B,)."""
        values = ms_ssim(x, y, data_range=self.data_range)
        self.update_values(values)
        return values
