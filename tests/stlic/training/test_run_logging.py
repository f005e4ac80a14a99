"""RunLogger on resume: the JSONL log and TensorBoard both keep the resumed step (purge_step = step + 1)."""
from __future__ import annotations

import json
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from stlic.training.config import LOSS_NAMES
from stlic.training.logging import RunLogger, read_log
from stlic.training.outputs import StepOutput


def _output(step: int, total: float) -> StepOutput:
    losses = {name: 1.0 for name in LOSS_NAMES}
    return StepOutput(step=step, losses=losses, weights=losses, total=total, lambda_rate=1.0, level=0.0, bpp=0.1,
                      psnr_decoded=20.0, psnr_refined=20.0, gen_loss=0.7, disc_loss=0.7, d_real=0.5, d_fake=0.5,
                      grad_norm=1.0, lr=1e-4)


def _tensorboard_totals(run_dir) -> dict[int, float]:
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), purge_orphaned_data=True)
    accumulator.Reload()
    events = accumulator.Scalars("train/total")
    steps = [event.step for event in events]
    assert len(steps) == len(set(steps)), steps
    return {event.step: event.value for event in events}


def test_resume_keeps_the_resumed_step_in_tensorboard_and_the_log(tmp_path):
    with RunLogger(tmp_path) as logger:  # steps 1..5 logged, the checkpoint was at step 3, then a crash
        for step in range(1, 6):
            logger.log(_output(step, total=float(step)))
    # A real resume is a later process: its event file's name carries a later second. Within one
    # second, file names differ only by a per-process writer counter, which sorts as text (".10" before
    # ".9" under pytest-xdist's long-lived workers), so wait for the clock as a resume would.
    started = int(time.time())
    while int(time.time()) == started:
        time.sleep(0.05)
    with RunLogger(tmp_path, resume_step=3) as logger:  # resumed from step 3: steps 4, 5 again
        for step in (4, 5):
            logger.log(_output(step, total=10.0 * step))
    assert [record["step"] for record in read_log(tmp_path)] == [1, 2, 3, 4, 5]
    assert _tensorboard_totals(tmp_path) == {1: 1.0, 2: 2.0, 3: 3.0, 4: 40.0, 5: 50.0}


def test_a_log_line_cut_by_a_kill_is_dropped_with_a_warning(tmp_path):
    (tmp_path / "train_log.jsonl").write_text(json.dumps({"step": 1}) + "\n" + '{"step": 2, "to')
    with pytest.warns(UserWarning, match="cut mid-write"):
        assert read_log(tmp_path) == [{"step": 1}]
    (tmp_path / "train_log.jsonl").write_text('{"step": 1\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 1 is not a JSON record"):
        read_log(tmp_path)
