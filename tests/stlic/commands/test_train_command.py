"""`stlic train` guards its run folder: a lock, stale temporaries removed, an existing run kept
unless --resume / --force, and one clear line for a corrupt checkpoint, a model config that does
not match the checkpoint, invalid YAML, or a NaN before any checkpoint."""
from __future__ import annotations

import shutil

import pytest

from stlic.cli import main
from stlic.training.checkpoint import CHECKPOINT_NAME
from stlic.training.config import load_config
from stlic.training.objective import STLICObjective
from stlic.training.run_lock import RunLock
from stlic.training.solver import STLICSolver


@pytest.fixture(scope="module")
def run_with_checkpoint(tmp_path_factory, fast_config_file):
    """A run folder holding a step-0 checkpoint of the tiny model."""
    out = tmp_path_factory.mktemp("train_run") / "run"
    STLICSolver(load_config(fast_config_file), out_dir=out).save_checkpoint()
    return out


def _train(files, config, out, *extra):
    return main(["train", "--config", str(config), "--data", str(files.image_dir), "--out", str(out), *extra])


def _one_error_line(capsys):
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("stlic train: error:")]
    assert len(lines) == 1
    return lines[0]


def test_a_locked_run_folder_is_refused(cli_files, fast_config_file, tmp_path, capsys):
    out = tmp_path / "run"
    with RunLock(out):
        assert _train(cli_files, fast_config_file, out, "--steps", "0") == 2
        assert "is in use by another process" in _one_error_line(capsys)
        assert not (out / "train_log.jsonl").exists()
    assert _train(cli_files, fast_config_file, out, "--steps", "0") == 0  # released: free again


def test_stale_temporaries_of_a_killed_run_are_removed(cli_files, fast_config_file, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / ".checkpoint.pt.k1ll3d.tmp", out / ".model.pt.abc123.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1024)
    (out / "notes.tmp").write_text("mine")  # not ours: kept
    assert _train(cli_files, fast_config_file, out, "--steps", "0") == 0
    assert not any(path.exists() for path in stale) and (out / "notes.tmp").exists()
    assert "removed 2 temporary file(s)" in capsys.readouterr().err


def test_an_existing_run_needs_resume_or_force(cli_files, fast_config_file, run_with_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run_with_checkpoint, out)
    before = (out / CHECKPOINT_NAME).read_bytes()
    assert _train(cli_files, fast_config_file, out, "--steps", "0") == 2
    assert "already holds a run" in _one_error_line(capsys)
    assert (out / CHECKPOINT_NAME).read_bytes() == before
    assert _train(cli_files, fast_config_file, out, "--steps", "0", "--force") == 0
    assert not (out / CHECKPOINT_NAME).exists() and (out / "model.pt").is_file()


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_resume_from_a_damaged_checkpoint_is_one_line(cli_files, run_with_checkpoint, tmp_path, capsys, damage):
    out = tmp_path / "run"
    shutil.copytree(run_with_checkpoint, out)
    path = out / CHECKPOINT_NAME
    data = path.read_bytes()
    path.write_bytes(bytes(range(256)) * 64 if damage == "random" else data[: len(data) // 2])
    assert main(["train", "--out", str(out), "--resume", "--steps", "0"]) == 2
    line = _one_error_line(capsys)
    assert "is not a readable training checkpoint" in line and len(line) < 400


def test_resume_with_a_config_of_another_model_is_one_short_line(cli_files, run_with_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run_with_checkpoint, out)
    assert _train(cli_files, "stlic_small", out, "--resume", "--steps", "0") == 2
    line = _one_error_line(capsys)
    assert "builds a different model than the checkpoint" in line and "resume without --config" in line
    assert len(line) < 600


def test_invalid_yaml_is_one_line(cli_files, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: 1e-4\nschedule: [\n")
    assert _train(cli_files, bad, tmp_path / "run") == 2
    assert "invalid YAML" in _one_error_line(capsys)


def test_a_nan_at_step_1_does_not_claim_a_checkpoint(cli_files, fast_config_file, tmp_path, monkeypatch, capsys):
    original = STLICObjective.weights
    monkeypatch.setattr(STLICObjective, "weights", lambda self, *a, **k: {**original(self, *a, **k), "l2": float("nan")})
    assert _train(cli_files, fast_config_file, tmp_path / "run", "--steps", "2") == 3
    err = capsys.readouterr().err
    assert "at step 1" in err and "no checkpoint had been written yet" in err and "last good" not in err
