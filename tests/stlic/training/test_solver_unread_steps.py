"""Steps between logging steps never read the device: same training, NaN still caught and named."""
from __future__ import annotations

import pytest
import torch

from stlic_training_helpers import fast_config, poison_loss_weight
from stlic.training.checkpoint import load_checkpoint
from stlic.training.finite import NonFiniteLossError
from stlic.training.logging import read_log
from stlic.training.solver import STLICSolver


def test_unread_steps_train_exactly_like_read_ones(photos):
    read = STLICSolver(fast_config(), data=[photos])  # seeds the global RNG (quantisation noise)
    outputs = [read.run_step(read.next_batch()) for _ in range(3)]
    last_read = read.run_step(read.next_batch())
    unread = STLICSolver(fast_config(), data=[photos])  # same seed again
    outputs += [unread.run_step(unread.next_batch(), read=False) for _ in range(3)]
    assert all(out is not None for out in outputs[:3]) and all(out is None for out in outputs[3:])
    assert unread.run_step(unread.next_batch()).losses == last_read.losses
    for (name, a), (_, b) in zip(read.model.state_dict().items(), unread.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_fit_reads_on_logging_steps_and_names_an_unread_nan(tmp_path, photos, monkeypatch):
    poison_loss_weight(monkeypatch, "l2", at_call=5)
    solver = STLICSolver(fast_config(log_every=3, checkpoint_every=3), out_dir=tmp_path / "run", data=[photos])
    with pytest.raises(NonFiniteLossError, match=r"weighted loss 'l2' is nan .*at step 5"):
        solver.fit(8)
    assert solver.step == 5  # step 5 was unread; step 6, a logging step, read it first and did not train
    assert [r["step"] for r in read_log(tmp_path / "run")] == [3]
    assert load_checkpoint(tmp_path / "run")["step"] == 3  # the spoilt weights were never saved
