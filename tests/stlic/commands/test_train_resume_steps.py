"""`stlic train --resume` with a stop step at or below the checkpoint's (stlic/training/checkpoint.py).

Below it: one error line saying there is nothing to train, exit 2, the run folder untouched. Equal:
nothing trained, the model exported at that step, exit 0. A damaged ``step`` field names it.
"""
from __future__ import annotations

import shutil

import pytest
import torch

from stlic.checkpoints import load_model_checkpoint
from stlic.cli import main
from stlic.training.checkpoint import CHECKPOINT_NAME
from stlic.training.config import load_config
from stlic.training.solver import STLICSolver

AT = 2  # the checkpoint's step


@pytest.fixture(scope="module")
def run_at_step(tmp_path_factory, fast_config_file):
    """A run folder whose checkpoint says step AT (the weights of step 0: only the step matters here)."""
    out = tmp_path_factory.mktemp("resume_run") / "run"
    solver = STLICSolver(load_config(fast_config_file), out_dir=out)
    solver.step = AT
    solver.save_checkpoint()
    return out


def _resume(files, out, *extra):
    return main(["train", "--resume", "--data", str(files.image_dir), "--out", str(out), *extra])


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("steps", [0, 1])
def test_steps_below_the_checkpoint_is_nothing_to_train(cli_files, run_at_step, tmp_path, capsys, steps):
    out = tmp_path / "run"
    shutil.copytree(run_at_step, out)
    before = _snapshot(out)
    assert _resume(cli_files, out, "--steps", str(steps)) == 2
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("stlic train: error:")]
    assert len(errors) == 1
    assert f"{out / CHECKPOINT_NAME}' is at step {AT}, past --steps {steps}: nothing to train" in errors[0]
    assert _snapshot(out) == before  # model.pt (written with the checkpoint) and checkpoint.pt untouched


def test_the_schedule_total_below_the_checkpoint_is_named(cli_files, run_at_step, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run_at_step, out)
    state = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    state["step"] = 5  # the schedule has 4 steps
    torch.save(state, out / CHECKPOINT_NAME)
    assert _resume(cli_files, out) == 2
    assert "is at step 5, past the schedule's total 4: nothing to train" in capsys.readouterr().err


def test_steps_equal_to_the_checkpoint_trains_nothing_and_exports(cli_files, run_at_step, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run_at_step, out)
    checkpoint = (out / CHECKPOINT_NAME).read_bytes()
    assert _resume(cli_files, out, "--steps", str(AT)) == 0
    assert f"nothing to train: {out} is already at step {AT}" in capsys.readouterr().err
    assert (out / CHECKPOINT_NAME).read_bytes() == checkpoint
    _, _, extra = load_model_checkpoint(out / "model.pt")
    assert extra["step"] == AT


@pytest.mark.parametrize("step", ["2", -1, 2.5, True, None])
def test_a_damaged_step_field_names_the_file_and_the_field(cli_files, run_at_step, tmp_path, capsys, step):
    out = tmp_path / "run"
    shutil.copytree(run_at_step, out)
    state = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    state["step"] = step
    torch.save(state, out / CHECKPOINT_NAME)
    assert _resume(cli_files, out, "--steps", "3") == 2
    err = capsys.readouterr().err
    assert f"{out / CHECKPOINT_NAME}': field step must be an integer >= 0, got {step!r}" in err
