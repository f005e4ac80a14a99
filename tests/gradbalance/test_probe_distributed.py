"""Two-process gloo: under DDP the probe's norms are those of the rank-averaged per-loss gradient and
``.grad`` equals what DDP's own all-reduce gives; the reference is a single-process computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from gradbalance import GradientProbe

WORLD = 2


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.ModuleDict({"a": nn.Linear(4, 6), "b": nn.Linear(6, 2)}).double()


def batch(rank: int) -> torch.Tensor:
    return torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(10 + rank))


def losses(model: nn.Module, x: torch.Tensor) -> dict:
    h = torch.tanh(model["a"](x))
    out = model["b"](h)
    return {"fit": out.square().mean(), "hidden": h.abs().mean()}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = make_model()

    def forward(self, x: torch.Tensor) -> dict:
        return losses(self.body, x)


def worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    torch.manual_seed(0)
    net = Net()
    ddp = nn.parallel.DistributedDataParallel(net)
    probe = GradientProbe(ddp, {"a": r"^body\.a\.", "b": r"^body\.b\."})
    with probe.no_sync_if_probing(ddp):
        step_losses = ddp(batch(rank))
    stats = probe.backward(step_losses, {"fit": 1.0, "hidden": 0.5})
    probed = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    step_losses = ddp(batch(rank))  # DDP's own reduction as the reference for .grad
    (step_losses["fit"] + 0.5 * step_losses["hidden"]).backward()
    reference = [p.grad.clone() for p in net.parameters()]
    if rank == 0:
        torch.save({"raw_norm": torch.from_numpy(stats.raw_norm), "probed": probed, "ddp": reference}, out)
    dist.barrier()  # no rank tears gloo down while another is still in a collective (SIGABRT otherwise)
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_norms_of_averaged_gradients_and_grad_matches_ddp(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(worker, args=(str(tmp_path / "store"), str(out)), nprocs=WORLD, join=True)
    result = torch.load(out, weights_only=True)
    for probed, ddp_grad in zip(result["probed"], result["ddp"]):
        torch.testing.assert_close(probed, ddp_grad, rtol=1e-12, atol=1e-14)
    # single-process reference: per-loss gradients averaged over the two ranks' batches
    model = make_model()
    groups = {"a": list(model["a"].parameters()), "b": list(model["b"].parameters())}
    expected = np.full((2, 2), np.nan)
    for i, name in enumerate(["fit", "hidden"]):
        for j, params in enumerate(groups.values()):
            grads = [torch.autograd.grad(losses(model, batch(r))[name], params, allow_unused=True) for r in range(WORLD)]
            if grads[0][0] is not None:
                expected[i, j] = float(torch.cat([(g0 + g1).reshape(-1) / WORLD for g0, g1 in zip(*grads)]).norm())
    np.testing.assert_allclose(result["raw_norm"].numpy(), expected, rtol=1e-10)
    assert np.isnan(expected[1, 1])  # 'hidden' does not reach b
