"""Lazy package exports and moved-module shims (PEP 562 module ``__getattr__``).

In the manner of torchjd: a package's face is its ``__all__``, each name imported from its submodule
on first use, so importing a small utility (``gradbalance.io.atomic``) does not import the probe,
pandas or matplotlib. A module that moved keeps its old path as a shim (:class:`MovedModules`) that
forwards every name with a :class:`DeprecationWarning` naming the new path. Imports nothing of
gradbalance.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Optional


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps each public name to the submodule
    that defines it; other public names fall back to a submodule of that name (``gradbalance.table``)."""

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
        elif not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__


def moved(old: str, *new: str) -> Callable:
    """``__getattr__`` of the shim left at ``old``: each name is taken from the first of the ``new``
    modules that has it, with a DeprecationWarning pointing the caller at that module."""

    def __getattr__(name: str):
        if name.startswith("__") and name.endswith("__"):  # __file__, __path__, ...: the shim's own, not forwarded
            raise AttributeError(f"module {old!r} (moved to {', '.join(new)}) has no attribute {name!r}")
        for path in new:
            module = importlib.import_module(path)
            if hasattr(module, name):
                warnings.warn(f"{old} moved to {path}: import {name} from {path}", DeprecationWarning, stacklevel=2)
                return getattr(module, name)
        raise AttributeError(f"module {old!r} (moved to {', '.join(new)}) has no attribute {name!r}")

    return __getattr__


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves each old module path of ``moves`` (``{old: (new, ...)}``) as a shim module without a file
    (an import hook, :pep:`451`): its names forward through :func:`moved`. Files keep their history as
    plain renames, and the package's top level lists only its rooms."""

    def __init__(self, moves: Mapping[str, tuple[str, ...]]) -> None:
        self.moves = dict(moves)

    def find_spec(self, fullname: str, path=None, target=None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname not in self.moves:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, origin=f"moved to {self.moves[fullname][0]}")

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module) -> None:
        new = self.moves[module.__name__]
        module.__doc__ = f"Moved to {', '.join(new)}; its names still import from here, with a DeprecationWarning."
        module.__getattr__ = moved(module.__name__, *new)


def install_moved(moves: Mapping[str, tuple[str, ...]]) -> None:
    """Put a :class:`MovedModules` for ``moves`` first on ``sys.meta_path`` (once): it answers only the old
    paths, and a stale copy of an old file elsewhere on the path (an editable install of an older
    checkout) must not shadow the shim."""
    if not any(isinstance(finder, MovedModules) and finder.moves == dict(moves) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModules(moves))
