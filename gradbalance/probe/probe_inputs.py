"""The inputs of one probed call: which tensors get a per-loss gradient, and the group of each.

The trainable parameters of the groups (``requires_grad`` read now), the ignored ones (they get
``.grad`` but no norm), then the leaves outside the model that the losses reach (group ``other``: a
loss module's learnable parameters, say).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from gradbalance.probe.groups import OTHER, ParameterGroups
from gradbalance.probe.per_loss import trace_leaves


def probe_inputs(partition: ParameterGroups, tensors: Sequence[Tensor], warn_once: Callable[[str, str], None]):
    """This call's inputs (trainable model parameters, then leaves outside the model the losses
    reach), the group names and each group's positions in the inputs; and the reentrant flag."""
    traced = trace_leaves([t for t in tensors if t.requires_grad])
    known = {id(p) for p in partition.params}
    outside = [leaf for leaf in traced.leaves if id(leaf) not in known]
    inputs, positions = [], {}
    for name in (*partition.slices, None):
        sl = partition.slices[name] if name is not None else partition.unmeasured
        members = []
        for p in partition.params[sl]:
            if p.requires_grad:
                members.append(len(inputs))
                inputs.append(p)
        if name is not None:
            positions[name] = members
    if outside:
        if partition.strict:
            shapes = ", ".join(str(tuple(t.shape)) for t in outside[:5])
            raise ValueError(f"{len(outside)} tensor(s) outside the model reach the losses and require grad "
                             f"(shapes {shapes}); add them to the model, detach them, or pass strict=False")
        warn_once("outside", f"{len(outside)} tensor(s) outside the probed model reach the losses "
                        f"and require grad: they get .grad and are measured as group {OTHER!r}")
        positions.setdefault(OTHER, [])
        positions[OTHER] = positions[OTHER] + list(range(len(inputs), len(inputs) + len(outside)))
        inputs.extend(outside)
    other = partition.slices.get(OTHER)
    late = [n for n, p in zip(partition.param_names[other], partition.params[other]) if p.requires_grad] \
        if other is not None and OTHER not in partition.names else []
    if late:
        if partition.strict:
            raise ValueError(f"parameter(s) {late[:5]} became trainable after the probe was built and "
                             "belong to no group; add a group, list them in ignore, or pass strict=False")
        warn_once("late", f"parameter(s) {late[:5]} became trainable after the probe was built: "
                        f"measured as group {OTHER!r}")
    names = [n for n in partition.names if n in positions]
    if OTHER not in names and positions.get(OTHER):
        names.append(OTHER)
    return inputs, tuple(names), [positions[n] for n in names], traced.reentrant_checkpoint


def group_index(n: int, positions: Sequence[Sequence[int]]) -> list[int]:
    """Group of each input position (-1: unmeasured)."""
    out = [-1] * n
    for j, ks in enumerate(positions):
        for k in ks:
            out[k] = j
    return out
