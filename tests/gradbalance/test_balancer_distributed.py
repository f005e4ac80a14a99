"""Two-process gloo: every rank ends with the same Balancer coefficients, and they are those of one
process training on both ranks' batches (DDP's step is the gradient of the rank-mean loss)."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from gradbalance import Balancer
from test_probe_distributed import Net, losses, make_model  # the probe's DDP test model

WORLD, STEPS = 2, 6
TARGETS = {"a": {"fit": 60.0, "hidden": 40.0}}


def batch(rank: int, step: int) -> torch.Tensor:
    return torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(100 * step + rank))


def make_balancer(model: nn.Module, prefix: str = "") -> Balancer:
    return Balancer(model, {"a": rf"^{prefix}a\.", "b": rf"^{prefix}b\."}, TARGETS,
                    weights={"fit": 1.0, "hidden": 0.2}, every=2, ema=0.5)


def worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    net = Net()
    ddp = nn.parallel.DistributedDataParallel(net)
    balancer = make_balancer(ddp, "body.")
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for step in range(STEPS):
        optimizer.zero_grad()
        with balancer.no_sync_if_probing(ddp):
            step_losses = ddp(batch(rank, step))
        balancer.backward(step_losses)
        optimizer.step()
    torch.save({"weights": balancer.weights, "updates": balancer.updates}, f"{out}.{rank}")
    dist.barrier()  # no rank tears gloo down while another is still in a collective
    dist.destroy_process_group()


@pytest.mark.slow
def test_all_ranks_hold_the_same_coefficients_as_one_process_on_the_whole_batch(tmp_path):
    out = tmp_path / "result"
    mp.spawn(worker, args=(str(tmp_path / "store"), str(out)), nprocs=WORLD, join=True)
    ranks = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(WORLD)]
    assert ranks[0] == ranks[1] and ranks[0]["updates"] == STEPS // 2

    model = make_model()  # reference: one process, the mean loss over both ranks' batches
    balancer = make_balancer(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(STEPS):
        optimizer.zero_grad()
        per_rank = [losses(model, batch(rank, step)) for rank in range(WORLD)]
        balancer.backward({name: sum(l[name] for l in per_rank) / WORLD for name in per_rank[0]})
        optimizer.step()
    for loss, value in balancer.weights.items():
        assert ranks[0]["weights"][loss] == pytest.approx(value, rel=1e-9)
    assert balancer.weights["hidden"] != 0.2
