"""Training config: Table II exactly, strict keys and types, model levels from the lambda range."""
from __future__ import annotations

import math
import re

import pytest
import yaml

from stlic.paths import CONFIG_DIR
from stlic.training.config import LOSS_NAMES, ConfigError, TrainConfig, load_config

#: ST-LIC Table II (published values): loss weights of the three variable-rate models
TABLE_II = {
    "stlic_0075": dict(l1=3.0, l2=40, lpips=0.55, wasserstein=0.03, adversarial=0.5, rate=(0.55, 6.40)),
    "stlic_015": dict(l1=3.6, l2=50, lpips=0.24, wasserstein=0.012, adversarial=0.5, rate=(0.135, 1.70)),
    "stlic_030": dict(l1=4.0, l2=50, lpips=0.24, wasserstein=0.008, adversarial=0.32, rate=(0.055, 0.63)),
}


@pytest.mark.parametrize("name", sorted(TABLE_II))
def test_paper_configs_equal_table_ii(name):
    config = load_config(name)
    expected = TABLE_II[name]
    for loss in LOSS_NAMES:
        assert getattr(config.loss_weights, loss) == (expected[loss] if loss != "rate" else expected["rate"])
    assert config.model.preset == "full"
    assert [stage.patch_size for stage in config.schedule.stages] == [256, 512]


@pytest.mark.parametrize("name", sorted(TABLE_II))
def test_model_levels_span_the_lambda_range_log_evenly(name):
    model = load_config(name).model_config()
    low, high = TABLE_II[name]["rate"]
    n = model.n_levels
    reference = [low * (high / low) ** (i / (n - 1)) for i in range(n)]
    assert model.rate_lambdas == pytest.approx(reference, rel=1e-5)


def test_demo_configs_use_the_015_weights_and_small_presets():
    paper = load_config("stlic_015").loss_weights
    for name, preset in (("stlic_tiny", "tiny"), ("stlic_small", "small")):
        config = load_config(name)
        assert config.loss_weights == paper and config.model.preset == preset
        assert 2 <= config.batch_size <= 4 and all(s.patch_size <= 256 for s in config.schedule.stages)


def _raw(name: str = "stlic_tiny") -> dict:
    return yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())


@pytest.mark.parametrize("path, key, section", [
    ((), "learning_rate", "config"),
    (("optim",), "lr_decay", "optim"),
    (("loss_weights",), "ssim", "loss_weights"),
    (("schedule", "stages", 1), "crop", "schedule.stages[1]"),
])
def test_unknown_key_error_names_key_and_section(path, key, section):
    raw = _raw()
    target = raw
    for part in path:
        target = target[part]
    target[key] = 1
    with pytest.raises(ConfigError, match=re.escape(f"unknown key {key!r} in section {section!r}")):
        TrainConfig.from_dict(raw)


def test_unknown_model_override_is_named():
    raw = _raw()
    raw["model"]["overrides"] = {"not_a_field": 3}
    with pytest.raises(ConfigError, match="not_a_field"):
        TrainConfig.from_dict(raw).model_config()


@pytest.mark.parametrize("path, value, message", [
    (("optim", "lr"), "fast", "optim.lr: expected float"),
    (("batch_size",), 2.5, "batch_size: expected int"),
    (("batch_size",), True, "batch_size: expected int"),
    (("loss_weights", "rate"), [0.1], "loss_weights.rate: expected 2 values"),
    (("loss_weights", "rate"), [2.0, 1.0], "0 < lo <= hi"),
    (("precision",), "fp8", "precision: one of"),
    (("schedule", "stages", 0, "patch_size"), 100, "multiple of 64"),
    (("schedule", "stages"), [], "at least one stage"),
])
def test_wrong_types_and_values_are_rejected(path, value, message):
    raw = _raw()
    target = raw
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(raw)


def test_missing_required_section_is_named():
    raw = _raw()
    del raw["loss_weights"]
    with pytest.raises(ConfigError, match="missing required key 'loss_weights'"):
        TrainConfig.from_dict(raw)


def test_round_trip_and_load_by_path(tmp_path):
    config = load_config("stlic_015")
    assert TrainConfig.from_dict(config.to_dict()) == config
    copy = tmp_path / "copy.yaml"
    copy.write_text(yaml.safe_dump(config.to_dict()))
    assert load_config(copy) == config
    assert config.schedule.total_steps == sum(s.steps for s in config.schedule.stages)
    assert math.isclose(config.optim.lr, 1e-4) and math.isclose(config.optim.finetune_lr, 1e-5)


def test_error_for_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {preset: tiny}\nloss_weights: {rate: [1, 2], l2: 1, l1: 1, lpips: 1, "
                   "wasserstein: 1, adversarial: 1, extra: 1}\nschedule: {stages: [{patch_size: 64, steps: 1}]}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown key 'extra' in section 'loss_weights'"):
        load_config(bad)


def test_every_shipped_config_checkpoints_at_a_sane_interval():
    """A run on any shipped config leaves a checkpoint at least every 5000 steps (and within its length)."""
    paths = sorted(CONFIG_DIR.glob("*.yaml")) + sorted((CONFIG_DIR / "derived").glob("*.yaml")) + sorted(
        (CONFIG_DIR / "phase2").glob("*.yaml"))  # the phase-2 experiment's runs (issue 18)
    assert len(paths) >= 17
    for path in paths:
        config = load_config(path)
        assert config.checkpoint_every <= min(5000, config.schedule.total_steps), path.name
