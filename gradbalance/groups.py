"""Parameter groups: a named, disjoint partition of a model's trainable parameters.

A group spec is one of

* an ``nn.Module`` (all its parameters), e.g. ``{"encoder": model.g_a}``;
* a regular expression (``str`` or ``re.Pattern``) searched in the parameter names of the model,
  e.g. ``{"hyper": r"^h_[as]\\."}``;
* an iterable of ``nn.Parameter`` objects or of parameter names.

Parameters with ``requires_grad=False`` are left out (no gradient can be measured). Groups must be
disjoint: a parameter claimed by two groups is an error, as is a spec that matches nothing.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Union

from torch import nn

#: name of the group of trainable parameters that no spec claims (non-strict partitions)
OTHER = "other"

GroupSpec = Union[nn.Module, str, "re.Pattern[str]", Iterable[nn.Parameter], Iterable[str]]


@dataclass(frozen=True)
class ParameterGroups:
    """The trainable parameters of a model, partitioned into named groups.

    ``params`` lists every trainable parameter once, grouped ones first (group by group, in
    ``names`` order), then the ungrouped ones; ``slices[g]`` indexes group ``g`` in ``params``.
    """

    names: tuple[str, ...]
    params: tuple[nn.Parameter, ...]
    param_names: tuple[str, ...]
    slices: dict[str, slice]
    frozen_groups: tuple[str, ...]

    @property
    def n_grouped(self) -> int:
        """Number of parameters that belong to a group."""
        return max((s.stop for s in self.slices.values()), default=0)

    def group_params(self, name: str) -> tuple[nn.Parameter, ...]:
        """The trainable parameters of group ``name``."""
        return self.params[self.slices[name]]


def _unwrap(model: nn.Module) -> nn.Module:
    """The wrapped module of DistributedDataParallel / DataParallel, else the model itself."""
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


def _select(name: str, spec: GroupSpec, named: dict[int, tuple[str, nn.Parameter]]) -> list[int]:
    """Ids of the model parameters that group ``name``'s spec selects (trainable or not)."""
    if isinstance(spec, (str, re.Pattern)):
        pattern = re.compile(spec)
        return [pid for pid, (pname, _) in named.items() if pattern.search(pname)]
    if isinstance(spec, nn.Module):
        items: list = list(spec.parameters())
    elif isinstance(spec, nn.Parameter):
        items = [spec]
    elif isinstance(spec, Iterable):
        items = list(spec)
    else:
        raise TypeError(f"group {name!r}: spec must be a module, a regex, or an iterable of parameters "
                        f"or parameter names, got {type(spec).__name__}")
    by_name = {pname: pid for pid, (pname, _) in named.items()}
    ids = []
    for item in items:
        if isinstance(item, str):
            if item not in by_name:
                raise ValueError(f"group {name!r}: the model has no parameter named {item!r}")
            ids.append(by_name[item])
        elif isinstance(item, nn.Parameter):
            if id(item) not in named:
                raise ValueError(f"group {name!r}: a parameter of shape {tuple(item.shape)} "
                                 "is not a parameter of the probed model")
            ids.append(id(item))
        else:
            raise TypeError(f"group {name!r}: expected parameters or parameter names, got {type(item).__name__}")
    return list(dict.fromkeys(ids))


def partition_parameters(
    model: nn.Module, groups: Mapping[str, GroupSpec], *, strict: bool = False,
    ignore: Iterable[nn.Parameter] = (),
) -> ParameterGroups:
    """Resolve group specs into a disjoint :class:`ParameterGroups`.

    Trainable parameters in no group and not listed in ``ignore`` form the extra group
    ``other`` (:data:`OTHER`), measured like any group; with ``strict=True`` they are an error
    instead. ``ignore`` lists parameters deliberately left unmeasured (e.g. entropy-bottleneck
    quantiles trained by an aux loss); they still receive their gradient.
    """
    if not groups:
        raise ValueError("at least one parameter group is required")
    named = {id(p): (n, p) for n, p in _unwrap(model).named_parameters()}
    if not named:
        raise ValueError("the model has no parameters")
    owner: dict[int, str] = {}
    members: dict[str, list[int]] = {}
    for name, spec in groups.items():
        ids = _select(name, spec, named)
        if not ids:
            raise ValueError(f"group {name!r} matched no parameters of the model")
        for pid in ids:
            if pid in owner:
                raise ValueError(f"groups must be disjoint: parameter {named[pid][0]!r} is in both "
                                 f"{owner[pid]!r} and {name!r}")
            owner[pid] = name
        members[name] = [pid for pid in ids if named[pid][1].requires_grad]
    ungrouped = [pid for pid, (_, p) in named.items() if p.requires_grad and pid not in owner]
    ignored = {id(p) for p in ignore}
    unexpected = [pid for pid in ungrouped if pid not in ignored]
    if unexpected and OTHER in groups:
        raise ValueError(f"group name {OTHER!r} is reserved for the parameters in no group")
    if strict and unexpected:
        listed = ", ".join(named[pid][0] for pid in unexpected[:5])
        raise ValueError(f"{len(unexpected)} trainable parameter(s) belong to no group ({listed}"
                         f"{', ...' if len(unexpected) > 5 else ''}); add a group, list them in ignore, "
                         "or pass strict=False")
    if unexpected:
        members[OTHER] = unexpected
        ungrouped = [pid for pid in ungrouped if pid in ignored]
    order: list[int] = []
    slices: dict[str, slice] = {}
    for name, ids in members.items():
        slices[name] = slice(len(order), len(order) + len(ids))
        order.extend(ids)
    order.extend(ungrouped)
    return ParameterGroups(
        names=tuple(members),
        params=tuple(named[pid][1] for pid in order),
        param_names=tuple(named[pid][0] for pid in order),
        slices=slices,
        frozen_groups=tuple(name for name, ids in members.items() if not ids),
    )
