"""Fréchet distance on Gaussians with closed forms; FIDMetric sums vs direct statistics."""
import numpy as np
import pytest
import torch
import torch.distributed as dist

from stlic.evaluation.functional import fid_from_features, frechet_distance, gaussian_stats
from stlic.evaluation.metrics import FIDMetric


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_diagonal_covariances_closed_form(method):
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2), method=method) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_commuting_full_covariances_closed_form(method):
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))  # shared eigenbasis -> the covariances commute
    d1, d2 = rng.uniform(0.2, 2, size=5), rng.uniform(0.2, 2, size=5)
    sigma1, sigma2 = q @ np.diag(d1) @ q.T, q @ np.diag(d2) @ q.T
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(d1 + d2 - 2 * np.sqrt(d1 * d2))
    assert frechet_distance(mu1, sigma1, mu2, sigma2, method=method) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, sigma1, mu1, sigma1, method=method) == pytest.approx(0.0, abs=1e-7)


def test_eigh_and_sqrtm_agree_on_non_commuting_and_rank_deficient_covariances():
    rng = np.random.default_rng(3)
    for samples in (40, 12):  # full rank, then rank 11 < 16 dimensions
        a, b = rng.normal(size=(samples, 16)), rng.normal(size=(samples, 16)) @ rng.normal(size=(16, 16))
        args = (a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T))
        assert frechet_distance(*args, method="eigh") == pytest.approx(frechet_distance(*args, method="sqrtm"), rel=1e-6)
    with pytest.raises(ValueError, match="method must be"):
        frechet_distance(*args, method="svd")


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="means have different lengths"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="covariances must be 2x2"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


def test_fid_from_features_uses_mean_and_unbiased_covariance():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(50, 4)), rng.normal(loc=0.5, size=(40, 4))
    expected = frechet_distance(a.mean(0), np.cov(a.T, ddof=1), b.mean(0), np.cov(b.T, ddof=1))
    assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(a[:1])


def _features(seed: int, n: int, dim: int = 8, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=torch.float64) + shift


def test_fid_metric_sums_reproduce_direct_fid_and_shards_merge():
    real, fake = _features(0, 60), _features(1, 45, shift=0.3)
    whole = FIDMetric(feature_dim=8, min_patches=10)
    whole.update_features(real, real=True)
    whole.update_features(fake, real=False)
    expected = fid_from_features(real, fake)
    result = whole.compute()
    assert result.fid == pytest.approx(expected, rel=1e-9)
    assert (result.num_real, result.num_fake) == (60, 45)
    left, right = FIDMetric(feature_dim=8, min_patches=10), FIDMetric(feature_dim=8, min_patches=10)
    left.update_features(real[:25], real=True)
    right.update_features(real[25:], real=True)
    left.update_features(fake[:5], real=False)
    right.update_features(fake[5:], real=False)
    assert left.merge(right).compute().fid == pytest.approx(expected, rel=1e-9)


def _filled_metric(count: int, min_patches: int) -> FIDMetric:
    metric = FIDMetric(feature_dim=8, min_patches=min_patches)
    metric.update_features(_features(0, count), real=True)
    metric.update_features(_features(1, count), real=False)
    return metric


def test_fid_metric_refuses_too_few_patches_naming_counts():
    metric = _filled_metric(12, min_patches=20)
    with pytest.raises(ValueError, match="12 reference and 12 reconstructed patches.*minimum of 20"):
        metric.compute()
    with pytest.raises(ValueError, match="at least 2"):
        FIDMetric(min_patches=1)


def test_fid_metric_warns_when_covariance_is_rank_deficient():
    metric = _filled_metric(6, min_patches=2)
    with pytest.warns(UserWarning, match="rank-deficient"):
        metric.compute()


def test_fid_metric_patches_images_and_feeds_the_extractor():
    seen: list[tuple[int, ...]] = []

    def mean_colour(images: torch.Tensor) -> torch.Tensor:  # a 3-d "feature": per-patch mean colour
        seen.append(tuple(images.shape))
        return images.mean(dim=(2, 3))

    metric = FIDMetric(mean_colour, feature_dim=3, patch_size=64, min_patches=2, batch_size=4)
    images = torch.rand(2, 3, 128, 96)
    assert metric.update(images, real=True) == 2 * (2 * 1 + 1 * 1)
    assert all(shape[1:] == (3, 64, 64) for shape in seen)
    assert sum(shape[0] for shape in seen) == 6


def test_fid_metric_reduce_all_reduces_under_a_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        metric = FIDMetric(feature_dim=8, min_patches=10)
        metric.update_features(_features(0, 30), real=True)
        metric.update_features(_features(1, 30, shift=1.0), real=False)
        before = metric.compute().fid
        assert metric.reduce().compute().fid == pytest.approx(before, rel=1e-12)
    finally:
        dist.destroy_process_group()
