"""DDP on CPU (gloo) with the ``balancer`` section: both ranks hold the same coefficients, those of
one process on the combined batch (probed steps run DDP's forward under ``no_sync``).

Both runs keep the latents continuous (``test_solver_ddp._continuous_latents``), and the learning
rates are tiny: AdamW's first update is nearly sign(gradient) times the learning rate, so gradient
entries that rounding alone decides (the batch-of-2 and 2 x 1 sums round differently) would move
by a whole learning rate in one run and not the other, and after three steps the coefficients
would differ by percents (measured: 7%). The balancer's own arithmetic is what is compared."""
from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from stlic_training_helpers import fast_config, write_photos
from stlic.training.config import TrainConfig
from stlic.training.data import ImageFolder
from stlic.training.distributed import init_distributed
from stlic.training.solver import STLICSolver
from test_solver_ddp import _continuous_latents, _free_port

STEPS = 3


def _balanced_config() -> dict:
    data = fast_config().to_dict()
    data["balancer"] = {"targets": "equal", "every": 2, "ema": 0.5}  # probed, plain, probed
    data["optim"].update(lr=1e-9, finetune_lr=1e-9, aux_lr=1e-9, disc_lr=1e-9)  # see the module docstring
    return data


def _train(solver: STLICSolver, batch: torch.Tensor) -> dict:
    for _ in range(STEPS):
        solver.run_step(batch)
    return dict(solver.balancing.balancer.weights)


def _worker(rank: int, world_size: int, port: int, config: dict, batch: torch.Tensor, result: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    _continuous_latents()
    context = init_distributed("cpu")
    try:
        solver = STLICSolver(TrainConfig.from_dict(config), context=context)
        share = batch.shape[0] // world_size
        torch.save(_train(solver, batch[rank * share:(rank + 1) * share]), f"{result}.{rank}")
        torch.distributed.barrier()  # no rank tears gloo down while another is still in a collective
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ranks_agree_on_the_coefficients_of_one_process_on_the_combined_batch(tmp_path, monkeypatch):
    photos = write_photos(tmp_path / "photos", count=2)
    dataset = ImageFolder([photos], patch_size=64)
    batch = torch.stack([dataset[(i, i)] for i in range(2)])
    config = _balanced_config()
    result = tmp_path / "weights"
    mp.spawn(_worker, args=(2, _free_port(), config, batch, str(result)), nprocs=2, join=True)
    ranks = [torch.load(f"{result}.{rank}", weights_only=True) for rank in range(2)]
    assert ranks[0] == ranks[1]

    _continuous_latents(monkeypatch.setattr)
    single = _train(STLICSolver(TrainConfig.from_dict(config)), batch)
    assert single != {"rate": 1.0, **{k: v for k, v in config["loss_weights"].items() if k != "rate"}}
    for loss, value in single.items():  # float32 batch-of-2 vs 2 x 1 rounding, through 3 updates
        assert ranks[0][loss] == pytest.approx(value, rel=1e-3), loss
