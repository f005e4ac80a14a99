"""FID accumulator over FID/256 patches, reducible across DDP ranks.

States per set s in {real, fake}: ``sum_s = sum_i f_i`` (D,), ``outer_s = sum_i f_i f_i^T``
(D, D) and ``count_s``, all float64, so shards add. At :meth:`FIDMetric.compute`:

    mu = sum / n,    Sigma = (outer - n mu mu^T) / (n - 1),    FID = Frechet(mu_r, S_r, mu_f, S_f)

Minimum size: the covariance of n samples has rank <= n - 1, far below D = 2048 for Kodak's 192
patches; FID on so few samples is strongly biased upward (its bias falls like 1/n, Chong &
Forsyth 2020, "Effectively Unbiased FID"), so values are only comparable at the same patch count.
:meth:`compute` refuses below ``min_patches`` (default :data:`MIN_FID_PATCHES` = 100: Kodak's 192
pass, a dozen 768x512 images do not) and warns whenever n <= D.
"""
from __future__ import annotations

import warnings
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from stlic.evaluation.functional.fid import frechet_distance
from stlic.evaluation.functional.fid_patches import FID_PATCH_SIZE, extract_fid_patches
from stlic.evaluation.metrics.base import SumStateMetric

MIN_FID_PATCHES = 100
FeatureExtractor = Callable[[Tensor], Tensor]


class FIDResult(NamedTuple):
    fid: float
    num_real: int  # patches (or images) of the reference set
    num_fake: int


def quantize_8bit(images: Tensor) -> Tensor:
    """Round [0, 1] images to the 256 levels a saved PNG holds (as NeuralCompression does)."""
    return torch.round(images.clamp(0.0, 1.0) * 255.0) / 255.0


def check_fid_sample_count(count: int, min_patches: int = MIN_FID_PATCHES, what: str | None = None) -> None:
    """Raise ValueError when ``count`` patches are too few for FID (see the module docstring)."""
    if count < min_patches:
        raise ValueError(
            f"FID refused: {what or count} patches, fewer than the minimum of {min_patches} (FID on so "
            "few samples is dominated by its bias); evaluate more or larger images, lower the minimum "
            "knowingly (--fid-min-patches), or disable FID (--no-fid)"
        )


class FIDMetric(SumStateMetric):
    """Patch FID (FID/256 of HiFiC) between reference and reconstructed images.

    Args:
        feature_extractor: images in [0, 1] → (N, D) features; default :class:`FIDInceptionV3`
            (loaded on first use).
        patch_size: FID/256 patch size; ``None`` feeds whole images (classic FID).
        min_patches: :meth:`compute` raises below this many samples per set (at least 2).
        batch_size: patches per feature-extractor call.
    """

    def __init__(
        self,
        feature_extractor: FeatureExtractor | None = None,
        feature_dim: int = 2048,
        patch_size: int | None = FID_PATCH_SIZE,
        min_patches: int = MIN_FID_PATCHES,
        batch_size: int = 16,
    ) -> None:
        if min_patches < 2:
            raise ValueError(f"min_patches must be at least 2 (a covariance needs two samples), got {min_patches}")
        self.feature_extractor = feature_extractor
        self.feature_dim = feature_dim
        self.patch_size = patch_size
        self.min_patches = min_patches
        self.batch_size = batch_size
        super().__init__()

    def _initial_state(self) -> dict[str, Tensor]:
        d = self.feature_dim
        state: dict[str, Tensor] = {}
        for side in ("real", "fake"):
            state[f"{side}_sum"] = torch.zeros(d, dtype=torch.float64)
            state[f"{side}_outer"] = torch.zeros(d, d, dtype=torch.float64)
            state[f"{side}_count"] = torch.zeros((), dtype=torch.float64)
        return state

    def patch_features(self, images: Tensor) -> Tensor:
        """(N, D) features of the 8-bit-quantised FID patches of (B, 3, H, W) images in [0, 1].

        Compute the reference features once and feed them to several metrics (e.g. decoder and
        refiner outputs) with :meth:`update_features`.
        """
        if self.feature_extractor is None:
            from stlic.evaluation.inception import FIDInceptionV3

            self.feature_extractor = FIDInceptionV3()
        samples = quantize_8bit(images.detach())
        if self.patch_size:
            samples = extract_fid_patches(samples, self.patch_size)
        chunks = [self.feature_extractor(batch) for batch in samples.split(self.batch_size)]
        return torch.cat(chunks) if chunks else samples.new_zeros((0, self.feature_dim))

    def update_features(self, features: Tensor, real: bool) -> None:
        """Accumulate an (N, D) feature matrix into the real or the fake set."""
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(f"expected (N, {self.feature_dim}) features, got shape {tuple(features.shape)}")
        side = "real" if real else "fake"
        f = features.detach().to(torch.float64).cpu()
        self._add(f"{side}_sum", f.sum(dim=0))
        self._add(f"{side}_outer", f.T @ f)
        self._add(f"{side}_count", float(f.shape[0]))

    def update(self, images: Tensor, real: bool) -> int:
        """Cut (B, 3, H, W) images in [0, 1] into patches and accumulate their features.

        Returns the number of patches added.
        """
        features = self.patch_features(images)
        self.update_features(features, real)
        return features.shape[0]

    def counts(self) -> tuple[int, int]:
        return int(self._state["real_count"].item()), int(self._state["fake_count"].item())

    def _gaussian(self, side: str) -> tuple[Tensor, Tensor]:
        n = self._state[f"{side}_count"]
        mean = self._state[f"{side}_sum"] / n
        cov = (self._state[f"{side}_outer"] - n * torch.outer(mean, mean)) / (n - 1)
        return mean, cov

    def compute(self) -> FIDResult:
        num_real, num_fake = self.counts()
        check_fid_sample_count(min(num_real, num_fake), self.min_patches, f"{num_real} reference and {num_fake} reconstructed")
        if min(num_real, num_fake) <= self.feature_dim:
            warnings.warn(
                f"FID over {min(num_real, num_fake)} samples <= {self.feature_dim} feature dimensions: the "
                "covariances are rank-deficient and FID is biased; compare only at equal patch counts"
            )
        (mu_r, cov_r), (mu_f, cov_f) = self._gaussian("real"), self._gaussian("fake")
        return FIDResult(frechet_distance(mu_r, cov_r, mu_f, cov_f), num_real, num_fake)
