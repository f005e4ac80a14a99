"""PSNR accumulator reporting both conventions of the literature, labelled.

    mean_psnr   = (1/N) sum_i 10 log10(R^2 / MSE_i)               (per-image mean: papers, Table III)
    pooled_psnr = 10 log10(R^2 / (sum_i SSE_i / sum_i n_i))        (pooled MSE: CLIC leaderboard)

The two differ whenever image qualities differ (Jensen); report which one you compare.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from stlic.evaluation.functional.psnr import mse_per_image, psnr_from_mse
from stlic.evaluation.metrics.base import SumStateMetric


class PSNRResult(NamedTuple):
    mean_psnr: float  # mean of per-image PSNR (dB)
    pooled_psnr: float  # PSNR of the MSE pooled over all pixels of the set (dB)
    count: int  # number of images


class PSNRMetric(SumStateMetric):
    """Accumulates per-image PSNR and the pooled squared error.

    Example:
        >>> metric = PSNRMetric()
        >>> x = torch.zeros(2, 3, 4, 4)
        >>> _ = metric.update(x, x + torch.tensor([0.1, 0.01]).view(2, 1, 1, 1))  # 20 dB and 40 dB
        >>> [round(v, 3) for v in metric.compute()[:2]]  # mean of 20, 40; 10 log10(1 / 0.00505)
        [30.0, 22.967]
    """

    def __init__(self, data_range: float = 1.0) -> None:
        if data_range <= 0:
            raise ValueError(f"data_range must be positive, got {data_range}")
        self.data_range = data_range
        super().__init__()

    def _initial_state(self) -> dict[str, Tensor]:
        zero = torch.zeros((), dtype=torch.float64)
        return {name: zero.clone() for name in ("psnr_sum", "squared_error_sum", "element_count", "count")}

    def update(self, x: Tensor, y: Tensor) -> Tensor:
        """Accumulate a (B, C, H, W) pair; returns the per-image PSNR (B,)."""
        mse = mse_per_image(x, y).cpu()
        per_image = psnr_from_mse(mse, self.data_range)
        elements = x[0].numel()
        self._add("psnr_sum", per_image.sum())
        self._add("squared_error_sum", mse.sum() * elements)
        self._add("element_count", float(elements * x.shape[0]))
        self._add("count", float(x.shape[0]))
        return per_image

    def compute(self) -> PSNRResult:
        count = int(self._state["count"].item())
        if count == 0:
            raise ValueError("PSNRMetric.compute() called before any update")
        pooled_mse = self._state["squared_error_sum"] / self._state["element_count"]
        return PSNRResult(
            mean_psnr=float(self._state["psnr_sum"] / count),
            pooled_psnr=float(psnr_from_mse(pooled_mse, self.data_range)),
            count=count,
        )
