"""Model checkpoint file shared by the trainer (export), the codec and the evaluation.

A checkpoint is a ``torch.save``d dict of plain types only (loadable with
``torch.load(..., weights_only=True)``)::

    {"format": "stlic-model", "format_version": 1, "model_name": "stlic",
     "model_config": ModelConfig.to_dict(), "state_dict": {...}, "extra": {...}}

The state dict is taken as is: call ``model.update()`` before saving so the entropy coder's
CDF tables travel with the weights (their sizes depend on the trained scales, so loading
resizes those buffers to the stored shapes, as CompressAI's ``load_state_dict`` does;
see :mod:`stlic.entropy.buffers`).
Training checkpoints (optimizers, step, RNG) live in :mod:`stlic.training.checkpoint`.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from stlic.entropy.buffers import CDF_BUFFERS
from stlic.models.config import ModelConfig
from stlic.registry import get_model

CHECKPOINT_FORMAT = "stlic-model"
CHECKPOINT_VERSION = 1
MODEL_NAME = "stlic"
#: buffers of CompressAI entropy models whose size is set by ``update()`` (the model's
#: ``_load_from_state_dict`` resizes them)
RESIZABLE_BUFFERS = (*CDF_BUFFERS, "scale_table")
_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def _check_plain(value: Any, where: str) -> None:
    """``extra`` must hold only what ``weights_only=True`` can load back."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"checkpoint extra: key {key!r} at {where} is not a str or int")
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(
            f"checkpoint extra: {where} is a {type(value).__name__}; only str/int/float/bool/None, "
            "tensors, lists, tuples and dicts can be loaded with weights_only=True"
        )


def save_model_checkpoint(
    path: str | os.PathLike, model: nn.Module, model_config: ModelConfig, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write the checkpoint of ``model`` atomically (temporary file + ``os.replace``)."""
    extra = dict(extra or {})
    _check_plain(extra, "extra")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_name": MODEL_NAME,
        "model_config": model_config.to_dict(),
        "state_dict": {name: t.detach().cpu() for name, t in model.state_dict().items()},
        "extra": extra,
    }
    return atomic_torch_save(payload, path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically: a synced temporary file beside it, then
    ``os.replace``; a crash or error mid-write leaves the previous file intact and no temporary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as tmp:
            torch.save(obj, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def _read_payload(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # pickle / zip errors of a file that is not a checkpoint
        raise ValueError(f"{str(path)!r} is not a model checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is not an {CHECKPOINT_FORMAT} checkpoint (no format marker)")
    if payload.get("format_version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{str(path)!r} has checkpoint format version {payload.get('format_version')!r}; "
            f"this code reads version {CHECKPOINT_VERSION}"
        )
    if payload.get("model_name") != MODEL_NAME:
        raise ValueError(f"{str(path)!r} holds model {payload.get('model_name')!r}, expected {MODEL_NAME!r}")
    missing = [key for key in ("model_config", "state_dict") if not isinstance(payload.get(key), dict)]
    if missing:
        raise ValueError(f"{str(path)!r} lacks {missing}")
    return payload


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Strict load with an error naming missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{name}: checkpoint {tuple(state[name].shape)} vs model {tuple(own[name].shape)}"
        for name in sorted(set(own) & set(state))
        if state[name].shape != own[name].shape and not name.endswith(RESIZABLE_BUFFERS)
    ]
    if missing or unexpected or mismatched:
        parts = [f"{label} {keys[:8]}{' ...' if len(keys) > 8 else ''}"
                 for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatch", mismatched)) if keys]
        raise ValueError(f"checkpoint {str(path)!r} does not match its model config: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_model_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelConfig, dict[str, Any]]:
    """``(model in eval mode, its ModelConfig, extra)`` from a file of :func:`save_model_checkpoint`."""
    path = Path(path)
    payload = _read_payload(path, map_location)
    config = ModelConfig.from_dict(payload["model_config"])
    model = get_model(MODEL_NAME, config)
    _load_state(model, payload["state_dict"], path)
    return model.to(map_location).eval(), config, dict(payload.get("extra") or {})
