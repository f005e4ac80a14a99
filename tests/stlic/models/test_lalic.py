"""LALIC main network: shapes, likelihoods against a float64 Gaussian reference, errors,
aux loss / update, and the parameter count of the paper-size preset."""
from __future__ import annotations

import math

import pytest
import torch

from stlic.entropy.latent_coders import RoundingQuantizer
from stlic.models import LALIC, PRESETS


def _gaussian_bin_probability(residual: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float64 P(round(r)) under N(0, s^2): Phi((r + 1/2) / s) - Phi((r - 1/2) / s), s >= 0.11."""
    r, s = residual.double(), scale.double().clamp_min(0.11)
    phi = lambda v: 0.5 * torch.erfc(-v / math.sqrt(2.0))  # noqa: E731
    return (phi((r + 0.5) / s) - phi((r - 0.5) / s)).clamp_min(1e-9)


def test_forward_shapes_and_likelihood_ranges(tiny_model, photo_crop):
    x = photo_crop(64, 128)
    with torch.no_grad():
        out = tiny_model.main(x, level=1.0)
    m = PRESETS["tiny"].latent_channels
    assert out.x_hat.shape == x.shape
    assert out.y_hat.shape == (1, m, 4, 8)
    assert out.likelihoods["y"].shape == (1, m, 4, 8)
    assert out.likelihoods["z"].shape == (1, PRESETS["tiny"].hyper_channels[1], 1, 2)
    for likelihood in out.likelihoods.values():
        assert torch.all(likelihood > 0) and torch.all(likelihood <= 1)


def test_eval_likelihoods_match_float64_qvrf_gaussian(lean_model, photo_crop):
    """p(y) = N(0, (sigma a)^2) * U at round((y - mu) a), and y_hat = round((y - mu) a) / a + mu."""
    x = photo_crop(64, 64)
    main, level = lean_model.main, 2.5
    with torch.no_grad():
        out = main(x, level)
        y = main.g_a(x)
        z_hat = main.entropy_bottleneck.quantize(main.h_a(y), "dequantize", main.z_medians())
        gain = main.entropy_model.gain(level)
        groups = tuple(y.split(main.entropy_model.groups, dim=1))
        _, scales, means = main.entropy_model.run(main.h_s(z_hat), RoundingQuantizer(groups, gain))
    symbols = torch.round((y - means) * gain)
    expected = _gaussian_bin_probability(symbols, scales * gain)
    torch.testing.assert_close(out.likelihoods["y"].double(), expected, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(out.y_hat, symbols / gain + means, rtol=0, atol=1e-6)


def test_training_mode_uses_ste_and_noisy_likelihoods(photo_crop):
    torch.manual_seed(1)
    main = LALIC(PRESETS["tiny"]).train()
    x = photo_crop(64, 64)
    out = main(x, level=0.0)
    loss = out.x_hat.square().mean() - sum(torch.log2(l).sum() for l in out.likelihoods.values())
    loss.backward()
    assert main.g_a[0].weight.grad is not None and main.g_a[0].weight.grad.abs().sum() > 0
    assert main.entropy_model.param_aggregation[0][0].mix.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(1, 3, 64, 80), (1, 3, 48, 64), (1, 1, 64, 64), (3, 64, 64)])
def test_forward_rejects_bad_shapes(tiny_model, shape):
    with pytest.raises(ValueError, match=r"multiples of 64|\(B, 3, H, W\)"):
        tiny_model.main(torch.rand(shape))


def test_aux_loss_and_update():
    torch.manual_seed(2)
    main = LALIC(PRESETS["tiny"])
    aux = main.aux_loss()
    assert aux.dim() == 0
    aux.backward()
    assert main.entropy_bottleneck.quantiles.grad.abs().sum() > 0
    assert main.update() is True
    assert main.update() is False  # tables exist already
    assert main.update(force=True) is True
    assert main.entropy_model.gaussian_conditional.quantized_cdf.numel() > 0


def test_coding_needs_update_first(photo_crop):
    torch.manual_seed(3)
    main = LALIC(PRESETS["tiny"]).eval()
    with pytest.raises((RuntimeError, ValueError), match="update"):
        main.compress_latent(photo_crop(64, 64), 0.0)


def test_full_preset_parameter_count(capsys):
    """LALIC reports ~66M parameters (paper size); ours: printed and checked to +-5%."""
    main = LALIC(PRESETS["full"])
    count = sum(p.numel() for p in main.parameters())
    with capsys.disabled():
        print(f"\nLALIC full preset: {count / 1e6:.2f}M parameters")
    assert 0.95 * 66e6 < count < 1.05 * 66e6
