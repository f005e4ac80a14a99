"""GAN verdicts on synthetic logs: dormant vs engaged vs collapsed vs diverged (stlic.training.gan_health)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from stlic.training.gan_health import GAP_MIN, classify, run_health


def _records(n, gap, accuracy, real_logit, fake_logit, disc_loss, gen_loss, start=1, seed=0, at_times=True):
    """``n`` log rows whose D statistics scatter around the given values (normal noise, 5 % of each);
    ``at_times``: the accuracy is 1/2 on every other step (D separates the sides at times only)."""
    rng = np.random.default_rng(seed)
    noisy = lambda value: float(value + 0.05 * abs(value) * rng.standard_normal())  # noqa: E731
    return [{"step": start + i, "disc_loss": noisy(disc_loss), "gen_loss": noisy(gen_loss),
             "d_real": 1 / (1 + math.exp(-real_logit)), "d_fake": 1 / (1 + math.exp(-fake_logit)),
             "d_gap": abs(noisy(gap)), "d_accuracy": min(1.0, max(0.0, noisy(accuracy) if i % 2 or not at_times else 0.5)),
             "d_real_logit": noisy(real_logit), "d_fake_logit": noisy(fake_logit)} for i in range(n)]


def dormant(n=100, start=1):  # the 2026-12-01 run: L_D = 0.6931, gap 3e-5 .. 3e-4, D = 1/2 to everything
    return _records(n, 3e-4, 0.5, -0.001, -0.0012, math.log(2), 0.6935, start)


def engaged(n=100, start=1):  # D(x) ~ 0.62, D(x_hat) ~ 0.38: separates, L_D a little below ln 2
    return _records(n, 0.2, 0.68, 0.5, -0.5, 0.6, 0.95, start)


def test_a_discriminator_answering_one_half_is_dormant_though_both_losses_read_ln2():
    health = classify(dormant())
    assert health.verdict == "dormant" and health.median_gap < GAP_MIN
    assert abs(health.median_disc_loss - math.log(2)) < 0.01 and abs(health.median_gen_loss - math.log(2)) < 0.01
    assert "median gap" in health.summary() and health.gap_source == "paired"


def test_a_discriminator_that_separates_real_from_refined_is_engaged():
    health = classify(engaged())
    assert health.verdict == "engaged"
    assert health.median_gap == pytest.approx(0.2, rel=0.1) and health.departure_share > 0.4


def test_a_gap_without_separation_is_dormant():
    """D's answers move from patch to patch but never tell the sides apart (accuracy 1/2, logit gap 0)."""
    health = classify(_records(50, 0.05, 0.5, 0.2, 0.2, math.log(2), math.log(2)))
    assert health.verdict == "dormant" and "do not separate" in health.reason


def test_a_discriminator_that_wins_everything_has_collapsed_the_game():
    health = classify(_records(50, 0.97, 0.99, 6.0, -6.0, 0.01, 6.5, at_times=False))
    assert health.verdict == "collapsed"


def test_a_non_finite_loss_is_divergence():
    records = engaged(20)
    records[7]["gen_loss"] = float("nan")
    assert classify(records).verdict == "diverged"


def test_the_run_verdict_is_its_second_half_and_quarters_show_when_d_engaged():
    records = dormant(60) + engaged(60, start=61) + [{"step": 200, "disc_loss": None}]
    overall, quarters = run_health(records)
    assert overall.verdict == "engaged" and (overall.first_step, overall.last_step) == (61, 120)
    assert [q.verdict for q in quarters] == ["dormant", "dormant", "engaged", "engaged"]


def test_older_logs_use_the_unpaired_gap_a_lower_bound():
    records = [{k: v for k, v in r.items() if not k.startswith("d_") or k in ("d_real", "d_fake")} for r in engaged()]
    health = classify(records)
    assert health.gap_source == "unpaired" and health.verdict == "engaged"
    assert health.median_gap == pytest.approx(abs(records[0]["d_real"] - records[0]["d_fake"]))


def test_no_discriminator_step_is_an_error():
    with pytest.raises(ValueError, match="no step with a discriminator update"):
        run_health([{"step": 1, "disc_loss": None}])


def test_plot_dynamics_draws_the_health_panel_and_prints_the_verdict(tmp_path, capsys):
    import json

    from stlic.cli import main as stlic_main

    records = dormant(40) + engaged(40, start=41)
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert stlic_main(["plot-dynamics", str(tmp_path), "--smooth", "4"]) == 0
    printed = capsys.readouterr().out
    assert "GAN verdict: engaged (steps 41-80" in printed
    assert "part 1/4: dormant (steps 1-20" in printed and "part 4/4: engaged" in printed
    assert (tmp_path / "dynamics.png").stat().st_size > 10_000
