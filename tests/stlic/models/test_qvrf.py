"""QVRF gains: initialisation, geometric interpolation, validation, and rate vs level."""
from __future__ import annotations

import math

import pytest
import torch

from stlic.entropy import QuantGain
from stlic.models import PRESETS


def test_initial_gains_follow_sqrt_lambda_ratio_and_level0_is_fixed():
    lambdas = (0.5, 1.0, 2.0, 8.0)
    gain = QuantGain(lambdas)
    assert gain(0).item() == 1.0
    for level, lmbda in enumerate(lambdas):
        assert gain(level).item() == pytest.approx(math.sqrt(lambdas[0] / lmbda), rel=1e-6)
    # level 0 is not a parameter: only levels 1.. are learned
    assert gain.log_gains.numel() == len(lambdas) - 1


def test_continuous_level_interpolates_geometrically():
    gain = QuantGain((0.5, 1.0, 2.0, 8.0))
    with torch.no_grad():
        gain.log_gains.copy_(torch.tensor([-0.3, -0.9, -1.1]))
    gains = [math.exp(v) for v in (0.0, -0.3, -0.9, -1.1)]
    for level in (0.25, 1.5, 2.9):
        low, t = int(level), level - int(level)
        expected = gains[low] ** (1 - t) * gains[low + 1] ** t
        assert gain(level).item() == pytest.approx(expected, rel=1e-6)


def test_gradient_reaches_only_the_two_bracketing_levels():
    gain = QuantGain((0.5, 1.0, 2.0, 8.0))
    gain(1.5).backward()
    grad = gain.log_gains.grad
    assert grad[0] != 0 and grad[1] != 0 and grad[2] == 0


@pytest.mark.parametrize("level", [-0.1, 3.5, float("nan")])
def test_out_of_range_level_raises(level):
    with pytest.raises(ValueError, match="rate level must lie in"):
        QuantGain((0.5, 1.0, 2.0, 8.0))(level)


def test_rate_decreases_with_level_on_a_fixed_model(lean_model, photo_crop):
    """Coded size and likelihood estimate both fall monotonically from level 0 to the last."""
    x = photo_crop(64, 64)
    sizes, estimates = [], []
    last = PRESETS["tiny"].n_levels - 1
    for level in (0.0, last / 2, float(last)):
        with torch.no_grad():
            out = lean_model(x, level)
        estimates.append(sum(-torch.log2(l).sum().item() for l in out.likelihoods.values()))
        sizes.append(len(lean_model.compress(x, level).strings[0][0]))
    assert all(b < a for a, b in zip(estimates, estimates[1:])), estimates
    assert all(b <= a for a, b in zip(sizes, sizes[1:])), sizes
    assert sizes[-1] < sizes[0]
