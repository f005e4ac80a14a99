"""Per-loss reachability through ``torch.compile``'d modules, where the autograd graph hides it.

AOTAutograd turns a compiled module's forward into one autograd node (``CompiledFunctionBackward``)
whose inputs are all the parameters it uses. Differentiating one loss through it returns a
gradient for every one of them, exactly zero where the loss has no path, so a cell that eager mode
reports as *absent* (``-``) would read ``0.0 ± 0.0``. The structure is recovered from the
uncompiled graph: a forward hook on each ``torch.compile(module)`` wrapper (``OptimizedModule``)
keeps the call's inputs and outputs until the next backward call (references only: the graph holds
them anyway); once per input signature the wrapped module
(``_orig_mod``) is run again eagerly on detached copies of the inputs (random state and buffers
restored afterwards, so training is unchanged), and each output's leaves are traced. Walking a
loss's real graph, an edge into the compiled node for output k then stands for output k's eager
leaves, and for the real inputs output k depends on (the walk continues there).

``module.compile()`` (in place) and compiled functions have no wrapper to hook: their nodes are
walked as one (every parameter reached), with a warning.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import Optional

import torch
import torch.utils._pytree as pytree
from torch import Tensor, nn

#: autograd node of a compiled (AOTAutograd) region
COMPILED_NODE = "CompiledFunctionBackward"


def compiled_wrappers(model: nn.Module) -> list[nn.Module]:
    """Every ``torch.compile(module)`` wrapper in ``model`` (itself included)."""
    return [m for m in model.modules() if isinstance(getattr(m, "_orig_mod", None), nn.Module)]


class CompiledReach:
    """Which leaves each loss reaches, through the compiled modules of ``model`` (see module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        self.wrappers = compiled_wrappers(model)
        self._calls: list[tuple[int, tuple, dict, list]] = []  # (wrapper, args, kwargs, flat outputs)
        self._eager: dict[tuple, list[Optional[tuple[set[int], list[int]]]]] = {}
        self._warned = False
        self._handles = [w.register_forward_hook(self._hook(i), with_kwargs=True) for i, w in enumerate(self.wrappers)]

    def _hook(self, index: int):
        def keep(module, args, kwargs, output):
            self._calls.append((index, args, kwargs, pytree.tree_flatten(output)[0]))
        return keep

    def clear(self) -> None:
        """Forget the forwards seen since the last backward call (an unprobed step)."""
        self._calls = []

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def leaves_per_loss(self, losses: Sequence[Tensor]) -> Optional[list[set[int]]]:
        """Ids of the leaves each loss reaches (None: no compiled node in the graph, eager walk suffices)."""
        calls = self._calls
        edges: dict[tuple, tuple[set[int], list[Tensor]]] = {}
        for index, args, kwargs, outputs in calls:
            if not any(isinstance(out, Tensor) and out.grad_fn is not None for out in outputs):
                continue  # a forward without a graph (validation under no_grad): nothing to re-run
            flat_args = pytree.tree_flatten((args, kwargs))[0]
            for k, reach in enumerate(self._eager_reach(index, args, kwargs, flat_args)):
                out = outputs[k] if k < len(outputs) else None
                if reach is None or not isinstance(out, Tensor) or out.grad_fn is None:
                    continue
                ids, arg_positions = reach
                key = (out.grad_fn, out.output_nr) if type(out.grad_fn).__name__ == COMPILED_NODE else (out.grad_fn, None)
                edges[key] = (ids, [flat_args[j] for j in arg_positions])
        result, any_compiled = [], False
        for loss in losses:
            ids, compiled = self._walk(loss, edges)
            result.append(ids)
            any_compiled |= compiled
        return result if any_compiled else None

    def _walk(self, loss: Tensor, edges) -> tuple[set[int], bool]:
        reached: set[int] = set()
        compiled = False
        if not loss.requires_grad:
            return reached, compiled
        if loss.grad_fn is None:
            return {id(loss)}, compiled
        stack: list[tuple] = [(loss.grad_fn, 0)]
        seen: set = set()
        while stack:
            node, nr = stack.pop()
            hit = edges.get((node, nr)) or edges.get((node, None))
            if hit is not None:
                compiled = True
                if (node, nr) in seen:
                    continue
                seen.add((node, nr))
                ids, inputs = hit
                reached |= ids
                stack.extend((t.grad_fn, t.output_nr) if t.grad_fn is not None else (None, id(t))
                             for t in inputs if t.requires_grad)
                continue
            if node is None:  # a leaf input of a compiled call
                reached.add(nr)
                continue
            if node in seen:
                continue
            seen.add(node)
            variable = getattr(node, "variable", None)
            if variable is not None:
                reached.add(id(variable))
                continue
            name = type(node).__name__
            if name == COMPILED_NODE:
                compiled = True
                self._warn_unhooked()
            stack.extend((child, child_nr) for child, child_nr in node.next_functions if child is not None)
        return reached, compiled

    def _eager_reach(self, index: int, args, kwargs, flat_args: list) -> list:
        """Per flat output of an eager re-run: (leaf ids, positions of the inputs it depends on), cached."""
        wrapper = self.wrappers[index]
        module = wrapper._orig_mod
        trainable = tuple(id(p) for p in module.parameters() if p.requires_grad)
        signature = (index, trainable, tuple((tuple(a.shape), a.dtype, a.requires_grad) if isinstance(a, Tensor)
                                             else repr(a) for a in flat_args))
        if signature not in self._eager:
            stand_ins = [a.detach().requires_grad_(a.requires_grad) if isinstance(a, Tensor) else a for a in flat_args]
            position = {id(s): j for j, s in enumerate(stand_ins) if isinstance(s, Tensor) and s.requires_grad}
            re_args, re_kwargs = pytree.tree_unflatten(stand_ins, pytree.tree_flatten((args, kwargs))[1])
            with _unchanged(module, flat_args), torch.enable_grad():
                outputs = pytree.tree_flatten(module(*re_args, **re_kwargs))[0]
            reach = []
            for out in outputs:
                if not isinstance(out, Tensor) or not out.requires_grad:
                    reach.append(None)
                    continue
                leaves = _eager_leaves(out)
                reach.append(({i for i in leaves if i not in position}, sorted(position[i] for i in leaves if i in position)))
            self._eager[signature] = reach
        return self._eager[signature]

    def _warn_unhooked(self) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn("part of the graph was compiled without a torch.compile(module) wrapper the probe can "
                          "hook (module.compile() in place, or a compiled function): losses with no path to a "
                          "group through it read as zero there, not as absent ('-')", UserWarning, stacklevel=5)


def _eager_leaves(out: Tensor) -> set[int]:
    """Ids of the leaves requiring grad that ``out``'s (eager) graph reaches."""
    leaves: set[int] = set()
    stack, seen = [out.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            leaves.add(id(variable))
        else:
            stack.extend(child for child, _ in node.next_functions)
    return leaves


@contextlib.contextmanager
def _unchanged(module: nn.Module, inputs: list):
    """Restore the random state and the buffers (BatchNorm statistics) after an extra forward."""
    devices = sorted({t.device.index for t in [*module.parameters(), *(a for a in inputs if isinstance(a, Tensor))]
                      if t.device.type == "cuda"})
    buffers = [(b, b.detach().clone()) for b in module.buffers()]
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    if not torch.equal(b, saved):  # an unchanged buffer keeps its version: the compiled
                        b.copy_(saved)             # graph may have saved it for backward
