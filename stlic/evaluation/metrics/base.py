"""Base of the stateful metrics: every state is a float64 tensor that adds across shards.

Because the states are sums (of values, squared errors, feature outer products, counts), two
accumulators combine by addition: :meth:`SumStateMetric.merge` does it in-process and
:meth:`SumStateMetric.reduce` does it across DDP ranks with one ``all_reduce(SUM)`` per state,
after which every rank's :meth:`compute` returns the value over the whole data set.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

M = TypeVar("M", bound="SumStateMetric")


class SumStateMetric(ABC):
    """Accumulator whose state is a dict of additive float64 tensors (torchmetrics-style API)."""

    def __init__(self) -> None:
        self._state: dict[str, Tensor] = {}
        self.reset()

    @abstractmethod
    def _initial_state(self) -> dict[str, Tensor]:
        """Zero tensors of every state (float64)."""

    @abstractmethod
    def compute(self) -> Any:
        """The metric over everything accumulated (after :meth:`reduce` under DDP)."""

    def reset(self) -> None:
        """Clear every state back to zero."""
        self._state = self._initial_state()

    def _add(self, name: str, value: Tensor | float) -> None:
        state = self._state[name]
        self._state[name] = state + torch.as_tensor(value, dtype=state.dtype, device=state.device)

    def state_dict(self) -> dict[str, Tensor]:
        """A copy of the additive states (e.g. to save or send)."""
        return {name: tensor.clone() for name, tensor in self._state.items()}

    def merge(self: M, other: M) -> M:
        """Add ``other``'s states into this one (same class): the union of both data sets."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        if other._state.keys() != self._state.keys() or any(
            other._state[k].shape != v.shape for k, v in self._state.items()
        ):
            raise ValueError(f"cannot merge {type(self).__name__} accumulators of different shapes")
        for name, tensor in other._state.items():
            self._add(name, tensor.to(self._state[name].device))
        return self

    def reduce(self: M, group: Any = None) -> M:
        """Sum the states over all DDP ranks (``all_reduce(SUM)``); a no-op without a process group."""
        if not (dist.is_available() and dist.is_initialized()):
            return self
        for tensor in self._state.values():
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
        return self


class MeanMetric(SumStateMetric):
    """Mean of per-image values: states ``value_sum`` and ``count``."""

    def _initial_state(self) -> dict[str, Tensor]:
        zero = torch.zeros((), dtype=torch.float64)
        return {"value_sum": zero.clone(), "count": zero.clone()}

    def update_values(self, values: Tensor) -> None:
        """Accumulate a 1-D tensor of per-image values."""
        values = torch.as_tensor(values).detach().to(torch.float64).reshape(-1).cpu()
        self._add("value_sum", values.sum())
        self._add("count", float(values.numel()))

    @property
    def count(self) -> int:
        return int(self._state["count"].item())

    def compute(self) -> float:
        """Mean of the accumulated values; ValueError when nothing was accumulated."""
        if self.count == 0:
            raise ValueError(f"{type(self).__name__}.compute() called before any update")
        return float(self._state["value_sum"] / self._state["count"])
