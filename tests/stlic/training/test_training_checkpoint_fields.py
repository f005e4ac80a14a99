"""Fuzz of a training checkpoint's fields (stlic/training/checkpoint.py, STLICSolver.load_state_dict).

Every field deleted or replaced by a value of another kind is one ValueError naming the file and
the field, never torch's screenful or an AttributeError from deep inside an optimizer.
"""
from __future__ import annotations

import pytest
import torch

from stlic.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from stlic.training.solver import STLICSolver
from stlic_training_helpers import fast_config

WRONG = ("abc", 5, None, [], {}, [1.5, -2])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt_fields") / "run"
    solver = STLICSolver(fast_config(), out_dir=out)
    solver.save_checkpoint()
    return out, torch.load(out / CHECKPOINT_NAME, weights_only=True)


@pytest.fixture(scope="module")
def solver():
    return STLICSolver(fast_config())


def _variants(state):
    for field in sorted(state):
        yield field, "deleted", {k: v for k, v in state.items() if k != field}
        for value in WRONG:
            yield field, repr(value), {**state, field: value}


def test_every_damaged_field_is_one_error_naming_file_and_field(run, solver, tmp_path):
    out, state = run
    path = tmp_path / CHECKPOINT_NAME
    checked = 0
    for field, change, damaged in _variants(state):
        if (field, change) in (("step", "5"), ("train_seconds", "5"), ("train_seconds", "deleted")) or (
                field == "scaler" and damaged.get(field) == state["scaler"]):
            continue  # a valid step; valid seconds, or none (older checkpoints); a disabled GradScaler's state
        torch.save(damaged, path)
        try:
            solver.load_state_dict(load_checkpoint(path), source=path)
        except ValueError as error:
            message = str(error)
        else:
            pytest.fail(f"field {field} {change}: loaded without an error")
        assert message.startswith(f"{str(path)!r}: ") and f"field {field} " in message, (field, change, message)
        assert "\n" not in message.strip() or len(message) < 600
        checked += 1
    assert checked >= 7 * len(state) - 4


def test_a_model_of_another_size_names_the_keys(run, solver, tmp_path):
    _, state = run
    model = dict(state["model"])
    model.pop(next(iter(model)))
    path = tmp_path / CHECKPOINT_NAME
    torch.save({**state, "model": model}, path)
    with pytest.raises(ValueError, match=r"field model does not fit this run \(RuntimeError: Error\(s\) in loading "
                                         r"state_dict for STLIC: Missing key\(s\)"):
        solver.load_state_dict(load_checkpoint(path), source=path)


def test_a_checkpoint_from_before_train_seconds_loads_with_zero(run, solver, tmp_path):
    _, state = run
    path = tmp_path / CHECKPOINT_NAME
    torch.save({k: v for k, v in state.items() if k != "train_seconds"}, path)
    solver.train_seconds = 123.0
    solver.load_state_dict(load_checkpoint(path), source=path)
    assert solver.train_seconds == 0.0
