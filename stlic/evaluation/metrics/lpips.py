"""LPIPS accumulator: mean over images of a learned perceptual distance (Zhang et al. 2018).

The distance network is passed in (see :func:`stlic.evaluation.lpips_metric.load_lpips`), so the
metric carries the name of the variant it measured, e.g. ``"ST-LPIPS(vgg)"``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from stlic.evaluation.metrics.base import MeanMetric

Distance = Callable[[Tensor, Tensor], Tensor]


#: sides at or above this never need padding (every LPIPS variant takes 64 px and more)
_LARGE_ENOUGH = 64


class LPIPSMetric(MeanMetric):
    """Mean per-image LPIPS; ``distance(x, y)`` takes images in [0, 1] and returns (B,) or (B,1,1,1).

    A side under the network's smallest (:meth:`min_side`: 18 px for ST-LPIPS(vgg), 21 for
    ST-LPIPS(alex); its pooling stages leave nothing of less) is edge-padded (replicate, right and
    bottom, as the codec pads) in both images to that size, so a 1x1 or 3x500 image still gets a
    distance: the padding repeats each image's own border, the distance being that of the images
    with their borders extended.
    """

    def __init__(
        self,
        distance: Distance,
        name: str = "LPIPS",
        features: Callable[[Tensor], Any] | None = None,
        distance_from_features: Callable[[Any, Any], Tensor] | None = None,
    ) -> None:
        if (features is None) != (distance_from_features is None):
            raise ValueError("give both features and distance_from_features, or neither")
        self.distance = distance
        self.name = name
        self.features, self.distance_from_features = features, distance_from_features
        self._min_side: int | None = None
        super().__init__()

    def min_side(self, device: torch.device | str = "cpu") -> int:
        """Smallest height and width ``distance`` takes (bisection on [1, 64], found once)."""
        if self._min_side is None:
            low, high = 1, _LARGE_ENOUGH
            while low < high:
                middle = (low + high) // 2
                probe = torch.zeros(1, 3, middle, middle, device=device)
                try:
                    self.distance(probe, probe)
                    high = middle
                except (RuntimeError, ValueError):  # "Output size is too small", "Padding size should be less"
                    low = middle + 1
            self._min_side = low
        return self._min_side

    def needs_padding(self, x: Tensor) -> bool:
        return min(x.shape[-2:]) < _LARGE_ENOUGH and min(x.shape[-2:]) < self.min_side(x.device)

    @torch.no_grad()
    def reference(self, y: Tensor) -> Any:
        """Features of a reference batch ``y`` for :meth:`update`'s ``reference``: the network's pass
        over ``y`` done once for every reconstruction compared with it. ``None`` when the metric
        has no feature split or ``y`` needs padding (then :meth:`update` computes it all)."""
        if self.features is None or self.needs_padding(y):
            return None
        return self.features(y)

    @torch.no_grad()
    def update(self, x: Tensor, y: Tensor, reference: Any = None) -> Tensor:
        """Accumulate a (B, 3, H, W) pair in [0, 1]; returns the per-image distance (B,).

        ``reference``: :meth:`reference` of ``y``, which skips ``y``'s pass through the network
        (the same distance, to float rounding of the identical operations: equal in practice).
        """
        if x.shape != y.shape or x.ndim != 4:
            raise ValueError(f"expected two (B, 3, H, W) batches of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if reference is not None:
            values = torch.as_tensor(self.distance_from_features(self.features(x), reference))
            values = values.reshape(x.shape[0], -1).mean(dim=1)
            self.update_values(values)
            return values.detach().to(torch.float64).cpu()
        if self.needs_padding(x):
            side = self.min_side(x.device)
            pad = (0, max(side - x.shape[-1], 0), 0, max(side - x.shape[-2], 0))
            x, y = F.pad(x, pad, mode="replicate"), F.pad(y, pad, mode="replicate")
        values = torch.as_tensor(self.distance(x, y)).reshape(x.shape[0], -1).mean(dim=1)
        self.update_values(values)
        return values.detach().to(torch.float64).cpu()
