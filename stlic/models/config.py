"""Model configuration of ST-LIC: one dataclass for every width, depth and rate level.

``PRESETS["full"]`` holds the numbers of LALIC (Feng et al., "Linear Attention Modeling for
Learned Image Compression", CVPR 2025) as used by ST-LIC; ``"small"`` and ``"tiny"`` run the
same code with fewer channels and blocks (CPU demos and tests).

Rate levels (QVRF, Tong et al., ICIP 2023). ST-LIC draws the rate coefficient lambda of each
batch from a range (Table II: [0.55, 6.40], [0.135, 1.70], [0.055, 0.63]). The model keeps
``rate_lambdas``, strictly increasing and log-spaced over that range; level ``l`` is trained for
``rate_lambdas[l]`` and a continuous lambda maps to a continuous level by log-linear
interpolation::

    level(lambda) = l + (ln lambda - ln lambda_l) / (ln lambda_{l+1} - ln lambda_l),
    clamped to [0, n_levels - 1].

Larger level = larger rate coefficient. Training pushes a larger coefficient towards a lower
bitrate, but the levels' gains are learned (level 0's is fixed at 1), so the order by rate is not
enforced: ``pretrained/lalic_tiny_rd``'s level 1 spends more bits than its level 0.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

#: ST-LIC Table II: the lambda range of each of its three variable-rate models
PAPER_LAMBDA_RANGES = ((0.55, 6.40), (0.135, 1.70), (0.055, 0.63))


def log_spaced_lambdas(low: float, high: float, n_levels: int) -> tuple[float, ...]:
    """``n_levels`` rate coefficients spaced evenly in log from ``low`` to ``high``."""
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high for the lambda range, got ({low}, {high})")
    if n_levels < 2:
        raise ValueError(f"need at least 2 rate levels, got {n_levels}")
    step = (math.log(high) - math.log(low)) / (n_levels - 1)
    return tuple(round(math.exp(math.log(low) + i * step), 6) for i in range(n_levels))


#: integer-list fields: (length, None = any, and the smallest allowed value)
_INTEGER_LISTS = {"transform_channels": (4, 1), "transform_depths": (3, 0), "hyper_channels": (2, 1),
                  "groups": (None, 1)}
#: integer fields and their smallest allowed value
_INTEGERS = {"hyper_depth": 0, "block_hidden_rate": 1, "context_blocks": 0, "context_hidden_rate": 1,
             "aggregation_min_channels": 1, "aggregation_layers": 1, "aggregation_expansion": 1,
             "refiner_channels": 1, "refiner_depth": 1}


def _is_integer(value: Any, low: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def check_field_types(values: Mapping[str, Any]) -> None:
    """A ValueError naming the first field whose value has the wrong kind, e.g. ``field
    transform_channels must be a list of 4 integers >= 1, got 'abc'`` (checked before any use)."""
    for name, (length, low) in _INTEGER_LISTS.items():
        value = values[name]
        if not (isinstance(value, (list, tuple)) and (length is None or len(value) == length) and value
                and all(_is_integer(v, low) for v in value)):
            count = f"{length} " if length else ""
            raise ValueError(f"field {name} must be a list of {count}integers >= {low}, got {value!r}")
    for name, low in _INTEGERS.items():
        if not _is_integer(values[name], low):
            raise ValueError(f"field {name} must be an integer >= {low}, got {values[name]!r}")
    lambdas = values["rate_lambdas"]
    if not (isinstance(lambdas, (list, tuple)) and lambdas and all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in lambdas)):
        raise ValueError(f"field rate_lambdas must be a list of positive numbers, got {lambdas!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Every size of the LALIC main network, the UNet refiner and the rate levels.

    ``transform_channels`` = (N1, N2, N3, M): widths of g_a after each stride-2 conv (g_s mirrors
    it); ``transform_depths`` = Bi-RWKV blocks after the first three convs of g_a.
    ``hyper_channels`` = (N5, Z): h_a widths, Z = channels of the hyper-latent z.
    ``groups``: channel groups of y for the SCCTX entropy model (must sum to M).
    """

    transform_channels: tuple[int, int, int, int] = (96, 144, 256, 320)
    transform_depths: tuple[int, int, int] = (2, 4, 6)
    hyper_channels: tuple[int, int] = (256, 192)
    hyper_depth: int = 6
    block_hidden_rate: int = 4
    groups: tuple[int, ...] = (16, 16, 32, 64, 192)
    context_blocks: int = 2
    context_hidden_rate: int = 8
    aggregation_min_channels: int = 256
    aggregation_layers: int = 3
    aggregation_expansion: int = 2
    refiner_channels: int = 64
    refiner_depth: int = 4
    rate_lambdas: tuple[float, ...] = field(default_factory=lambda: log_spaced_lambdas(0.55, 6.40, 6))

    def __post_init__(self) -> None:
        check_field_types({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        for name in _INTEGER_LISTS:  # plain Python numbers (numpy ones would not survive weights_only)
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in _INTEGERS:
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "rate_lambdas", tuple(float(v) for v in self.rate_lambdas))
        if sum(self.groups) != self.latent_channels:
            raise ValueError(
                f"field groups: {list(self.groups)} sum to {sum(self.groups)}, not the latent channels M={self.latent_channels}"
            )
        if len(self.rate_lambdas) < 1 or any(v <= 0 for v in self.rate_lambdas):
            raise ValueError(f"field rate_lambdas must be positive, got {self.rate_lambdas}")
        if any(b <= a for a, b in zip(self.rate_lambdas, self.rate_lambdas[1:])):
            raise ValueError(f"field rate_lambdas must be strictly increasing, got {self.rate_lambdas}")

    @property
    def latent_channels(self) -> int:
        """M, channels of the latent y."""
        return self.transform_channels[-1]

    @property
    def n_levels(self) -> int:
        return len(self.rate_lambdas)

    def level_for_lambda(self, lmbda: float) -> float:
        """Continuous QVRF level of rate coefficient ``lmbda`` (log-linear, clamped)."""
        if not lmbda > 0:
            raise ValueError(f"rate coefficient must be positive, got {lmbda}")
        lambdas = self.rate_lambdas
        if lmbda <= lambdas[0] or len(lambdas) == 1:
            return 0.0
        if lmbda >= lambdas[-1]:
            return float(len(lambdas) - 1)
        upper = next(i for i, value in enumerate(lambdas) if value >= lmbda)
        low, high = math.log(lambdas[upper - 1]), math.log(lambdas[upper])
        return upper - 1 + (math.log(lmbda) - low) / (high - low)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base: "ModelConfig | str | None" = None) -> "ModelConfig":
        """Config from a mapping (e.g. a YAML block); keys not given come from ``base``.

        ``base`` is a ModelConfig or a preset name; an unknown key raises a ValueError naming it.
        """
        if not isinstance(values, Mapping):
            raise ValueError(f"a model config must be a mapping of fields, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; known keys: {sorted(known)}")
        if isinstance(base, str):
            base = preset(base)
        return dataclasses.replace(base or cls(), **dict(values))


def preset(name: str) -> ModelConfig:
    """The preset ``name`` of PRESETS, with a clear error for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; presets: {sorted(PRESETS)}")
    return PRESETS[name]


PRESETS: dict[str, ModelConfig] = {
    # LALIC's published sizes (~66M parameters in the main network).
    "full": ModelConfig(),
    # CPU demos: a third of the widths, one or two blocks per stage.
    "small": ModelConfig(
        transform_channels=(48, 64, 96, 128), transform_depths=(1, 1, 2), hyper_channels=(96, 64),
        hyper_depth=1, groups=(8, 8, 16, 32, 64), context_blocks=1, context_hidden_rate=4,
        aggregation_min_channels=96, refiner_channels=32, refiner_depth=3,
    ),
    # Tests: the smallest network that still exercises every part.
    "tiny": ModelConfig(
        transform_channels=(16, 16, 24, 32), transform_depths=(1, 1, 1), hyper_channels=(24, 16),
        hyper_depth=1, block_hidden_rate=2, groups=(2, 2, 4, 8, 16), context_blocks=1,
        context_hidden_rate=2, aggregation_min_channels=32, refiner_channels=8, refiner_depth=2,
    ),
}
