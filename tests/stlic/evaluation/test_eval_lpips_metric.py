"""LPIPS accumulator: named variant, values equal stlpips-pytorch called directly."""
import pytest
import torch
from stlpips_pytorch.stlpips import LPIPS as STLPIPS

from stlic.evaluation.lpips_metric import make_lpips_metric
from stlic.evaluation.metrics import LPIPSMetric


def test_lpips_metric_matches_stlpips_pytorch_and_is_named():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(3, 3, 64, 48, generator=g), torch.rand(3, 3, 64, 48, generator=g)
    metric = make_lpips_metric("alex")
    assert metric.name == "ST-LPIPS(alex)"
    per_image = torch.cat([metric.update(x[:1], y[:1]), metric.update(x[1:], y[1:])])
    reference = STLPIPS(net="alex", variant="shift_tolerant", verbose=False)
    with torch.no_grad():
        expected = reference(x, y, normalize=True).flatten().double()
    torch.testing.assert_close(per_image, expected, rtol=1e-5, atol=1e-6)
    assert metric.compute() == pytest.approx(expected.mean().item(), rel=1e-5)
    assert metric.count == 3


def test_lpips_metric_rejects_mismatched_batches():
    metric = LPIPSMetric(lambda a, b: (a - b).abs().mean(dim=(1, 2, 3)), name="L1")
    with pytest.raises(ValueError, match="equal shape"):
        metric.update(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="before any update"):
        metric.compute()
