"""PyTorch Lightning: per-loss, per-module gradient shares (and optionally the Balancer) as a callback.

The LightningModule's ``training_step`` returns a dict of *unweighted* losses, ``{"bpp": bpp, "mse": mse}``
(no ``"loss"`` key). The callback turns it into the weighted loss Lightning optimizes, ``Σ w_l L_l``,
and does the backward through the probe, so ``.grad`` is that of a plain backward of the weighted
sum under automatic optimization, gradient accumulation (``1 / accumulate_grad_batches``, as Lightning
normalizes the loss), AMP (the precision plugin's ``GradScaler``) and DDP (tested with ``ddp_spawn``). On probed steps it logs through the Trainer's loggers (at ``trainer.global_step``)

* ``gradbalance/share/<loss>/<group>``: the loss's share (%) of the gradient reaching the group
  (cells with no path are not logged; they are named once in the log at the first probed step);
* ``gradbalance/weight/<loss>``: the weight in force (the Balancer's coefficients with ``targets``).

Example (a real fit of four steps, probing every second one):

    >>> import torch
    >>> import lightning.pytorch as L
    >>> from torch import nn
    >>> class Codec(L.LightningModule):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.g_a, self.g_s = nn.Linear(4, 2), nn.Linear(2, 4)
    ...     def training_step(self, x, batch_idx):
    ...         y = self.g_a(x)
    ...         return {"bpp": y.abs().mean(), "mse": (self.g_s(y) - x).pow(2).mean()}  # unweighted
    ...     def configure_optimizers(self):
    ...         return torch.optim.SGD(self.parameters(), lr=0.01)
    >>> callback = GradBalanceCallback({"g_a": r"^g_a\\.", "g_s": r"^g_s\\."}, weights={"bpp": 0.1, "mse": 1.0},
    ...                                every=2)
    >>> trainer = L.Trainer(max_steps=4, callbacks=[callback], logger=False, enable_checkpointing=False,
    ...                     enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    >>> trainer.fit(Codec(), torch.utils.data.DataLoader(torch.randn(8, 4), batch_size=2))
    >>> table = callback.probe.table()           # Table I over the probed steps
    >>> table.steps, table.to_frame().loc["bpp", "g_s"]
    ((0, 2), '-')

With ``targets={group: {loss: percent}}`` a :class:`gradbalance.Balancer` sets the weights instead.
Lightning offers no hook between ``training_step`` and its check of the returned dict, so the callback
wraps the module's ``training_step`` and ``backward`` (and restores them at teardown), the hook
Lightning documents for a custom backward. Under DDP the probe reduces gradients itself: probed
steps run the forward without DDP's gradient synchronization (``no_sync``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Optional, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from gradbalance.balancer.online_balancer import Balancer
from gradbalance.probe.groups import GroupSpec
from gradbalance.probe.gradient_probe import GradientProbe
from gradbalance.probe.stats import StepStats

try:  # Lightning >= 2.? marks hook overrides
    from typing_extensions import override
except ImportError:  # pragma: no cover
    def override(method):
        return method

Groups = Union[Mapping[str, GroupSpec], Callable[["pl.LightningModule"], Mapping[str, GroupSpec]]]


class GradBalanceCallback(Callback):
    """Probe (or balance) the unweighted losses a LightningModule's ``training_step`` returns.

    Args:
        groups: ``{name: spec}`` over the LightningModule's parameters (regexes on its parameter
            names, e.g. ``r"^net\\.g_a\\."``), or ``fn(pl_module) -> {name: spec}`` for module objects.
        weights: ``{loss: w}`` (missing: 1); with ``targets``, the Balancer's initial coefficients.
        every: probe every ``every`` backward calls (micro-batches), from the first.
        targets: Balancer targets; ``balancer_options``: further ``Balancer`` keywords (``fixed``, ``ema``, ...).
        ignore: ``fn(pl_module) -> parameters`` left unmeasured (e.g. aux-trained quantiles).
        log_weights: also log the weights in force; ``prefix``: the logged names' prefix.
    """

    def __init__(self, groups: Groups, weights: Optional[Mapping[str, float]] = None, *, every: int = 10,
                 targets: Optional[object] = None, balancer_options: Optional[Mapping[str, Any]] = None,
                 ignore: Optional[Callable[["pl.LightningModule"], list]] = None, log_weights: bool = True,
                 prefix: str = "gradbalance") -> None:
        if not (isinstance(groups, Mapping) and groups) and not callable(groups):
            raise ValueError("groups must be a non-empty {name: spec} mapping or a function of the LightningModule")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if targets is not None and not weights:
            raise ValueError("targets need weights: the Balancer's initial coefficient of every loss")
        for name, value in (weights or {}).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"weight of loss {name!r} must be a finite number, got {value!r}")
        self.groups, self.every, self.targets = groups, every, targets
        self.initial_weights = dict(weights or {})
        self.balancer_options = dict(balancer_options or {})
        self.ignore, self.log_weights, self.prefix = ignore, log_weights, prefix
        self.probe: Optional[GradientProbe] = None
        self.balancer: Optional[Balancer] = None
        self._losses: Optional[dict] = None
        self._stats: Optional[StepStats] = None
        self._restored: Optional[dict] = None
        self._originals: dict = {}
        self._sync: Optional[tuple] = None

    # -- Lightning hooks --------------------------------------------------------------------
    @override
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not pl_module.automatic_optimization:
            raise ValueError("GradBalanceCallback works under automatic optimization; with manual optimization "
                             "call probe.backward(losses, weights) yourself instead of manual_backward")
        groups = self.groups(pl_module) if callable(self.groups) else self.groups
        ignore = list(self.ignore(pl_module)) if self.ignore is not None else []
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if self.targets is not None:
            options = {**({"scaler": scaler} if scaler is not None else {}), **({"ignore": ignore} if ignore else {}),
                       **self.balancer_options}
            self.balancer = Balancer(pl_module, groups, self.targets, weights=self.initial_weights, every=self.every,
                                     **options)
            self.probe = self.balancer.probe
        else:
            self.probe = GradientProbe(pl_module, groups, every=self.every, scaler=scaler, ignore=ignore,
                                       loss_order=list(self.initial_weights))
        if self._restored is not None:
            (self.balancer or self.probe).load_state_dict(self._restored)
            self._restored = None
        self._originals = {"training_step": pl_module.training_step, "backward": pl_module.backward}
        pl_module.training_step = self._training_step(pl_module.training_step)
        pl_module.backward = self._backward(trainer)

    @override
    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                             batch_idx: int) -> None:
        model = trainer.strategy.model
        if self.probe.probes_next_call and isinstance(model, nn.parallel.DistributedDataParallel):
            self._sync = (model, model.require_backward_grad_sync)  # DDP's no_sync() for this forward
            model.require_backward_grad_sync = False

    @override
    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._sync is not None:
            model, flag = self._sync
            model.require_backward_grad_sync, self._sync = flag, None
        stats, self._stats = self._stats, None
        if stats is None:
            return
        metrics = {}
        weights = self.weights  # after the Balancer's update at this step
        shares = stats.shares()
        for i, loss in enumerate(stats.losses):
            for j, group in enumerate(stats.groups):
                if stats.reached[i, j] and math.isfinite(shares[i, j]):
                    metrics[f"{self.prefix}/share/{loss}/{group}"] = 100.0 * float(shares[i, j])
            if self.log_weights:
                metrics[f"{self.prefix}/weight/{loss}"] = float(weights.get(loss, 1.0))
        for logger in trainer.loggers:  # directly: self.log would repeat the last value at every later step
            logger.log_metrics(metrics, step=trainer.global_step)

    @override
    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        for name, original in self._originals.items():
            setattr(pl_module, name, original)
        self._originals = {}

    @override
    def state_dict(self) -> dict:
        owner = self.balancer or self.probe
        return owner.state_dict() if owner is not None else {}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = dict(state_dict) if state_dict else None

    # -- the weighted loss and its backward -------------------------------------------------
    @property
    def weights(self) -> dict:
        """The weights in force: the Balancer's coefficients with ``targets``, else the given weights (1 if missing)."""
        if self.balancer is not None:
            return dict(self.balancer.weights)
        return {name: self.initial_weights.get(name, 1.0) for name in (self._losses or self.initial_weights)}

    def _training_step(self, step: Callable) -> Callable:
        def training_step(*args, **kwargs):
            losses = step(*args, **kwargs)
            if losses is None:  # Lightning skips the step
                return None
            if not isinstance(losses, Mapping) or "loss" in losses or not losses or \
                    not all(isinstance(v, Tensor) for v in losses.values()):
                raise ValueError("with GradBalanceCallback, training_step returns a dict of unweighted losses "
                                 "{name: scalar tensor} without a 'loss' key (the callback weights them), got "
                                 f"{type(losses).__name__}{sorted(losses) if isinstance(losses, Mapping) else ''}")
            self._losses = dict(losses)
            weights = self.weights
            return {"loss": sum(weights.get(name, 1.0) * loss for name, loss in losses.items())}
        return training_step

    def _backward(self, trainer: "pl.Trainer") -> Callable:
        def backward(loss: Tensor, *args, **kwargs) -> None:
            losses, self._losses = self._losses, None
            scale = 1.0 / trainer.accumulate_grad_batches  # Lightning divides the loss by it
            if self.balancer is not None and scale == 1.0:
                stats = self.balancer.backward(losses)
            elif self.balancer is not None:  # a common factor: .grad scales, the shares do not
                stats = self.balancer.backward(losses, factors={name: scale for name in losses})
            else:
                stats = self.probe.backward(losses, self.weights, scale=scale)
            if stats is not None:
                self._stats = stats
        return backward
