"""DDP on CPU (gloo) with the ``balancer`` section: both ranks hold the same coefficients, those of
one process on the combined batch (probed steps run DDP's forward under ``no_sync``).

Both runs replace the straight-through rounding of y and z by the identity (and the rate's
uniform noise by nothing): with rounding, a latent within float32 rounding of a half-integer
rounds differently in the batch-of-2 and the 2 x 1 computation, and AdamW's first, nearly
sign-like update carries such a flip into every weight (a change of float32 summation order in
the transforms once moved the single-process coefficient 0.8% away), which no rounding
tolerance fits."""
from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
from compressai.entropy_models import EntropyModel

from stlic_training_helpers import fast_config, write_photos
from stlic.training.config import TrainConfig
from stlic.training.data import ImageFolder
from stlic.training.distributed import init_distributed
from stlic.training.solver import STLICSolver
from test_solver_ddp import _free_port, _noise_free_quantize
import stlic.entropy.latent_coders
import stlic.models.lalic

STEPS = 3


def _balanced_config() -> dict:
    data = fast_config().to_dict()
    data["balancer"] = {"targets": "equal", "every": 2, "ema": 0.5}  # probed, plain, probed
    return data


def _continuous_latents() -> None:
    """No discrete step in the training forward (see the module docstring)."""
    EntropyModel.quantize = _noise_free_quantize
    stlic.entropy.latent_coders.quantize_ste = _identity
    stlic.models.lalic.quantize_ste = _identity


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


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

    monkeypatch.setattr(EntropyModel, "quantize", _noise_free_quantize)
    monkeypatch.setattr(stlic.entropy.latent_coders, "quantize_ste", _identity)
    monkeypatch.setattr(stlic.models.lalic, "quantize_ste", _identity)
    single = _train(STLICSolver(TrainConfig.from_dict(config)), batch)
    assert single != {"rate": 1.0, **{k: v for k, v in config["loss_weights"].items() if k != "rate"}}
    for loss, value in single.items():  # float32 batch-of-2 vs 2 x 1 rounding, through 3 updates
        assert ranks[0][loss] == pytest.approx(value, rel=1e-3), loss
