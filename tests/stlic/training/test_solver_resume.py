"""Exact resume (6 steps vs 3 + resume + 3) and NaN detection keeping the last good checkpoint."""
from __future__ import annotations

import shutil

import torch
import yaml

from stlic_training_helpers import fast_config, poison_loss_weight, training_records
from stlic.checkpoints import load_model_checkpoint
from stlic.cli import main as stlic_main
from stlic.training.checkpoint import load_checkpoint
from stlic.training.logging import read_log
from stlic.training.solver import STLICSolver


def test_resume_continues_exactly(tmp_path, photos):
    config = fast_config(checkpoint_every=3, schedule={"stages": [{"patch_size": 64, "steps": 2},
                                                                  {"patch_size": 64, "steps": 10}]})
    straight = STLICSolver(config, out_dir=tmp_path / "straight", data=[photos])
    straight.fit(3)
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")  # the state after step 3
    straight.fit(6)  # the same objects carry on: an uninterrupted run of six steps

    resumed = STLICSolver(config, out_dir=tmp_path / "resumed", data=[photos])
    assert resumed.resume() == 3
    resumed.fit(6)

    got = read_log(tmp_path / "resumed")
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    elapsed = [r["elapsed_s"] for r in got]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0  # training seconds carry across the resume
    # every loss, lambda, level, D(x), grad norm: bit-identical (only the wall-clock fields differ)
    assert training_records(tmp_path / "resumed") == training_records(tmp_path / "straight")
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert straight.adversarial.state_dict().keys() == resumed.adversarial.state_dict().keys()
    state = load_checkpoint(tmp_path / "resumed")
    assert state["step"] == 6 and state["data_stream"] == [1, 4]


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, photos, monkeypatch, capsys):
    config = fast_config(checkpoint_every=2)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    calls = poison_loss_weight(monkeypatch, "l1", at_call=3)
    run = tmp_path / "run"
    status = stlic_main(["train", "--config", str(config_path), "--data", str(photos), "--out", str(run),
                         "--steps", "4"])
    assert status == 3
    error = capsys.readouterr().err
    assert "weighted loss 'l1'" in error and "at step 3" in error
    state = load_checkpoint(run)
    assert state["step"] == 2 and len(calls) == 3
    _, _, extra = load_model_checkpoint(run / "model.pt")  # the last good model, written with the checkpoint
    assert extra["step"] == 2
    assert [r["step"] for r in read_log(run)] == [1, 2]


def test_train_command_exports_a_loadable_model(tmp_path, photos):
    run = tmp_path / "run"
    assert stlic_main(["train", "--config", "stlic_tiny", "--data", str(photos), "--out", str(run),
                       "--steps", "1"]) == 0
    model, model_config, extra = load_model_checkpoint(run / "model.pt")
    assert extra["step"] == 1 and model_config.transform_channels == (16, 16, 24, 32)
    state = load_checkpoint(run)
    trained = {k: v for k, v in state["model"].items() if k.endswith(".weight")}
    exported = model.state_dict()
    assert all(torch.equal(exported[k], v) for k, v in trained.items())
    assert stlic_main(["train", "--out", str(run), "--resume", "--data", str(photos), "--steps", "1"]) == 0
