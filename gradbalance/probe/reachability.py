"""Reachability: which (loss, group) pairs have no path in the autograd graph, stated by name.

A loss has no path to a group when no parameter of the group is in the loss's autograd graph
(in a hyperprior, the rate has no path to the synthesis transform ``g_s``). Such a cell is
*absent* (``-``), never a share of 0 %, and a target on it cannot be met by any weights, so
derive and the Balancer refuse it by name rather than logging a miss at every update.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np


def no_path_pairs(stats) -> list[tuple[str, str]]:
    """``(loss, group)`` pairs of one :class:`~gradbalance.probe.stats.StepStats` whose loss has no path to the group."""
    return [(stats.losses[i], stats.groups[j]) for i, j in zip(*np.nonzero(~stats.reached))]


def describe_pairs(pairs: Iterable[tuple[str, str]]) -> str:
    """``"bpp to g_s, aux to g_a"``."""
    return ", ".join(f"{loss} to {group}" for loss, group in pairs)


def check_targets_reachable(targets: object, reached: Mapping[tuple[str, str], bool]) -> None:
    """Refuse a ``{group: {loss: percent}}`` target on a pair with no path (``reached[(loss, group)]``
    is False), naming every such pair; a 0 % target there is consistent and passes, as do other target
    forms and unknown pairs (checked by :mod:`gradbalance.target_shares`)."""
    if not isinstance(targets, Mapping) or not all(isinstance(v, Mapping) for v in targets.values()):
        return
    bad = [(loss, group) for group, cells in targets.items() for loss, share in cells.items()
           if share is not None and not _is_zero(share) and reached.get((loss, group)) is False]
    if bad:
        raise ValueError(f"target(s) on a pair with no path: {describe_pairs(bad)} (the loss's graph reaches no "
                         "parameter of the group, no weight can give it a share); remove these targets")


def _is_zero(share: object) -> bool:
    try:
        return float(share) == 0
    except (TypeError, ValueError):
        return False
