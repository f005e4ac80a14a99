"""Model checkpoint file shared by the trainer (export), the codec and the evaluation.

A checkpoint is a ``torch.save``d dict of plain types only (loadable with
``torch.load(..., weights_only=True)``)::

    {"format": "stlic-model", "format_version": 1, "model_name": "stlic",
     "model_config": ModelConfig.to_dict(), "state_dict": {...}, "extra": {...},
     "weights_sha256": "<hex>"}

``weights_sha256`` is the SHA-256 of the state dict (:func:`weights_digest`: every tensor's name,
dtype, shape and bytes, in key order); loading recomputes it and refuses a file whose weights
changed (a flipped bit that ``torch.load`` does not notice). Files written before the checksum
existed load with a warning.

The state dict is taken as is: call ``model.update()`` before saving so the entropy coder's
CDF tables travel with the weights (their sizes depend on the trained scales, so loading
resizes those buffers to the stored shapes, as CompressAI's ``load_state_dict`` does;
see :mod:`stlic.entropy.buffers`).
Training checkpoints (optimizers, step, RNG) live in :mod:`stlic.training.checkpoint`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from stlic.entropy.buffers import CDF_BUFFERS
from stlic.models.config import ModelConfig
from stlic.output_files import atomic_write, check_input_file, temporary_files
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


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) over the state dict's names, dtypes, shapes and raw bytes, in key order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_model_checkpoint(
    path: str | os.PathLike, model: nn.Module, model_config: ModelConfig, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write the checkpoint of ``model`` atomically (temporary file + ``os.replace``)."""
    extra = dict(extra or {})
    _check_plain(extra, "extra")
    state = {name: t.detach().cpu() for name, t in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_name": MODEL_NAME,
        "model_config": model_config.to_dict(),
        "state_dict": state,
        "extra": extra,
        "weights_sha256": weights_digest(state),
    }
    return atomic_torch_save(payload, path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically: a unique synced temporary file beside it
    (:func:`stlic.output_files.atomic_write`), then ``os.replace``; a crash or error mid-write
    leaves the previous file intact (a kill leaves a ``.NAME.*.tmp``: see :func:`remove_stale_temporaries`)."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def remove_stale_temporaries(folder: str | os.PathLike, names: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_torch_save` left beside ``folder/NAME``.

    Only call it while no other process writes there (``stlic train`` holds the run-folder lock).
    Returns the files removed.
    """
    removed = []
    for name in names:
        for path in temporary_files(folder, name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def load_error_summary(error: BaseException, limit: int = 160) -> str:
    """``Type: first line`` of a ``torch.load`` failure (torch's messages run to a screenful)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if first.endswith(":") and len(lines) > 1:  # "Error(s) in loading state_dict for STLIC:" + the keys
        first = f"{first} {lines[1]}"
    return f"{type(error).__name__}: {first[:limit]}{'...' if len(first) > limit else ''}"


def check_map_location(map_location: str | torch.device) -> None:
    """A clear error for a CUDA device on a machine without one (torch.load's is misleading)."""
    device = torch.device(map_location)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} requested but CUDA is not available on this machine")


def _read_payload(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    check_input_file(path, "model checkpoint")
    check_map_location(map_location)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as error:
        raise OSError(f"cannot read model checkpoint {str(path)!r}: {error}") from None
    except Exception as error:  # pickle / zip errors of a file that is not a checkpoint
        raise ValueError(f"{str(path)!r} is not a model checkpoint ({load_error_summary(error)})") from None
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
    _check_digest(payload, path)
    return payload


def _check_digest(payload: Mapping[str, Any], path: Path) -> None:
    stored = payload.get("weights_sha256")
    if stored is None:
        warnings.warn(f"{str(path)!r} has no weights checksum (written before checksums); "
                      "its weights cannot be verified", stacklevel=4)
        return
    if not isinstance(payload["state_dict"], Mapping) or not all(
            isinstance(t, torch.Tensor) for t in payload["state_dict"].values()):
        raise ValueError(f"{str(path)!r}: the state dict holds non-tensor values")
    if weights_digest(payload["state_dict"]) != stored:
        raise ValueError(f"{str(path)!r} is corrupt: its weights do not match the checksum stored in the file")


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
    config = _model_config(payload["model_config"], path)
    model = get_model(MODEL_NAME, config)
    _load_state(model, payload["state_dict"], path)
    extra = payload.get("extra")
    if extra is not None and not isinstance(extra, Mapping):
        raise ValueError(f"{str(path)!r}: field extra must be a mapping, got {type(extra).__name__} "
                         "(the file was edited or written by another program)")
    return model.to(map_location).eval(), config, dict(extra or {})


def _model_config(values: Mapping[str, Any], path: Path) -> ModelConfig:
    """The file's ModelConfig, or an error naming the file and the field in the user's terms."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{str(path)!r} was written by another version of stlic: its model_config has "
                         f"unknown field(s) {unknown}; this version knows {sorted(known)}")
    missing = sorted(known - set(values))
    if missing:
        raise ValueError(f"{str(path)!r} was written by another version of stlic: its model_config lacks "
                         f"the field(s) {missing}")
    try:
        return ModelConfig.from_dict(values)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{str(path)!r} holds an invalid model_config: {error} (the file was edited or "
                         "damaged; re-export it with `stlic train`)") from None
