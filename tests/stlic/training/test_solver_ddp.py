"""DDP on CPU (gloo): two ranks with half a batch each take the step of one process on the batch."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from compressai.entropy_models import EntropyModel

import stlic.entropy.latent_coders
import stlic.models.lalic
from stlic_training_helpers import fast_config, write_photos
from stlic.training.config import TrainConfig
from stlic.training.data import ImageFolder
from stlic.training.distributed import init_distributed
from stlic.training.finite import NonFiniteLossError
from stlic.training.solver import STLICSolver

_QUANTIZE = EntropyModel.quantize


def _noise_free_quantize(self, inputs, mode, means=None):
    """Rate estimation without additive uniform noise, so the two runs see identical rates."""
    return inputs if mode == "noise" else _QUANTIZE(self, inputs, mode, means)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _continuous_latents(patch=setattr) -> None:
    """No discrete step in the training forward: the rate without its uniform noise, y and z
    without their straight-through rounding. With rounding, a latent within float32 rounding of a
    half-integer rounds differently in the batch-of-2 and the 2 x 1 computation and moves whole
    gradients (seen after a change of float32 summation order in the transforms), and AdamW's
    first, nearly sign-like update carries such a flip into every weight; no rounding tolerance
    fits that. ``patch``: ``setattr`` in a worker, ``monkeypatch.setattr`` in the test."""
    patch(EntropyModel, "quantize", _noise_free_quantize)
    patch(stlic.entropy.latent_coders, "quantize_ste", _identity)
    patch(stlic.models.lalic, "quantize_ste", _identity)


def _one_step(solver: STLICSolver, batch: torch.Tensor) -> dict:
    out = solver.run_step(batch)
    grads = {f"model.{n}": p.grad.clone() for n, p in solver.trained if p.grad is not None}
    grads.update({f"disc.{n}": p.grad.clone() for n, p in solver.adversarial.discriminator.named_parameters()})
    return {"losses": out.losses, "disc_loss": out.disc_loss, "grads": grads}


def _worker(rank: int, world_size: int, port: int, config: dict, batch: torch.Tensor, result: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    _continuous_latents()
    context = init_distributed("cpu")
    try:
        solver = STLICSolver(TrainConfig.from_dict(config), context=context)
        share = batch.shape[0] // world_size
        outcome = _one_step(solver, batch[rank * share:(rank + 1) * share])
        if rank == 0:
            torch.save(outcome, result)
        torch.distributed.barrier()  # no rank tears gloo down while another is still in a collective
    finally:
        torch.distributed.destroy_process_group()


def _poisoned_worker(rank: int, world_size: int, port: int, config: dict, batch: torch.Tensor, folder: str) -> None:
    """Rank 1 alone sees a NaN loss weight; every rank must stop (none may hang in a collective)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    context = init_distributed("cpu")
    try:
        solver = STLICSolver(TrainConfig.from_dict(config), context=context)
        if rank == 1:
            weights = solver.objective.weights
            solver.objective.weights = lambda *args: {**weights(*args), "lpips": float("nan")}
        try:
            solver.run_step(batch[rank:rank + 1])
            outcome = "stepped"
        except NonFiniteLossError as error:
            outcome = str(error)
        with open(os.path.join(folder, f"rank{rank}.txt"), "w") as handle:
            handle.write(outcome)
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_match_one_process_on_the_combined_batch(tmp_path, monkeypatch):
    photos = write_photos(tmp_path / "photos", count=2)
    dataset = ImageFolder([photos], patch_size=64)
    batch = torch.stack([dataset[(i, i)] for i in range(2)])
    config = fast_config()
    result = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(2, _free_port(), config.to_dict(), batch, str(result)), nprocs=2, join=True)
    distributed = torch.load(result, weights_only=True)

    _continuous_latents(monkeypatch.setattr)
    single = _one_step(STLICSolver(config), batch)

    for name, value in single["losses"].items():
        assert distributed["losses"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    assert distributed["disc_loss"] == pytest.approx(single["disc_loss"], rel=1e-5)
    assert distributed["grads"].keys() == single["grads"].keys()
    # float32 sums over a batch of 2 vs two batches of 1 differ in rounding only: compare each
    # tensor to within 1e-5 of the largest gradient entry of its network
    for network in ("model.", "disc."):
        grads = {n: g for n, g in single["grads"].items() if n.startswith(network)}
        scale = max(float(g.abs().max()) for g in grads.values())
        for name, grad in grads.items():
            torch.testing.assert_close(distributed["grads"][name], grad, rtol=1e-3, atol=1e-5 * scale, msg=name)


def test_a_nan_on_one_rank_stops_every_rank(tmp_path):
    batch = torch.rand(2, 3, 64, 64)
    mp.spawn(_poisoned_worker, args=(2, _free_port(), fast_config().to_dict(), batch, str(tmp_path)),
             nprocs=2, join=True)
    assert "weighted loss 'lpips'" in (tmp_path / "rank1.txt").read_text()
    assert "another rank" in (tmp_path / "rank0.txt").read_text()
