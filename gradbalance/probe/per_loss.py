"""Per-loss gradients of one probed step: which leaves the losses reach, and one gradient per loss.

:func:`trace_leaves` walks the autograd graph of the losses once and returns every leaf tensor
that requires grad and that a loss reaches (``AccumulateGrad`` nodes), so tensors outside the
probed model (learnable uncertainty weights, a loss module's parameters) get their ``.grad`` too,
as ``sum(w*L).backward()`` would give them.

Gradients are taken with ``torch.autograd.grad`` (no ``.grad`` is touched). A graph holding a
``torch.utils.checkpoint(use_reentrant=True)`` region cannot be differentiated that way (the
reentrant checkpoint refuses ``.grad()``), so there each loss is back-propagated with
``.backward()`` into ``.grad`` and read back (:func:`grads_by_backward`); the parameters used
inside such a region are invisible to the graph walk, so every trainable model parameter is
collected. Known limit of that path: a tensor outside the model used only inside a reentrant
checkpoint region receives ``.grad`` from a weight-0 loss as if its weight were 1.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

Grads = list[Optional[Tensor]]

#: autograd node of ``torch.utils.checkpoint(..., use_reentrant=True)``
REENTRANT_CHECKPOINT_NODE = "CheckpointFunctionBackward"


@dataclass(frozen=True)
class ReachedLeaves:
    """Leaves requiring grad that the losses reach, and whether a reentrant checkpoint was seen."""

    leaves: tuple[Tensor, ...]
    reentrant_checkpoint: bool


def trace_leaves(losses: Sequence[Tensor]) -> ReachedLeaves:
    """Walk the autograd graph of ``losses`` once (iterative DFS over ``next_functions``)."""
    leaves: dict[int, Tensor] = {}
    seen: set = set()
    stack = []
    checkpoint = False
    for loss in losses:
        if loss.grad_fn is not None:
            stack.append(loss.grad_fn)
        elif loss.requires_grad:  # the loss is itself a leaf
            leaves[id(loss)] = loss
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad holds its leaf
        if variable is not None:
            leaves.setdefault(id(variable), variable)
            continue
        if type(node).__name__ == REENTRANT_CHECKPOINT_NODE:
            checkpoint = True
        stack.extend(child for child, _ in node.next_functions if child is not None and child not in seen)
    return ReachedLeaves(tuple(leaves.values()), checkpoint)


def grads_by_autograd(loss: Tensor, inputs: Sequence[Tensor], retain_graph: bool) -> Grads:
    """``dL/d inputs`` without touching ``.grad`` (None where the loss does not reach an input)."""
    return list(torch.autograd.grad(loss, list(inputs), allow_unused=True, retain_graph=retain_graph))


def grads_by_backward(loss: Tensor, weight: float, inputs: Sequence[Tensor], retain_graph: bool) -> Grads:
    """``dL/d inputs`` through ``.backward()`` (works through reentrant checkpoints).

    The inputs' ``.grad`` is set aside during the call and restored; ``w L`` is back-propagated
    (``L`` when ``w == 0``) so leaves not in ``inputs`` receive exactly their weighted share, and
    the result is divided by ``w``.
    """
    saved = [p.grad for p in inputs]
    scale = weight if weight != 0 else 1.0
    try:
        for p in inputs:
            p.grad = None
        (loss * scale if scale != 1.0 else loss).backward(retain_graph=retain_graph)
        grads = [p.grad for p in inputs]
    finally:
        for p, g in zip(inputs, saved):
            p.grad = g
    return [g if g is None or scale == 1.0 else g / scale for g in grads]


@torch.no_grad()
def accumulate(params: Sequence[Tensor], grads: Grads, weight: float) -> None:
    """``p.grad += w * g`` for every present gradient (creating ``.grad`` where it is None)."""
    existing = [(p.grad, g) for p, g in zip(params, grads) if g is not None and p.grad is not None]
    if existing:
        torch._foreach_add_([e for e, _ in existing], [g for _, g in existing], alpha=weight)
    for p, g in zip(params, grads):
        if g is not None and p.grad is None:
            p.grad = g * weight


def group_norm(grads: Sequence[Optional[Tensor]], device: torch.device) -> Tensor:
    """``||(g_k)_k||_2`` in float64 over the present gradients, on ``device`` (NaN when none is present)."""
    present = [g for g in grads if g is not None]
    if not present:
        return torch.full((), float("nan"), dtype=torch.float64, device=device)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(present)).to(torch.float64))
