"""Helpers of the trainer tests: a fast tiny config and a small folder of photos.

(A uniquely named module: ``conftest`` is a name every test folder uses.)
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from PIL import Image

from stlic.training.config import TrainConfig, load_config
from stlic.training.objective import STLICObjective


def fast_config(**sections) -> TrainConfig:
    """``stlic_tiny`` with one 64-pixel stage, batch 1, one WD scale; ``sections`` update it.

    Each keyword is a top-level key; a dict value updates that section key by key.
    """
    data = load_config("stlic_tiny").to_dict()
    data["schedule"]["stages"] = [{"patch_size": 64, "steps": 100, "data": []}]
    data["perceptual"]["wasserstein_num_scales"] = 1
    data.update(batch_size=1, log_every=1, checkpoint_every=1000)
    for key, value in sections.items():
        if isinstance(value, dict):
            data[key] = {**data[key], **copy.deepcopy(value)}
        else:
            data[key] = value
    return TrainConfig.from_dict(data)


#: train_log.jsonl fields that read the wall clock: the only ones an exact resume may change
CLOCK_FIELDS = ("time", "elapsed_s")


def training_records(run: Path) -> list[dict]:
    """The run's log records without :data:`CLOCK_FIELDS` (what an exact resume must reproduce)."""
    from stlic.training.logging import read_log

    return [{k: v for k, v in record.items() if k not in CLOCK_FIELDS} for record in read_log(run)]


def write_photos(folder: Path, count: int = 3, size: tuple[int, int] = (80, 96), seed: int = 0) -> Path:
    """``count`` smooth random RGB PNGs (smooth so the codec has something to learn)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size[0], 0:size[1]] / max(size)
    for index in range(count):
        phase = rng.uniform(0, 2 * np.pi, size=3)
        freq = rng.uniform(2, 6, size=3)
        channels = [0.5 + 0.4 * np.sin(freq[c] * (xx + yy * (c + 1)) * np.pi + phase[c]) for c in range(3)]
        array = np.stack(channels, -1) + rng.normal(0, 0.02, size=(*size, 3))
        Image.fromarray((array.clip(0, 1) * 255).astype(np.uint8)).save(folder / f"photo_{index}.png")
    return folder


def poison_loss_weight(monkeypatch, loss: str, at_call: int) -> list:
    """Make ``STLICObjective.weights`` give ``loss`` a NaN weight on its ``at_call``-th call (1-based);
    returns the list of calls' rate coefficients, which grows with each call."""
    original = STLICObjective.weights
    calls: list = []

    def poisoned(self, lambda_rate, adversarial_on=True):
        calls.append(lambda_rate)
        weights = original(self, lambda_rate, adversarial_on)
        return {**weights, loss: float("nan")} if len(calls) == at_call else weights

    monkeypatch.setattr(STLICObjective, "weights", poisoned)
    return calls
