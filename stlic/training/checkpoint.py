"""Training checkpoints: atomic writes and the random states an exact resume needs.

A checkpoint is a plain dict of tensors, numbers, strings and containers, so it loads with
``torch.load(..., weights_only=True)``. It is written to a synced temporary file and moved over
``path`` with ``os.replace`` (:func:`stlic.checkpoints.atomic_torch_save`): a crash mid-write
leaves the previous checkpoint intact.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: file name of the latest training checkpoint inside a run folder
CHECKPOINT_NAME = "checkpoint.pt"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a training checkpoint (``weights_only=True``) with a clear error when missing."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no training checkpoint at {str(path)!r}")
    from stlic.checkpoints import check_map_location, load_error_summary

    check_map_location(map_location)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as error:
        raise OSError(f"cannot read training checkpoint {str(path)!r}: {error}") from None
    except Exception as error:  # pickle / zip errors of a truncated or foreign file
        raise ValueError(f"{str(path)!r} is not a readable training checkpoint (truncated or corrupt?): "
                         f"{load_error_summary(error)}") from None
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise ValueError(f"{str(path)!r} is not an ST-LIC training checkpoint (no 'step'/'model')")
    step = state["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"{str(path)!r}: field step must be an integer >= 0, got {step!r} (the file was edited "
                         "or damaged)")
    return state


def resume_target(path: str | Path, step: int, steps: int | None, total: int) -> int:
    """The step a run resumed at ``step`` trains to: ``steps`` (``--steps``), else the schedule's
    ``total``. One below ``step`` is refused: training cannot go back, and exporting the later
    weights as if they were the earlier step's would mislead."""
    target, what = (total, "the schedule's total") if steps is None else (steps, "--steps")
    if target < step:
        raise ValueError(f"{str(path)!r} is at step {step}, past {what} {target}: nothing to train (a run cannot "
                         f"go back; give --steps above {step} to continue it, or --force to start over)")
    return target


def capture_rng_state() -> dict[str, Any]:
    """Global RNG states of python, numpy, torch (CPU and every CUDA device)."""
    version, internal, gauss = random.getstate()
    _, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached"]))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
