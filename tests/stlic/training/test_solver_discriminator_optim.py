"""The discriminator's AdamW takes its weight decay and its learning-rate drop from the config."""
from __future__ import annotations

import pytest
import torch

from stlic_training_helpers import fast_config
from stlic.training.solver import STLICSolver


def test_discriminator_weight_decay_and_finetune_lr_come_from_the_config():
    config = fast_config(optim={"disc_weight_decay": 0.0, "finetune_step": 0, "lr": 1e-4, "finetune_lr": 1e-5,
                                "disc_lr": 2e-4})
    solver = STLICSolver(config)
    group = solver.adversarial.optimizer.param_groups[0]
    assert group["weight_decay"] == 0.0  # was torch's default 0.01, whatever the config said
    assert group["lr"] == pytest.approx(2e-4)
    solver.run_step(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    # from finetune_step on, both learning rates are dropped by finetune_lr / lr = 1/10
    assert solver.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)
    assert group["lr"] == pytest.approx(2e-5)
