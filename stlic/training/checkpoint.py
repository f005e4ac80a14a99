"""Training checkpoints: atomic writes and the random states an exact resume needs.

A checkpoint is a plain dict of tensors, numbers, strings and containers, so it loads with
``torch.load(..., weights_only=True)``. It is written to a synced temporary file and moved over
``path`` with ``os.replace`` (:func:`stlic.checkpoints.atomic_torch_save`): a crash mid-write
leaves the previous checkpoint intact. A field that is missing, of the wrong kind or does not fit
the run is an error naming the file and the field (:func:`load_checkpoint`, :func:`load_fields`).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

#: file name of the latest training checkpoint inside a run folder
CHECKPOINT_NAME = "checkpoint.pt"
#: file name of the inference model (stlic.checkpoints format) written beside it
MODEL_NAME = "model.pt"


def export_model(model: torch.nn.Module, model_config, path: str | Path, extra: dict | None = None) -> Path:
    """Write ``model`` as an inference checkpoint (``stlic.checkpoints``, what ``stlic eval`` and
    ``compress`` read) without touching the training model: a copy gets its coding tables
    (``update(force=True)``), so the run's state, and hence an exact resume, is unchanged."""
    import copy

    from stlic.checkpoints import save_model_checkpoint

    inference = copy.deepcopy(model).eval()
    inference.update(force=True)
    return save_model_checkpoint(path, inference, model_config, extra=extra)


def load_inference_model(path: str | Path, map_location: str | torch.device = "cpu"):
    """``(model, ModelConfig, extra)`` of an inference file (``model.pt``), or of a training
    checkpoint (``checkpoint.pt``: its model at that step, coding tables rebuilt, with a warning
    naming the step and the ``model.pt`` written beside it); anything else raises as before."""
    import warnings

    from stlic.checkpoints import load_model_checkpoint

    try:
        return load_model_checkpoint(path, map_location)
    except ValueError as error:
        if "no format marker" not in str(error):
            raise
        try:
            state = load_checkpoint(path, map_location)
        except ValueError:
            raise error from None
    from stlic.registry import get_model
    from stlic.training.config import TrainConfig

    config = TrainConfig.from_dict(state["config"])
    model_config = config.model_config()
    model = get_model("stlic", model_config)
    model.load_state_dict(state["model"])
    model = model.to(map_location).eval()
    model.update(force=True)
    warnings.warn(f"{str(path)!r} is a training checkpoint: evaluating its model at step {state['step']} "
                  f"({Path(path).parent / MODEL_NAME} holds the same model as an inference file)", stacklevel=2)
    return model, model_config, {"step": int(state["step"]), "train_config": state["config"]}


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
    if not isinstance(state, dict) or not {"step", "model"} & set(state):
        raise ValueError(f"{str(path)!r} is not an ST-LIC training checkpoint (no 'step'/'model')")
    for name in ("step", "model", "config"):
        if name not in state:
            raise ValueError(f"{str(path)!r}: field {name} is missing (the file was written by another version "
                             "of stlic or damaged)")
    step = state["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"{str(path)!r}: field step must be an integer >= 0, got {step!r} (the file was edited "
                         "or damaged)")
    from stlic.training.config import TrainConfig

    try:
        TrainConfig.from_dict(state["config"])
    except (ValueError, TypeError) as error:
        raise ValueError(f"{str(path)!r}: its field config is invalid ({' '.join(str(error).split())}); the file "
                         "was written by another version of stlic or edited") from None
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


def load_fields(state: Mapping[str, Any], loaders: Sequence[tuple[str, Callable[[Any], None]]],
                source: str | Path | None = None) -> None:
    """Call each ``loader`` on ``state[field]`` in order; a missing field or one its loader refuses
    (torch's long load errors, a KeyError deep in an optimizer state) is one ValueError naming the
    file and the field."""
    from stlic.checkpoints import load_error_summary

    where = f"{str(source)!r}: " if source is not None else "training checkpoint: "
    for field, loader in loaders:
        if field not in state:
            raise ValueError(f"{where}field {field} is missing (the file was written by another version of stlic "
                             "or damaged)")
        try:
            loader(state[field])
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as error:
            raise ValueError(f"{where}field {field} does not fit this run ({load_error_summary(error)}); the file "
                             "was written for another model or by another version of stlic, or is damaged") from None


def check_data_stream(value: Any) -> tuple[int, int]:
    """A checkpoint's ``data_stream``: (stage index, batches drawn in that stage), both integers >= 0."""
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
        raise ValueError(f"expected [stage index, batches drawn], two integers >= 0, got {value!r}")
    return int(value[0]), int(value[1])


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
