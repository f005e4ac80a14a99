"""Parameter groups: a named, disjoint partition of a model's trainable parameters.

A group spec is one of

* an ``nn.Module`` (all its parameters), e.g. ``{"encoder": model.g_a}``;
* a regular expression (``str`` or ``re.Pattern``) searched in the parameter names of the model,
  e.g. ``{"hyper": r"^h_[as]\\."}``;
* an iterable of modules, ``nn.Parameter`` objects or parameter names, e.g.
  ``{"main": [model.g_a, model.g_s]}``.

Names are those of the unwrapped model: DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes
are removed (also where a submodule was compiled), so ``r"^(h_a|h_s)\\."`` selects the same parameters
of ``torch.compile(model)`` as of ``model``. Names include the aliases of tied weights (``head.weight`` tied to ``embed.weight`` is found under
both). Groups hold frozen parameters too: the probe reads ``requires_grad`` on every call, so a
parameter unfrozen later is measured from then on. Groups must be disjoint: a parameter claimed by
two groups is an error, as is a spec that matches nothing.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Union

from torch import nn

#: name of the group of trainable parameters that no spec claims (non-strict partitions)
OTHER = "other"

GroupSpec = Union[nn.Module, str, "re.Pattern[str]", Iterable[nn.Parameter], Iterable[str]]


@dataclass(frozen=True)
class ParameterGroups:
    """The parameters of a model, partitioned into named groups.

    ``params`` lists every parameter of the model once (trainable or not), grouped ones first
    (group by group, in ``names`` order), then the ungrouped ones (``other`` when they are
    measured, then the ``ignore`` list); ``slices[g]`` indexes group ``g`` in ``params``.
    ``unmeasured`` is the slice of the ignored parameters (they get ``.grad`` but no norm).
    """

    names: tuple[str, ...]
    params: tuple[nn.Parameter, ...]
    param_names: tuple[str, ...]
    slices: dict[str, slice]
    frozen_groups: tuple[str, ...]  # groups with no trainable parameter at construction
    unmeasured: slice = field(default_factory=lambda: slice(0, 0))
    strict: bool = False

    @property
    def n_grouped(self) -> int:
        """Number of trainable parameters that belong to a named group or to ``other``."""
        return sum(1 for name in self.slices for p in self.params[self.slices[name]] if p.requires_grad)

    def group_params(self, name: str, trainable_only: bool = True) -> tuple[nn.Parameter, ...]:
        """The parameters of group ``name`` (those with ``requires_grad`` now, by default)."""
        return tuple(p for p in self.params[self.slices[name]] if p.requires_grad or not trainable_only)


def _unwrap(model: nn.Module) -> nn.Module:
    """The module under DistributedDataParallel / DataParallel (``module.``) and ``torch.compile``
    (``_orig_mod.``) wrappers, in any nesting, else the model itself."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch._dynamo OptimizedModule
            model = model._orig_mod
        else:
            return model


def canonical_name(name: str) -> str:
    """A parameter name without torch.compile's ``_orig_mod.`` (e.g. ``g_a._orig_mod.0.weight`` ->
    ``g_a.0.weight`` where only ``g_a`` was compiled), so a regex matches eager and compiled models alike."""
    return re.sub(r"(^|\.)_orig_mod\.", r"\1", name)


def _select(name: str, spec: GroupSpec, named: dict[int, tuple[str, nn.Parameter]],
            aliases: dict[str, int]) -> list[int]:
    """Ids of the model parameters that group ``name``'s spec selects (trainable or not).

    ``aliases`` maps every parameter name, tied aliases included, to the parameter's id.
    """
    if isinstance(spec, (str, re.Pattern)):
        pattern = re.compile(spec)
        return list(dict.fromkeys(pid for pname, pid in aliases.items() if pattern.search(pname)))
    if isinstance(spec, nn.Module):
        items: list = list(spec.parameters())
    elif isinstance(spec, nn.Parameter):
        items = [spec]
    elif isinstance(spec, Iterable):
        items = [q for item in spec for q in (item.parameters() if isinstance(item, nn.Module) else [item])]
    else:
        raise TypeError(f"group {name!r}: spec must be a module, a regex, or an iterable of parameters "
                        f"or parameter names, got {type(spec).__name__}")
    by_name = aliases
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
            raise TypeError(f"group {name!r}: expected modules, parameters or parameter names, "
                            f"got {type(item).__name__}")
    return list(dict.fromkeys(ids))


def partition_parameters(
    model: nn.Module, groups: Mapping[str, GroupSpec], *, strict: bool = False,
    ignore: Iterable[nn.Parameter] = (),
) -> ParameterGroups:
    """Resolve group specs into a disjoint :class:`ParameterGroups`.

    Parameters in no group and not listed in ``ignore`` form the extra group ``other``
    (:data:`OTHER`), measured like any group (a column of the table when one of them is trainable
    now); with ``strict=True`` trainable ones are an error instead. ``ignore`` lists parameters
    deliberately left unmeasured (e.g. entropy-bottleneck quantiles trained by an aux loss); they
    still receive their gradient.
    """
    if not groups:
        raise ValueError("at least one parameter group is required")
    module = _unwrap(model)
    named = {id(p): (canonical_name(n), p) for n, p in module.named_parameters()}
    if not named:
        raise ValueError("the model has no parameters")
    aliases = {canonical_name(n): id(p) for n, p in module.named_parameters(remove_duplicate=False)}
    owner: dict[int, str] = {}
    members: dict[str, list[int]] = {}
    for name, spec in groups.items():
        ids = _select(name, spec, named, aliases)
        if not ids:
            some = ", ".join(list(aliases)[:3])
            raise ValueError(f"group {name!r} matched no parameters of the model (names are searched without "
                             f"the wrappers' '_orig_mod.' and 'module.' prefixes, e.g. {some})")
        for pid in ids:
            if pid in owner:
                raise ValueError(f"groups must be disjoint: parameter {named[pid][0]!r} is in both "
                                 f"{owner[pid]!r} and {name!r}")
            owner[pid] = name
        members[name] = ids
    ignored = {id(p) for p in ignore}
    ungrouped = [pid for pid in named if pid not in owner and pid not in ignored]
    unexpected = [pid for pid in ungrouped if named[pid][1].requires_grad]
    if ungrouped and OTHER in groups:
        raise ValueError(f"group name {OTHER!r} is reserved for the parameters in no group")
    if strict and unexpected:
        listed = ", ".join(named[pid][0] for pid in unexpected[:5])
        raise ValueError(f"{len(unexpected)} trainable parameter(s) belong to no group ({listed}"
                         f"{', ...' if len(unexpected) > 5 else ''}); add a group, list them in ignore, "
                         "or pass strict=False")
    names = tuple(members) + ((OTHER,) if unexpected else ())
    if ungrouped:
        members[OTHER] = ungrouped
    order: list[int] = []
    slices: dict[str, slice] = {}
    for name, ids in members.items():
        slices[name] = slice(len(order), len(order) + len(ids))
        order.extend(ids)
    rest = [pid for pid in named if pid in ignored and pid not in owner]
    unmeasured = slice(len(order), len(order) + len(rest))
    order.extend(rest)
    return ParameterGroups(
        names=names,
        params=tuple(named[pid][1] for pid in order),
        param_names=tuple(named[pid][0] for pid in order),
        slices=slices,
        frozen_groups=tuple(n for n in names if not any(named[pid][1].requires_grad for pid in members[n])),
        unmeasured=unmeasured,
        strict=strict,
    )
