"""ModelConfig: presets, validation, from_dict and the lambda -> level map."""
from __future__ import annotations

import math

import pytest

from stlic.models import PAPER_LAMBDA_RANGES, PRESETS, ModelConfig, log_spaced_lambdas, preset


def test_presets_are_consistent():
    assert set(PRESETS) == {"full", "small", "tiny"}
    full = PRESETS["full"]
    assert full.transform_channels == (96, 144, 256, 320)
    assert full.groups == (16, 16, 32, 64, 192)
    for config in PRESETS.values():
        assert sum(config.groups) == config.latent_channels
        assert config.n_levels == 6


def test_default_lambdas_span_the_first_paper_range_log_spaced():
    lambdas = PRESETS["full"].rate_lambdas
    low, high = PAPER_LAMBDA_RANGES[0]
    assert lambdas[0] == pytest.approx(low) and lambdas[-1] == pytest.approx(high)
    ratios = [b / a for a, b in zip(lambdas, lambdas[1:])]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-4)


@pytest.mark.parametrize("low, high", PAPER_LAMBDA_RANGES)
def test_level_for_lambda_is_log_linear_and_clamped(low, high):
    config = ModelConfig(rate_lambdas=log_spaced_lambdas(low, high, 4))
    lambdas = config.rate_lambdas
    for level, lmbda in enumerate(lambdas):
        assert config.level_for_lambda(lmbda) == pytest.approx(level)
    # the geometric mean of two neighbours lies half-way in log scale
    assert config.level_for_lambda(math.sqrt(lambdas[1] * lambdas[2])) == pytest.approx(1.5)
    # a quarter of the way in log scale (independent float64 computation)
    quarter = math.exp(0.75 * math.log(lambdas[2]) + 0.25 * math.log(lambdas[3]))
    assert config.level_for_lambda(quarter) == pytest.approx(2.25)
    assert config.level_for_lambda(low / 10) == 0.0
    assert config.level_for_lambda(high * 10) == 3.0
    with pytest.raises(ValueError, match="positive"):
        config.level_for_lambda(0.0)


def test_from_dict_overrides_and_names_unknown_keys():
    config = ModelConfig.from_dict({"refiner_channels": 4, "groups": [2, 2, 4, 8, 16]}, base="tiny")
    assert config.refiner_channels == 4 and config.groups == (2, 2, 4, 8, 16)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="'widht'"):
        ModelConfig.from_dict({"widht": 3})
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        preset("huge")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"groups": (16, 16)}, "sum to 32, not the latent channels M=320"),
        ({"rate_lambdas": (1.0, 0.5)}, "strictly increasing"),
        ({"rate_lambdas": (0.0, 0.5)}, "positive"),
        ({"hyper_channels": (1, 2, 3)}, "hyper_channels"),
    ],
)
def test_invalid_configs_raise_clear_errors(values, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**values)
