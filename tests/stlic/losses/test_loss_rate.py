"""Rate term against a NumPy float64 -log2 sum and CompressAI's RateDistortionLoss."""
import numpy as np
import pytest
import torch
from compressai.losses import RateDistortionLoss

from stlic.losses import RateLoss, bits_per_pixel, bits_per_pixel_per_image


def _likelihoods(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "y": torch.rand(batch, 16, 4, 6, generator=g, dtype=torch.float64).clamp_min(1e-9),
        "z": torch.rand(batch, 8, 1, 2, generator=g, dtype=torch.float64).clamp_min(1e-9),
    }


def test_bpp_equals_numpy_minus_log2_sum():
    likelihoods = _likelihoods()
    num_pixels = 3 * 64 * 96
    expected = sum(-np.log2(p.numpy()).sum() for p in likelihoods.values()) / num_pixels
    assert RateLoss()(likelihoods, num_pixels).item() == pytest.approx(expected, rel=1e-12)


def test_bpp_matches_compressai_rate_distortion_loss():
    likelihoods = {k: v.float() for k, v in _likelihoods(batch=2, seed=1).items()}
    target = torch.rand(2, 3, 64, 96)
    reference = RateDistortionLoss()({"x_hat": target, "likelihoods": likelihoods}, target)
    ours = bits_per_pixel(likelihoods, 2 * 64 * 96)
    torch.testing.assert_close(ours, reference["bpp_loss"])


def test_per_image_bpp_matches_numpy_and_averages_to_batch_bpp():
    likelihoods = _likelihoods(batch=4, seed=2)
    per_image = bits_per_pixel_per_image(likelihoods, 64 * 96)
    for i in range(4):
        expected = sum(-np.log2(p[i].numpy()).sum() for p in likelihoods.values()) / (64 * 96)
        assert per_image[i].item() == pytest.approx(expected, rel=1e-12)
    assert per_image.mean().item() == pytest.approx(bits_per_pixel(likelihoods, 4 * 64 * 96).item(), rel=1e-12)


def test_rate_gradient_is_minus_one_over_p_ln2_n():
    p = torch.tensor([[0.5, 0.25]], dtype=torch.float64, requires_grad=True)
    bits_per_pixel({"y": p}, 4).backward()
    np.testing.assert_allclose(p.grad.numpy(), -1 / (p.detach().numpy() * np.log(2) * 4))


@pytest.mark.parametrize(
    "likelihoods, pixels, error",
    [({}, 10, ValueError), ({"y": torch.rand(1, 2)}, 0, ValueError), ({"y": [0.5]}, 10, TypeError)],
)
def test_bad_input_is_named(likelihoods, pixels, error):
    with pytest.raises(error):
        bits_per_pixel(likelihoods, pixels)


def test_per_image_rejects_mismatched_batches():
    with pytest.raises(ValueError, match="batch size"):
        bits_per_pixel_per_image({"y": torch.rand(2, 4), "z": torch.rand(3, 4)}, 16)
