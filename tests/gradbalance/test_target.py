"""Probe-target resolution (entry point, module:callable) and the built-in example target."""
from __future__ import annotations

import numpy as np
import pytest

from gradbalance import GradientProbe, ProbeTarget, resolve_target
from gradbalance.targets.examples import make_example_target
from gradbalance.targets.target import available_targets, make_target


def test_resolve_entry_point_and_module_callable():
    assert "example" in available_targets()
    assert resolve_target("example") is make_example_target
    assert resolve_target("gradbalance.targets.examples:make_example_target") is make_example_target
    with pytest.raises(ValueError, match="unknown probe target 'nope'"):
        resolve_target("nope")
    with pytest.raises(ValueError, match="no attribute"):
        resolve_target("gradbalance.targets.examples:nope")
    with pytest.raises(ValueError, match="does not accept option"):
        make_target("example", colour="red")


def test_example_target_trains_and_rate_reaches_only_the_encoder(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("loss_weights:\n  rate: 0.01\n  l2: 1.0\n  l1: 0.5\n")
    target = make_target("example", config=str(config), seed=3, batch_size=2, patch_size=16)
    assert isinstance(target, ProbeTarget)
    probe = GradientProbe(target.model, target.groups, loss_order=target.loss_order, optimizer=target.optimizer)
    calls = []

    def backward(losses, weights):
        calls.append(dict(weights))
        return probe.backward(losses, weights)

    before = [p.detach().clone() for p in target.model.parameters()]
    for step in range(2):
        target.train_step(step, backward)
    assert calls == [{"rate": 0.01, "l2": 1.0, "l1": 0.5}] * 2
    assert any(not np.array_equal(b, p.detach()) for b, p in zip(before, target.model.parameters()))
    table = probe.table()
    assert table.cell("rate", "decoder") == "-" and table.mean.loc["rate", "encoder"] > 0
    with pytest.raises(ValueError, match="unknown loss weight"):
        config.write_text("loss_weights:\n  lpips: 1.0\n")
        make_example_target(config=str(config))
