"""``stlic train --init`` keeps the checkpoint's operating point (its QVRF rate range) unless told not to."""
from __future__ import annotations

import pytest
import yaml

from stlic_training_helpers import fast_config
from stlic.checkpoints import save_model_checkpoint
from stlic.cli import main as stlic_main
from stlic.training.initialize import init_main_network, rate_range_change
from stlic.training.solver import STLICSolver


@pytest.fixture
def rd_model(tmp_path, photos):
    """A phase-1 model file trained (0 steps) for the tiny config's range [0.135, 1.70]."""
    solver = STLICSolver(fast_config(), data=[photos])
    return save_model_checkpoint(tmp_path / "rd.pt", solver.model, solver.model_config)


def _config_file(tmp_path, rate):
    data = fast_config(loss_weights={"rate": rate}).to_dict()
    path = tmp_path / f"config_{rate[0]}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_report_names_both_ranges_and_explains_the_refiner(rd_model, photos):
    moved = STLICSolver(fast_config(loss_weights={"rate": [0.406, 5.12]}), data=[photos])
    report = init_main_network(moved.model, rd_model)
    assert report.rate_lambdas[0] == 0.135 and report.rate_lambdas[-1] == 1.7
    change = rate_range_change(report, moved.model_config.rate_lambdas)
    assert "[0.406, 5.12] (6 levels)" in change and "[0.135, 1.7] (6 levels)" in change
    assert rate_range_change(report, fast_config().model_config().rate_lambdas) is None
    summary = report.summary()
    assert "refiner starts as the identity" in summary and "keys not used" not in summary


def test_train_init_refuses_another_rate_range_in_one_line(tmp_path, rd_model, photos, capsys):
    run = tmp_path / "run"
    argv = ["train", "--config", str(_config_file(tmp_path, [0.406, 5.12])), "--data", str(photos), "--out", str(run),
            "--init", str(rd_model), "--steps", "0"]
    assert stlic_main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "[0.406, 5.12]" in error[0] and "[0.135, 1.7]" in error[0]
    assert "--accept-rate-range" in error[0]
    assert stlic_main(argv + ["--accept-rate-range", "--force"]) == 0
    assert "warning: --init: the config's rate range" in capsys.readouterr().err


def test_train_init_at_the_checkpoints_range_says_nothing_about_it(tmp_path, rd_model, photos, capsys):
    argv = ["train", "--config", str(_config_file(tmp_path, [0.135, 1.70])), "--data", str(photos), "--out",
            str(tmp_path / "run"), "--init", str(rd_model), "--steps", "0"]
    assert stlic_main(argv) == 0
    assert "rate range" not in capsys.readouterr().err
