"""Model fingerprint stored in every ``.stlic`` file.

Decoding needs exactly the encoder's network and CDF tables; a file made by another model
decodes to garbage without any error from the entropy coder. The fingerprint is::

    sha256( JSON(model config, sorted keys)
            || for each state_dict entry in sorted order: name, dtype, shape, raw bytes )[:8]

so a different preset, a different checkpoint of the same preset, or missing ``update()``
tables all give a different fingerprint. Hashing the weights costs ~0.1 s for the full model;
:func:`model_fingerprint` caches the result per module until its state changes.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import torch
import torch.nn as nn

from stlic.codec.bitstream import FINGERPRINT_BYTES


def model_config_dict(model: nn.Module) -> Mapping[str, Any]:
    """The model's config as a plain dict (``model.config.to_dict()``), or {} if it has none."""
    config = getattr(model, "config", None)
    return config.to_dict() if hasattr(config, "to_dict") else {}


def state_fingerprint(config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> bytes:
    """First FINGERPRINT_BYTES bytes of the sha256 described in the module docstring."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.digest()[:FINGERPRINT_BYTES]


def model_fingerprint(model: nn.Module) -> bytes:
    """Fingerprint of ``model`` (cached; recomputed when any tensor's version counter moves)."""
    state = model.state_dict(keep_vars=True)
    versions = tuple((name, t.data_ptr(), tuple(t.shape), t._version) for name, t in state.items())
    cached = getattr(model, "_stlic_fingerprint", None)
    if cached is not None and cached[0] == versions:
        return cached[1]
    fingerprint = state_fingerprint(model_config_dict(model), state)
    object.__setattr__(model, "_stlic_fingerprint", (versions, fingerprint))
    return fingerprint
