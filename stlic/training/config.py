"""Training configuration: a YAML file validated into nested dataclasses.

Every section is a frozen dataclass; :func:`load_config` rejects invalid YAML, an unknown key
(naming the key and its section), a missing required key, a value of the wrong type, a non-finite
number and a number out of its range (learning rates > 0, weight decays >= 0, betas in [0, 1),
``grad_clip`` > 0, counts >= 1, ...), each error naming the key (``optim.grad_clip: must be > 0``). The loss weights
of the paper's Table II live in ``loss_weights``; ``rate`` is the range ``[lo, hi]`` from which
the rate coefficient lambda is drawn log-uniformly per batch (QVRF variable rate).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Union

import yaml

from stlic.training.balancing import BalancerConfig

#: the losses of ST-LIC, in the row order of the paper's Table I
LOSS_NAMES = ("rate", "l2", "l1", "lpips", "wasserstein", "adversarial")
PRECISIONS = ("fp32", "bf16", "fp16")
#: training phases: "rd" = rate-distortion pretraining of the main network (rate + L2 + L1, no
#: refiner, no perceptual losses, no GAN); "stlic" = the ST-LIC objective of Table II
PHASES = ("rd", "stlic")
#: where the perceptual losses (LPIPS, Wasserstein, GAN) act: "semi_decoupled" = on the refiner's
#: output (ST-LIC); "coupled" = on the decoder output x_hat, no refiner (HiFiC / MS-ILLM)
ARRANGEMENTS = ("semi_decoupled", "coupled")
#: losses that need the refiner (and the VGG / discriminator networks): off in phase "rd"
PERCEPTUAL_LOSSES = ("lpips", "wasserstein", "adversarial")
SMALL_IMAGE_POLICIES = ("pad", "upscale")


class ConfigError(ValueError):
    """A training config that does not match the schema (unknown key, wrong type, bad value)."""


def _require(where: str, value: Any, ok: bool, rule: str) -> None:
    """Raise :class:`ConfigError` ``"<where>: must be <rule>, got <value>"`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{where}: must be {rule}, got {value!r}")


def _check_fields(section: str, owner: Any, names: tuple[str, ...], rule: str, test: Callable[[Any], bool],
                  optional: bool = False) -> None:
    """Check fields ``names`` of dataclass ``owner`` (None allowed when ``optional``)."""
    for name in names:
        value = getattr(owner, name)
        if not (optional and value is None):
            _require(f"{section}.{name}", value, test(value), rule)


@dataclass(frozen=True)
class ModelSection:
    """Model preset name (``stlic.models.PRESETS``) plus field overrides."""

    preset: str = "tiny"
    overrides: dict = field(default_factory=dict)

    def build(self, rate_range: tuple[float, float] | None = None):
        """The :class:`stlic.models.ModelConfig` of this section.

        Unless ``overrides`` sets ``rate_lambdas``, the QVRF levels are spread log-evenly over
        ``rate_range`` (the config's lambda range) with the preset's number of levels.
        """
        from stlic.models.config import ModelConfig, log_spaced_lambdas, preset

        try:
            base = preset(self.preset)
            overrides = dict(self.overrides)
            if "rate_lambdas" not in overrides and rate_range is not None and rate_range[0] < rate_range[1]:
                overrides["rate_lambdas"] = log_spaced_lambdas(*rate_range, base.n_levels)
            return ModelConfig.from_dict(overrides, base=base)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"section 'model': {error}") from None


@dataclass(frozen=True)
class LossWeights:
    """Table II of ST-LIC: weights of the six losses; ``rate`` is the lambda range [lo, hi]."""

    rate: tuple[float, float]
    l2: float
    l1: float
    lpips: float
    wasserstein: float
    adversarial: float

    def __post_init__(self) -> None:
        low, high = self.rate
        if not 0 < low <= high:
            raise ConfigError(f"loss_weights.rate: need 0 < lo <= hi, got [{low}, {high}]")
        for name in LOSS_NAMES[1:]:
            if getattr(self, name) < 0:
                raise ConfigError(f"loss_weights.{name}: must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class PerceptualConfig:
    """Perceptual losses: LPIPS backbone/weights and Wasserstein distortion's VGG-16 features.

    ``vgg_backbone``: "auto" (ImageNet VGG-16 from the torch hub cache if present, else the
    ST-LPIPS VGG-16 trunk shipped offline), "vgg16" or "stlpips-vgg16". ``wasserstein_log2_sigma``
    / ``wasserstein_num_scales`` / ``wasserstein_padding`` ("zeros" or "replicate") None keep
    :class:`stlic.losses.WassersteinDistortion`'s defaults (its 3 image scales need patches of
    at least 128 pixels).
    """

    lpips_net: str = "vgg"
    lpips_source: str = "stlpips"
    lpips_weights: Union[str, None] = None
    wasserstein_log2_sigma: Union[float, None] = None
    wasserstein_num_scales: Union[int, None] = None
    wasserstein_padding: Union[str, None] = None
    vgg_weights: Union[str, None] = None
    vgg_backbone: str = "auto"

    def __post_init__(self) -> None:
        for name, choices in (("lpips_net", ("vgg", "alex")), ("lpips_source", ("stlpips", "lpips")),
                              ("vgg_backbone", ("auto", "vgg16", "stlpips-vgg16"))):
            _require(f"perceptual.{name}", getattr(self, name), getattr(self, name) in choices, f"one of {choices}")
        _check_fields("perceptual", self, ("wasserstein_num_scales",), ">= 1", lambda v: v >= 1, optional=True)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """The latent-conditioned PatchGAN (HiFiC) and how it is trained.

    ``base_channels`` / ``n_layers``: width and depth. ``updates_per_step``: discriminator updates
    per generator step (on the same batch). Ablations the paper argues against (ST-LIC balances
    the loss gradients instead of constraining D), off by default:

    - ``spectral_norm``: spectral normalisation of every D convolution (Miyato et al., ICLR 2018;
      ``torch.nn.utils.parametrizations.spectral_norm``), as MS-ILLM (Muckley et al., ICML 2023) uses;
    - ``r1_gamma``: the R1 penalty ``gamma/2 E_x[||grad_x l(x)||^2]`` on real images (Mescheder et
      al., "Which Training Methods for GANs do actually Converge?", ICML 2018), applied lazily
      every ``r1_every`` steps with weight ``gamma * r1_every`` (StyleGAN2's lazy regularisation).
    """

    base_channels: int = 64
    n_layers: int = 4
    updates_per_step: int = 1
    spectral_norm: bool = False
    r1_gamma: float = 0.0
    r1_every: int = 1

    def __post_init__(self) -> None:
        _check_fields("discriminator", self, ("base_channels", "n_layers", "updates_per_step", "r1_every"), ">= 1",
                      lambda v: v >= 1)
        _check_fields("discriminator", self, ("r1_gamma",), ">= 0", lambda v: v >= 0)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW for main + refiner (lr, then ``finetune_lr`` from ``finetune_step``), aux and D.

    The discriminator's AdamW uses ``disc_lr`` (then ``disc_finetune_lr`` from ``finetune_step``;
    None: dropped by the same factor as the main learning rate, ``disc_lr * finetune_lr / lr``)
    and ``disc_weight_decay`` (default 0.01, torch's AdamW default that earlier runs used).
    """

    lr: float = 1e-4
    finetune_lr: float = 1e-5
    finetune_step: Union[int, None] = None
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: Union[float, None] = 1.0
    aux_lr: float = 1e-3
    disc_lr: float = 1e-4
    disc_betas: tuple[float, float] = (0.5, 0.999)
    disc_weight_decay: float = 0.01
    disc_finetune_lr: Union[float, None] = None

    def __post_init__(self) -> None:
        positive = lambda v: v > 0  # noqa: E731
        _check_fields("optim", self, ("lr", "finetune_lr", "aux_lr", "disc_lr"), "> 0", positive)
        _check_fields("optim", self, ("disc_finetune_lr", "grad_clip"), "> 0 (or null)", positive, optional=True)
        _check_fields("optim", self, ("weight_decay", "disc_weight_decay"), ">= 0", lambda v: v >= 0)
        _check_fields("optim", self, ("finetune_step",), ">= 0 (or null)", lambda v: v >= 0, optional=True)
        for name in ("betas", "disc_betas"):
            for index, beta in enumerate(getattr(self, name)):
                _require(f"optim.{name}[{index}]", beta, 0 <= beta < 1, "in [0, 1)")


@dataclass(frozen=True)
class Stage:
    """A stage of training: ``steps`` steps on ``patch_size`` crops of ``data`` (dirs)."""

    patch_size: int
    steps: int
    data: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.patch_size < 64 or self.patch_size % 64:
            raise ConfigError(f"schedule.stages.patch_size: must be a positive multiple of 64, got {self.patch_size}")
        if self.steps < 1:
            raise ConfigError(f"schedule.stages.steps: must be >= 1, got {self.steps}")


@dataclass(frozen=True)
class ScheduleConfig:
    """Stages in sequence (progressive patch size, datasets switched mid-training)."""

    stages: tuple[Stage, ...]
    adversarial_start: int = 0
    small_images: str = "pad"
    strict_data: bool = False  # True: a corrupt training image stops training (default: skipped, warned)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError("schedule.stages: at least one stage is required")
        if self.small_images not in SMALL_IMAGE_POLICIES:
            raise ConfigError(f"schedule.small_images: one of {SMALL_IMAGE_POLICIES}, got {self.small_images!r}")
        _require("schedule.adversarial_start", self.adversarial_start, self.adversarial_start >= 0, ">= 0")

    @property
    def total_steps(self) -> int:
        return sum(stage.steps for stage in self.stages)


@dataclass(frozen=True)
class TrainConfig:
    """The whole training run.

    ``phase``: "stlic" (default) trains main network + refiner on the six losses; "rd" is the
    rate-distortion pretraining of the main network alone (ST-LIC builds on a trained LALIC), and
    needs the weights of lpips, wasserstein and adversarial to be 0.
    ``arrangement`` (phase "stlic"): "semi_decoupled" (default, ST-LIC: perceptual losses on the
    refiner's output) or "coupled" (the ablation: every loss on the decoder output x_hat, the
    refiner neither used nor trained, as in HiFiC, Mentzer et al. 2020, and MS-ILLM, Muckley et al. 2023).
    ``main_perceptual_scale`` (semi_decoupled only), in [0, 1]: the gradient of the refiner-output losses
    reaches the main network through ``x_hat`` multiplied by this (``STLIC.forward(main_grad_scale=)``).
    1 (default) is the paper's Eq. 3, where only the small coefficients keep the main network's share
    "mild"; 0 decouples fully, so the main network trains on rate + L1/L2 alone. The paper relies on a
    second-order optimiser for that mildness; with AdamW this states it explicitly.
    ``freeze_main`` (semi_decoupled only, default False): the main network, its entropy models
    included, keeps the weights ``--init`` loaded, so the decoder output and the rate stay exactly the
    RD start's and only the refiner (and D) train. This is post-filter training, the far end of the
    decoupling: it departs from the paper, whose main network keeps training on rate + L1/L2, and
    is here to measure what the refiner alone buys at an unchanged operating point.
    ``refined_distortion`` (semi_decoupled only), in [0, 1]: the share ``s`` of the L1/L2 terms that is
    measured on the refiner's output, ``l2 = (1 - s) MSE(x, x_hat) + s MSE(x, x_ref)`` (L1 alike).
    0 (default) is the paper's Eq. 3, where L1/L2 train the main network only and nothing but LPIPS,
    WD and L_G shapes the refined pixels; s > 0 anchors the refined pixels as HiFiC and MS-ILLM do at
    their single output. It departs from the paper, and is here because at our scale the un-anchored
    refiner paints coloured halos at edges (``reports/phase2``).
    """

    model: ModelSection
    loss_weights: LossWeights
    schedule: ScheduleConfig
    perceptual: PerceptualConfig = PerceptualConfig()
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    optim: OptimConfig = OptimConfig()
    batch_size: int = 8
    num_workers: int = 0
    seed: int = 0
    precision: str = "fp32"
    log_every: int = 10
    checkpoint_every: int = 1000
    phase: str = "stlic"
    arrangement: str = "semi_decoupled"
    main_perceptual_scale: float = 1.0
    freeze_main: bool = False
    refined_distortion: float = 0.0
    balancer: Union[BalancerConfig, None] = None  # online loss balancing (stlic.training.balancing)

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ConfigError(f"phase: one of {PHASES}, got {self.phase!r}")
        if self.phase == "rd":
            active = [n for n in PERCEPTUAL_LOSSES if getattr(self.loss_weights, n) != 0]
            if active:
                raise ConfigError(f"phase 'rd' trains rate + l2 + l1 only: set loss_weights {active} to 0")
        if self.arrangement not in ARRANGEMENTS:
            raise ConfigError(f"arrangement: one of {ARRANGEMENTS}, got {self.arrangement!r}")
        if self.phase == "rd" and self.arrangement != "semi_decoupled":
            raise ConfigError("arrangement: phase 'rd' has no perceptual losses to arrange; leave it semi_decoupled")
        _require("main_perceptual_scale", self.main_perceptual_scale,
                 isinstance(self.main_perceptual_scale, (int, float)) and 0.0 <= self.main_perceptual_scale <= 1.0,
                 "a number in [0, 1]")
        if self.main_perceptual_scale != 1.0 and (self.phase == "rd" or self.arrangement != "semi_decoupled"):
            raise ConfigError("main_perceptual_scale: only phase 'stlic' with arrangement semi_decoupled has a "
                              f"refiner path to scale; got phase {self.phase!r}, arrangement {self.arrangement!r}")
        _require("refined_distortion", self.refined_distortion,
                 isinstance(self.refined_distortion, (int, float)) and 0.0 <= self.refined_distortion <= 1.0,
                 "a number in [0, 1]")
        if self.refined_distortion != 0.0 and (self.phase == "rd" or self.arrangement != "semi_decoupled"):
            raise ConfigError("refined_distortion: only phase 'stlic' with arrangement semi_decoupled has a refined "
                              f"output to measure; got phase {self.phase!r}, arrangement {self.arrangement!r}")
        if self.freeze_main:
            if self.phase == "rd" or self.arrangement != "semi_decoupled":
                raise ConfigError("freeze_main: only phase 'stlic' with arrangement semi_decoupled trains a refiner "
                                  f"beside a frozen main network; got phase {self.phase!r}, arrangement {self.arrangement!r}")
            if self.main_perceptual_scale != 1.0:
                raise ConfigError("freeze_main: the frozen main network takes no gradient, so main_perceptual_scale "
                                  f"({self.main_perceptual_scale}) has nothing to scale; leave it at 1")
            if self.balancer is not None:
                raise ConfigError("freeze_main: the balancer balances the main network's gradients, which a frozen "
                                  "main network does not have; drop the balancer section")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: one of {PRECISIONS}, got {self.precision!r}")
        for name in ("batch_size", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        _require("num_workers", self.num_workers, self.num_workers >= 0, ">= 0")
        _require("seed", self.seed, 0 <= self.seed < 2**63, "in [0, 2**63)")

    def model_config(self):
        """ModelConfig of the run, its rate levels spanning ``loss_weights.rate``."""
        return self.model.build(self.loss_weights.rate)

    def to_dict(self) -> dict:
        """Plain nested dict (YAML / checkpoint friendly); ``from_dict(to_dict())`` round-trips."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        return _build(cls, data, "config")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a training YAML (a path, or a name under ``configs/``)."""
    from stlic.paths import resolve_config

    resolved = resolve_config(path)
    try:
        with open(resolved, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{resolved}: invalid YAML: {' '.join(str(error).split())}") from None
    except OSError as error:
        raise OSError(f"cannot read config {str(resolved)!r}: {error}") from None
    try:
        return TrainConfig.from_dict(data if data is not None else {})
    except ConfigError as error:
        raise ConfigError(f"{resolved}: {error}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _build(cls: type, data: Any, section: str) -> Any:
    """Instantiate dataclass ``cls`` from mapping ``data``, checking keys and types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"section {section!r}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in section {section!r}; known keys: {sorted(fields)}")
    values = {}
    for name, spec in fields.items():
        if name in data:
            values[name] = _convert(hints[name], data[name], f"{section}.{name}" if section != "config" else name)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {name!r} in section {section!r}")
    return cls(**values)


def _convert(hint: Any, value: Any, where: str) -> Any:
    """Check ``value`` against type ``hint`` (dataclass, tuple, Optional, scalar, dict)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _convert(inner, value, where)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_convert(arg, item, f"{where}[{i}]") for i, (arg, item) in enumerate(zip(args, value)))
    if hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: must be a finite number, got {value!r}")
        return float(value)
    if hint in (int, str, bool) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {type(value).__name__} {value!r}")
