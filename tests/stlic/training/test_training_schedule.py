"""Schedule (stages, LR, log-uniform lambda), checkpoint helpers, run logs and Fig. 2 curves."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from stlic.checkpoints import atomic_torch_save
from stlic.training.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from stlic.training.config import OptimConfig, ScheduleConfig, Stage, load_config
from stlic.training.dynamics import EQUILIBRIUM, dynamics_curves, moving_average, plot_dynamics
from stlic.training.logging import RunLogger, read_log
from stlic.training.outputs import StepOutput
from stlic.training.schedule import learning_rate, sample_rate_lambda, stage_at


def test_stage_at_walks_the_stages_in_order():
    schedule = ScheduleConfig(stages=(Stage(256, 3), Stage(512, 2, ("a",))))
    expected = [0, 0, 0, 1, 1, 1, 1]
    for step, index in enumerate(expected):
        at = stage_at(schedule, step)
        assert at.index == index and at.start == (0 if index == 0 else 3)
    assert stage_at(schedule, 4).stage.data == ("a",)


def test_learning_rate_switches_to_finetune():
    optim = OptimConfig(lr=1e-4, finetune_lr=1e-5, finetune_step=10)
    assert [learning_rate(optim, s) for s in (0, 9, 10, 99)] == [1e-4, 1e-4, 1e-5, 1e-5]
    assert learning_rate(OptimConfig(), 10**9) == 1e-4


def test_lambda_is_log_uniform_in_range():
    generator = torch.Generator().manual_seed(0)
    low, high = 0.135, 1.70
    draws = np.array([sample_rate_lambda(low, high, generator) for _ in range(4000)])
    assert draws.min() >= low and draws.max() <= high
    u = (np.log(draws) - math.log(low)) / (math.log(high) - math.log(low))
    # a uniform u has mean 1/2 and variance 1/12 (standard errors 0.0046 and 0.0013 here)
    assert abs(u.mean() - 0.5) < 0.02 and abs(u.var() - 1 / 12) < 0.006
    assert sample_rate_lambda(0.3, 0.3, generator) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="low <= high"):
        sample_rate_lambda(2.0, 1.0, generator)


def test_rng_state_round_trip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = capture_rng_state()
    config = load_config("stlic_tiny").to_dict()  # a training checkpoint always holds its config
    atomic_torch_save({"step": 0, "model": {}, "config": config, "rng": state}, tmp_path / "checkpoint.pt")
    assert not list(tmp_path.glob("*.tmp"))
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path)["rng"])
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no training checkpoint"):
        load_checkpoint(tmp_path)
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an ST-LIC training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def _output(step: int, gen: float, disc: float | None) -> StepOutput:
    losses = {name: 0.1 * step for name in ("rate", "l2", "l1", "lpips", "wasserstein")}
    losses["adversarial"] = gen
    weights = dict.fromkeys(losses, 1.0)
    return StepOutput(step, losses, weights, sum(losses.values()), 1.0, 0.5, losses["rate"], 30.0, 29.0,
                      gen, disc, None if disc is None else 0.5, None if disc is None else 0.5, 1.0, 1e-4)


def test_moving_average_matches_brute_force():
    values = np.random.default_rng(0).normal(size=23)
    for window in (1, 4, 50):
        reference = [values[max(0, t - window + 1):t + 1].mean() for t in range(len(values))]
        np.testing.assert_allclose(moving_average(values, window), reference, rtol=1e-12)
    with pytest.raises(ValueError, match="window"):
        moving_average(values, 0)


def test_logger_resume_drops_later_records_and_dynamics_plot(tmp_path):
    rng = np.random.default_rng(0)
    gens, discs = rng.uniform(0.5, 1.0, 8), rng.uniform(0.5, 0.9, 8)
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log(_output(1, 0.7, None))  # adversarial warm-up: no D step
        for step in range(2, 10):
            logger.log(_output(step, gens[step - 2], discs[step - 2]))
    with RunLogger(tmp_path, resume_step=6, tensorboard=False):
        pass
    records = read_log(tmp_path)
    assert [r["step"] for r in records] == list(range(1, 7))
    assert json.loads((tmp_path / "train_log.jsonl").read_text().splitlines()[2])["loss/l2"] == pytest.approx(0.3)
    curves = dynamics_curves(tmp_path, smooth=2)
    assert list(curves.steps) == [2, 3, 4, 5, 6]
    np.testing.assert_allclose(curves.generator, moving_average(gens[:5], 2))
    np.testing.assert_allclose(curves.discriminator, moving_average(discs[:5], 2))
    path = plot_dynamics(tmp_path, smooth=2)
    assert path == tmp_path / "dynamics.png" and path.stat().st_size > 1000
    assert EQUILIBRIUM == pytest.approx(0.693, abs=5e-4)
