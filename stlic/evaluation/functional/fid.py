"""Fréchet distance between Gaussians fitted to Inception features (Heusel et al. 2017, FID).

    FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

Computed in float64 with ``scipy.linalg.sqrtm`` like pytorch-fid and torch-fidelity; a tiny
imaginary part of the matrix square root (numerical noise) is dropped, a large one raises.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray


class GaussianStats(NamedTuple):
    """Mean and unbiased covariance of a feature set, and the number of samples."""

    mean: np.ndarray  # (D,)
    cov: np.ndarray  # (D, D)
    count: int


def _as_float64(array: ArrayLike) -> np.ndarray:
    if isinstance(array, Tensor):
        return array.detach().cpu().to(torch.float64).numpy()
    return np.asarray(array, dtype=np.float64)


def gaussian_stats(features: ArrayLike) -> GaussianStats:
    """Mean and unbiased covariance ``(F - mu)^T (F - mu) / (N - 1)`` of an (N, D) feature matrix."""
    feats = _as_float64(features)
    if feats.ndim != 2:
        raise ValueError(f"features must be an (N, D) matrix, got shape {feats.shape}")
    if feats.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {feats.shape[0]}")
    return GaussianStats(feats.mean(axis=0), np.cov(feats, rowvar=False), feats.shape[0])


def frechet_distance(
    mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    When ``sigma1 @ sigma2`` is singular (rank-deficient covariances: fewer samples than
    feature dimensions) ``eps * I`` is added to both covariances, as pytorch-fid does.

    Example:
        >>> import numpy as np
        >>> frechet_distance(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2))  # 2 + 2*(1+4-2*2)
        4.0
    """
    mu1, mu2 = _as_float64(mu1).ravel(), _as_float64(mu2).ravel()
    sigma1, sigma2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    if mu1.shape != mu2.shape:
        raise ValueError(f"means have different lengths: {mu1.shape[0]} and {mu2.shape[0]}")
    dim = mu1.shape[0]
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"covariances must be {dim}x{dim} to match the means, got {sigma1.shape} and {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean, _ = scipy.linalg.sqrtm(sigma1 @ sigma2, disp=False)
    if not np.isfinite(covmean).all():
        warnings.warn(f"sqrtm(sigma1 sigma2) is singular; adding {eps} * I to both covariances")
        offset = np.eye(dim) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm(sigma1 sigma2) has a large imaginary part {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(real_features: ArrayLike, fake_features: ArrayLike) -> float:
    """FID between two (N, D) feature sets (mean and unbiased covariance of each)."""
    real, fake = gaussian_stats(real_features), gaussian_stats(fake_features)
    return frechet_distance(real.mean, real.cov, fake.mean, fake.cov)
