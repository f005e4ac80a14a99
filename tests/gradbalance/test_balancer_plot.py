"""``gradbalance plot RUN`` on a saved Balancer history draws coefficients and shares against targets."""
from __future__ import annotations

import torch
from PIL import Image

from balancer_cases import INITIAL_WEIGHTS, TARGETS, drifting_toy
from gradbalance import Balancer, GradientProbe
from gradbalance.report.balance_plots import weights_vary
from gradbalance.cli import main
from gradbalance.io.run import save_run


def test_plot_draws_weights_and_shares_of_a_balanced_run(tmp_path, capsys):
    model, groups, next_losses = drifting_toy()
    balancer = Balancer(model, groups, TARGETS, weights=INITIAL_WEIGHTS, every=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(8):
        optimizer.zero_grad()
        balancer.backward(next_losses())
        optimizer.step()
    run = balancer.save(tmp_path / "run")
    assert weights_vary(balancer.history)
    assert main(["plot", str(run)]) == 0
    for name in ("weights_over_steps.png", "shares_vs_targets.png", "shares_over_steps.png"):
        with Image.open(run / name) as image:
            assert image.size[0] > 100
    assert "fit" in capsys.readouterr().out


def test_a_probe_run_with_constant_weights_draws_no_balance_figures(tmp_path):
    model, groups, next_losses = drifting_toy()
    probe = GradientProbe(model, groups, every=2)
    for _ in range(4):
        probe.backward(next_losses(), INITIAL_WEIGHTS)
    run = save_run(tmp_path / "run", probe.records, probe.cosine_records, {})
    assert main(["plot", str(run)]) == 0
    assert (run / "shares_over_steps.png").is_file() and not (run / "weights_over_steps.png").exists()
