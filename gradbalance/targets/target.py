"""Probe targets: what ``gradbalance probe --model NAME`` trains and measures.

A target is any object with the attributes of :class:`ProbeTarget`. Packages register a factory
under the ``gradbalance.targets`` entry-point group (``stlic = stlic.probe_target:make_probe_target``);
``module:callable`` also works without registration.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, Optional, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from gradbalance.probe.groups import GroupSpec

ENTRY_POINT_GROUP = "gradbalance.targets"

#: ``backward(losses, weights)``: accumulate the gradient of ``sum_i w_i L_i`` into ``.grad``
BackwardFn = Callable[[Mapping[str, Tensor], Mapping[str, float]], object]


@runtime_checkable
class ProbeTarget(Protocol):
    """A model, its parameter groups and one training step, as the probe CLI needs them.

    An optional attribute ``scaler`` (a ``torch.amp.GradScaler``) makes the probe unscale norms;
    an optional ``epilogue`` (str) is printed by ``gradbalance probe`` after the tables, to put
    them in context (why a cell is far from the reference, which command to run next).
    """

    model: nn.Module
    groups: Mapping[str, GroupSpec]  # e.g. {"main": model.main, "refiner": model.refiner}
    optimizer: Optional[torch.optim.Optimizer]  # Adam/AdamW: optimizer-aware shares
    loss_order: Sequence[str]  # row order of the table
    description: str  # printed by the CLI (preset, data, device)

    def train_step(self, step: int, backward: BackwardFn) -> None:
        """Compute the unweighted losses of one batch, call ``backward(losses, weights)`` exactly
        once, then step the optimizers."""


TargetFactory = Callable[..., ProbeTarget]


def available_targets() -> list[str]:
    """Names registered under the ``gradbalance.targets`` entry-point group."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def resolve_target(name: str) -> TargetFactory:
    """The factory for ``name``: a registered entry point, or ``"package.module:callable"``."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ValueError(f"cannot import target module {module_name!r}: {error}") from error
        if not hasattr(module, attr):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
        return getattr(module, attr)
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not matches:
        raise ValueError(f"unknown probe target {name!r}; registered: {available_targets()} "
                         "(or give module:callable)")
    return matches[0].load()


def make_target(name: str, **options: Any) -> ProbeTarget:
    """Resolve ``name`` and call its factory with the options that are not None.

    An option the factory does not accept is an error naming it (unless it takes ``**kwargs``).
    """
    factory = resolve_target(name)
    options = {k: v for k, v in options.items() if v is not None}
    parameters = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        rejected = sorted(set(options) - set(parameters))
        if rejected:
            raise ValueError(f"target {name!r} does not accept option(s) {rejected}; it takes {list(parameters)}")
    target = factory(**options)
    missing = [a for a in ("model", "groups", "optimizer", "loss_order", "description", "train_step")
               if not hasattr(target, a)]
    if missing:
        raise TypeError(f"target {name!r} lacks the ProbeTarget attribute(s) {missing}")
    return target
