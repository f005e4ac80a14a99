"""PSNR: per-image function and the accumulator, against float64 numpy and scikit-image."""
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from stlic.evaluation.functional import psnr
from stlic.evaluation.metrics import PSNRMetric


def _pair(seed: int, batch: int = 3, noise: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, 24, 32, generator=g)
    scales = torch.linspace(0.5, 2.0, batch).view(-1, 1, 1, 1)
    y = (x + noise * scales * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x, y


def test_psnr_matches_float64_hand_computation_and_skimage():
    x, y = _pair(0)
    got = psnr(x, y)
    xs, ys = x.double().numpy(), y.double().numpy()
    for i in range(x.shape[0]):
        mse = np.mean((xs[i] - ys[i]) ** 2)
        assert got[i].item() == pytest.approx(10 * np.log10(1.0 / mse), abs=1e-10)
        assert got[i].item() == pytest.approx(peak_signal_noise_ratio(xs[i], ys[i], data_range=1.0), abs=1e-10)


def test_psnr_data_range_255_equals_range_1_on_scaled_images():
    x, y = _pair(1)
    torch.testing.assert_close(psnr(x * 255, y * 255, data_range=255.0), psnr(x, y))


def test_psnr_identical_images_is_infinite():
    x, _ = _pair(2, batch=1)
    assert torch.isinf(psnr(x, x)).all()


@pytest.mark.parametrize("shapes", [((1, 3, 8, 8), (1, 3, 8, 9)), ((3, 8, 8), (3, 8, 8))])
def test_psnr_rejects_bad_shapes(shapes):
    with pytest.raises(ValueError, match="shape"):
        psnr(torch.rand(*shapes[0]), torch.rand(*shapes[1]))


def test_psnr_metric_reports_mean_and_pooled_psnr_labelled():
    x, y = _pair(3, batch=4)
    metric = PSNRMetric()
    metric.update(x[:1], y[:1])
    metric.update(x[1:], y[1:])
    result = metric.compute()
    xs, ys = x.double().numpy(), y.double().numpy()
    mses = [np.mean((xs[i] - ys[i]) ** 2) for i in range(4)]
    assert result.count == 4
    assert result.mean_psnr == pytest.approx(np.mean([10 * np.log10(1 / m) for m in mses]), abs=1e-10)
    assert result.pooled_psnr == pytest.approx(10 * np.log10(1 / np.mean(mses)), abs=1e-10)
    assert result.pooled_psnr < result.mean_psnr  # Jensen: images differ in quality


def test_psnr_metric_merge_equals_single_pass_and_reset_clears():
    x, y = _pair(4, batch=4)
    whole, left, right = PSNRMetric(), PSNRMetric(), PSNRMetric()
    whole.update(x, y)
    left.update(x[:3], y[:3])
    right.update(x[3:], y[3:])
    merged = left.merge(right).compute()
    assert merged.mean_psnr == pytest.approx(whole.compute().mean_psnr, abs=1e-12)
    assert merged.pooled_psnr == pytest.approx(whole.compute().pooled_psnr, abs=1e-12)
    whole.reset()
    with pytest.raises(ValueError, match="before any update"):
        whole.compute()
