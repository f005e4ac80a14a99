"""Every numeric config field is validated, the error naming the key (stlic/training/config.py)."""
from __future__ import annotations

import math

import pytest
import yaml

from stlic.training.config import ConfigError, TrainConfig, load_config
from stlic.training.schedule import discriminator_learning_rate


def _with(section, key, value):
    data = load_config("stlic_tiny").to_dict()
    if section:
        data[section][key] = value
    else:
        data[key] = value
    return data


@pytest.mark.parametrize("section, key, value, message", [
    ("optim", "grad_clip", -1.0, "optim.grad_clip: must be > 0"),
    ("optim", "grad_clip", 0.0, "optim.grad_clip: must be > 0"),
    ("optim", "lr", -1e-4, "optim.lr: must be > 0"),
    ("optim", "finetune_lr", 0.0, "optim.finetune_lr: must be > 0"),
    ("optim", "aux_lr", -1e-3, "optim.aux_lr: must be > 0"),
    ("optim", "disc_lr", 0.0, "optim.disc_lr: must be > 0"),
    ("optim", "disc_finetune_lr", -1.0, "optim.disc_finetune_lr: must be > 0"),
    ("optim", "weight_decay", -0.1, "optim.weight_decay: must be >= 0"),
    ("optim", "disc_weight_decay", -0.01, "optim.disc_weight_decay: must be >= 0"),
    ("optim", "finetune_step", -5, "optim.finetune_step: must be >= 0"),
    ("optim", "betas", [0.9, 1.0], r"optim.betas\[1\]: must be in \[0, 1\)"),
    ("optim", "disc_betas", [-0.5, 0.999], r"optim.disc_betas\[0\]: must be in \[0, 1\)"),
    ("optim", "lr", float("nan"), "optim.lr: must be a finite number"),
    ("loss_weights", "l2", float("inf"), "loss_weights.l2: must be a finite number"),
    ("loss_weights", "l1", -3.6, "loss_weights.l1: must be >= 0"),
    ("discriminator", "base_channels", 0, "discriminator.base_channels: must be >= 1"),
    ("discriminator", "n_layers", -1, "discriminator.n_layers: must be >= 1"),
    ("perceptual", "wasserstein_num_scales", 0, "perceptual.wasserstein_num_scales: must be >= 1"),
    ("perceptual", "lpips_net", "squeeze", "perceptual.lpips_net: must be one of"),
    ("schedule", "adversarial_start", -1, "schedule.adversarial_start: must be >= 0"),
    (None, "num_workers", -1, "num_workers: must be >= 0"),
    (None, "seed", -1, "seed: must be in"),
    (None, "batch_size", 0, "batch_size: must be >= 1"),
])
def test_a_bad_number_is_refused_naming_its_key(section, key, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(_with(section, key, value))


def test_the_yaml_file_is_named_and_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "neg.yaml"
    path.write_text(yaml.safe_dump(_with("optim", "grad_clip", -1.0)))
    with pytest.raises(ConfigError, match=r"neg.yaml: optim.grad_clip: must be > 0 \(or null\), got -1.0"):
        load_config(path)
    path.write_text("optim: {lr: 1e-4\nschedule: [\n")
    with pytest.raises(ConfigError, match="invalid YAML") as error:
        load_config(path)
    assert "\n" not in str(error.value)


def test_null_grad_clip_and_the_shipped_configs_are_valid():
    assert TrainConfig.from_dict(_with("optim", "grad_clip", None)).optim.grad_clip is None
    for name in ("stlic_tiny", "stlic_small", "stlic_015", "stlic_0075", "stlic_030", "stlic_probe_cpu"):
        load_config(name)


def test_discriminator_lr_drops_with_the_main_lr_and_its_weight_decay_is_configurable():
    optim = TrainConfig.from_dict(_with("optim", "finetune_step", 10)).optim
    assert optim.disc_weight_decay == 0.01  # torch's AdamW default, which earlier runs used
    assert discriminator_learning_rate(optim, 9) == optim.disc_lr
    assert math.isclose(discriminator_learning_rate(optim, 10), optim.disc_lr * optim.finetune_lr / optim.lr)
    explicit = TrainConfig.from_dict(_with("optim", "disc_finetune_lr", 3e-6)).optim
    assert discriminator_learning_rate(explicit.__class__(**{**explicit.__dict__, "finetune_step": 0}), 0) == 3e-6
    never = TrainConfig.from_dict(_with("optim", "finetune_step", None)).optim
    assert discriminator_learning_rate(never, 10**7) == never.disc_lr
