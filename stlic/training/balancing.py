"""Online loss balancing in the trainer: a :class:`gradbalance.Balancer` holds Table I's shares.

With a ``balancer`` section in the training config,

    balancer: {targets: configs/targets/paper_table1.yaml, every: 10}

the Table II weights of ``loss_weights`` are only the starting coefficients: every ``every`` steps the
balancer measures each loss's gradient norm in ``main`` (LALIC) and ``refiner`` (UNet), the columns
of ST-LIC's Table I, and updates the coefficients toward the target shares. The rate coefficient is a
multiplier of the lambda drawn per batch (QVRF), 1 at the start; by default it is held (``fixed:
[rate]``), which anchors the scale the shares leave free. The adversarial loss's factor is 0 during
the warm-up, so those steps add nothing to its smoothed norms. A loss with weight 0 in the config is
left out of the balancer.

Coefficients and the shares of the latest probe go to TensorBoard and ``train_log.jsonl``
(``balancer/weight/<loss>``, ``balancer/share/<group>/<loss>``, ``balancer/max_miss`` in percentage
points); the balancer's state goes into ``checkpoint.pt`` (exact resume) and its history to
``RUN/balancer`` (``gradbalance plot RUN/balancer``).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Union

from gradbalance.balancer.spec import BalancerSpec

#: the parameter groups of Table I
MAIN, REFINER = "main", "refiner"


@dataclass(frozen=True)
class BalancerConfig:
    """The ``balancer`` section: the keywords of :class:`gradbalance.BalancerSpec`, one to one.

    Validation is the spec's (the same rules the Balancer applies, checked at startup): the targets
    file is read and a group whose targets cannot sum to 100 % is refused here. ``targets``: ``equal``
    or a YAML file ``{group: {loss: percent}}`` (a path, or relative to the repository).
    ``bounds``: ``{loss: [lo, hi]}`` limits of the coefficients (rate: of its multiplier). The defaults
    are the spec's, except ``fixed: [rate]`` (the rate multiplier anchors the scale the shares leave free).
    """

    targets: str
    every: int = BalancerSpec.every
    ema: float = BalancerSpec.ema
    window: int = BalancerSpec.window
    law: str = BalancerSpec.law
    gain: float = BalancerSpec.gain
    max_change: float = BalancerSpec.max_change
    fixed: tuple[str, ...] = ("rate",)
    bounds: dict = field(default_factory=dict)
    precond: bool = BalancerSpec.precond
    tolerance: float = BalancerSpec.tolerance
    loss_values: bool = BalancerSpec.loss_values

    def __post_init__(self) -> None:
        from stlic.training.config import LOSS_NAMES, ConfigError

        try:
            self.spec().check(LOSS_NAMES, (MAIN, REFINER))
        except ValueError as error:
            raise ConfigError(f"balancer: {error}") from None

    def spec(self) -> BalancerSpec:
        """The :class:`gradbalance.BalancerSpec` of this section (the targets file read)."""
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        settings.update(targets=load_targets(self.targets), bounds={k: tuple(v) for k, v in self.bounds.items()},
                        fixed=list(self.fixed))
        return BalancerSpec(**settings)


def load_targets(targets: str) -> Union[str, dict]:
    """``"equal"``, or the mapping of a target YAML (a path, else relative to the repository)."""
    from gradbalance.io.export import load_yaml_mapping
    from stlic.paths import REPO_ROOT

    if targets == "equal":
        return targets
    path = Path(targets)
    if not path.is_file() and not path.is_absolute() and (REPO_ROOT / path).is_file():
        path = REPO_ROOT / path
    return load_yaml_mapping(path)


class TrainingBalancer:
    """The trainer's :class:`gradbalance.Balancer`: its coefficients replace the config's weights.

    Args:
        config: the ``balancer`` section; ``loss_weights``: the config's Table II weights (the start).
        model: the (unwrapped) ST-LIC model; ``optimizer``: its AdamW (for ``precond``).
        scaler: the fp16 ``GradScaler`` (losses are scaled before differentiation); ``is_main``: rank 0.
        refine: False when the refiner is not trained (``arrangement: coupled``): ``main`` is the only
            group, and targets may name only it.
    """

    def __init__(self, config: BalancerConfig, loss_weights, model, optimizer, scaler=None, is_main: bool = True,
                 refine: bool = True) -> None:
        from gradbalance import Balancer
        from stlic.training.config import LOSS_NAMES

        start = {"rate": 1.0, **{name: float(getattr(loss_weights, name)) for name in LOSS_NAMES[1:]}}
        self.base = {name: value for name, value in start.items() if value != 0}
        main = [p for n, p in model.main.named_parameters() if not n.endswith("quantiles")]
        quantiles = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
        refiner = list(model.refiner.parameters())
        groups = {MAIN: main, REFINER: refiner} if refine else {MAIN: main}  # coupled: no refiner trained
        spec = config.spec()
        self.balancer = Balancer(
            model, groups, weights=self.base, optimizer=optimizer,
            spec=spec.replace(fixed=[n for n in spec.fixed if n in self.base]), loss_order=LOSS_NAMES,
            scaler=scaler if scaler is not None and scaler.is_enabled() else None, strict=True,
            ignore=quantiles + ([] if refine else refiner))
        if not is_main:  # every rank computes the same update: let rank 0 alone report misses
            logging.getLogger("gradbalance.balancer").setLevel(logging.ERROR)

    def weights(self, drawn: Mapping[str, float]) -> dict[str, float]:
        """This batch's weights: ``c_l * drawn_l / start_l`` (the drawn lambda for rate, 0 in the L_G warm-up)."""
        c = self.balancer.weights
        return {l: drawn[l] / self.base[l] * c[l] if l in self.base else drawn[l] for l in drawn}

    def backward(self, losses, weights: Mapping[str, float]):
        """Gradient of ``Σ weights_l L_l`` into ``.grad`` through the balancer (probing every ``every`` steps)."""
        c = self.balancer.weights
        return self.balancer.backward({l: losses[l] for l in self.base}, {l: weights[l] / c[l] for l in self.base})

    def no_sync_if_probing(self, network):
        return self.balancer.no_sync_if_probing(network)

    def scalars(self) -> dict[str, float]:
        """``balancer/weight/<loss>``, ``balancer/share/<group>/<loss>`` (latest probe), ``balancer/max_miss``."""
        out = {f"balancer/weight/{loss}": value for loss, value in self.balancer.weights.items()}
        measured = self.balancer.measured
        if measured is not None:
            out.update({f"balancer/share/{group}/{loss}": float(measured.loc[loss, group])
                        for group in measured.columns for loss in measured.index
                        if not math.isnan(measured.loc[loss, group])})
            out["balancer/max_miss"] = max(self.balancer.misses.values(), default=0.0)
        return out

    def state_dict(self) -> dict:
        return self.balancer.state_dict()

    def load_state_dict(self, state: Mapping) -> None:
        self.balancer.load_state_dict(state)

    def save(self, path: Path) -> Path:
        """The history as a probe run under ``path`` (``gradbalance plot`` draws it)."""
        return self.balancer.save(path, {"model": "stlic"})
