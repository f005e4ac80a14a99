"""``--device`` of the stlic commands and the probe target: ``auto`` = CUDA when available."""
from __future__ import annotations

import torch

#: what ``--device`` accepts besides cpu / cuda / cuda:N
AUTO = "auto"


def resolve_device(name: str | torch.device = AUTO) -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; other names are checked.

    Raises ``ValueError`` naming an unknown device and ``RuntimeError`` when CUDA is asked for
    but not available.
    """
    if isinstance(name, str) and name == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {name} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device
