"""MS-SSIM against pytorch_msssim called directly, and its size limit."""
import pytest
import torch
from pytorch_msssim import ms_ssim as reference_ms_ssim

from stlic.evaluation.functional import MS_SSIM_MIN_SIZE, ms_ssim
from stlic.evaluation.metrics import MSSSIMMetric


def _pair(size: tuple[int, int], batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, *size, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2)  # some structure
    return x, (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def test_ms_ssim_matches_pytorch_msssim_per_image():
    x, y = _pair((176, 192))
    got = ms_ssim(x, y)
    expected = reference_ms_ssim(x, y, data_range=1.0, size_average=False)
    torch.testing.assert_close(got.float(), expected, atol=1e-5, rtol=0)
    assert ms_ssim(x, x).sub(1).abs().max() < 1e-9


def test_ms_ssim_minimum_size_is_161_and_smaller_images_raise():
    assert MS_SSIM_MIN_SIZE == 161
    x, y = _pair((161, 161), batch=1)
    assert torch.isfinite(ms_ssim(x, y)).all()
    x, y = _pair((160, 200), batch=1)
    with pytest.raises(ValueError, match="161x161.*160x200"):
        ms_ssim(x, y)


def test_ms_ssim_metric_is_mean_of_images_and_merges():
    x, y = _pair((176, 176), batch=3)
    per_image = reference_ms_ssim(x, y, data_range=1.0, size_average=False).double()
    a, b = MSSSIMMetric(), MSSSIMMetric()
    a.update(x[:1], y[:1])
    b.update(x[1:], y[1:])
    assert a.merge(b).compute() == pytest.approx(per_image.mean().item(), abs=1e-5)
    assert a.count == 3
