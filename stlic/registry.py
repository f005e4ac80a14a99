"""Model registry in CompressAI's style: ``@register_model("name")`` and ``get_model``."""
from __future__ import annotations

from typing import Callable, TypeVar

import torch.nn as nn

_MODELS: dict[str, type[nn.Module]] = {}
T = TypeVar("T", bound=type[nn.Module])


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator registering a model class under ``name``."""

    def decorator(cls: T) -> T:
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered to {_MODELS[name].__name__}")
        _MODELS[name] = cls
        return cls

    return decorator


def get_model(name: str, *args, **kwargs) -> nn.Module:
    """Instantiate the registered model ``name``."""
    import stlic.models  # noqa: F401  (registers the built-in models)

    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; registered models: {sorted(_MODELS)}")
    return _MODELS[name](*args, **kwargs)


def registered_models() -> list[str]:
    import stlic.models  # noqa: F401

    return sorted(_MODELS)
