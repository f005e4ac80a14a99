"""A short real training run on ../shared/data/train lowers the rate-distortion loss."""
from __future__ import annotations

import statistics

import pytest

from conftest import fast_config
from stlic.paths import shared_data
from stlic.training.solver import STLICSolver

STEPS, WINDOW, LAMBDA = 16, 4, 0.5


@pytest.mark.slow  # sixteen steps of the tiny model on real photos
def test_short_run_on_real_photos_lowers_rate_distortion(tmp_path):
    train = shared_data("train")
    if train is None:
        pytest.skip("../shared/data/train is absent (the shared training photos are not on this machine)")
    # fixed lambda (range [x, x]) so R + D of different steps are comparable, and two photos in
    # every batch (fresh random crops each step) so the steps differ by training, not by content
    photos = sorted(p for p in train.iterdir() if p.suffix.lower() == ".png")[:2]
    config = fast_config(batch_size=2, loss_weights={"rate": [LAMBDA, LAMBDA]}, optim={"lr": 5e-4})
    solver = STLICSolver(config, out_dir=tmp_path / "run", data=photos)
    solver.fit(STEPS)
    from stlic.training.logging import read_log

    records = read_log(tmp_path / "run")
    assert len(records) == STEPS and all(r["lambda_rate"] == pytest.approx(LAMBDA) for r in records)
    weights = config.loss_weights
    rate_distortion = [LAMBDA * r["loss/rate"] + weights.l2 * r["loss/l2"] + weights.l1 * r["loss/l1"]
                       for r in records]
    first, last = statistics.mean(rate_distortion[:WINDOW]), statistics.mean(rate_distortion[-WINDOW:])
    assert last < 0.85 * first, (first, last, rate_distortion)
