"""A short real training run on ../shared/data/train lowers the rate-distortion loss."""
from __future__ import annotations

import statistics

import pytest
from PIL import Image

from stlic_training_helpers import fast_config
from stlic.paths import shared_data
from stlic.training.logging import read_log
from stlic.training.solver import STLICSolver

STEPS, WINDOW, LAMBDA = 16, 4, 0.5


def test_short_run_on_real_photos_lowers_rate_distortion(tmp_path):
    train = shared_data("train")
    if train is None:
        pytest.skip("../shared/data/train is absent (the shared training photos are not on this machine)")
    # Two real photos, square-cropped and resized to the 64-pixel patch: every step sees the same
    # content (up to flips), so R + D of the steps differ by training, not by which crop was drawn.
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted(train.glob("*.png"))[:2]:
        with Image.open(path) as image:
            side = min(image.size)
            image.convert("RGB").crop((0, 0, side, side)).resize((64, 64), Image.BICUBIC).save(photos / path.name)
    # a fixed lambda (range [x, x]) makes R + D of different steps comparable
    config = fast_config(batch_size=2, loss_weights={"rate": [LAMBDA, LAMBDA]}, optim={"lr": 5e-4})
    STLICSolver(config, out_dir=tmp_path / "run", data=[photos]).fit(STEPS)

    records = read_log(tmp_path / "run")
    assert len(records) == STEPS and all(r["lambda_rate"] == pytest.approx(LAMBDA) for r in records)
    weights = config.loss_weights
    rate_distortion = [LAMBDA * r["loss/rate"] + weights.l2 * r["loss/l2"] + weights.l1 * r["loss/l1"]
                       for r in records]
    first, last = statistics.mean(rate_distortion[:WINDOW]), statistics.mean(rate_distortion[-WINDOW:])
    assert last < 0.8 * first, (first, last, rate_distortion)
