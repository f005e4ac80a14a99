"""Cost of balancing: a training step with the Balancer at ``every=10`` against an unbalanced step.

    OMP_NUM_THREADS=1 python benchmarks/balancer_cost.py [--steps 100] [--rounds 5] [--out reports/balancer/cost.md]

A small convolutional autoencoder (CompressAI-like: 3 -> 64 -> 64 channels, two stride-2 convs each
way, 8 images of 64x64, float32, one thread) trains with Adam on ``rate`` (mean |y|, encoder only),
``mse`` and ``l1`` (both groups). Unbalanced: ``(Σ c_l L_l).backward()``; balanced:
``balancer.backward(losses)`` (probe and update every 10 steps, each law). Modes alternate
round by round on the same model and batches; the median over rounds of the mean step time is
reported, with the ratio to the unbalanced step, and the update law's own time per update; ``probe only``
(a :class:`gradbalance.GradientProbe` at ``every=10``, no update) separates the probe's cost (one
backward pass per loss on probed steps) from the law's.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradbalance import Balancer, GradientProbe  # noqa: E402
from gradbalance.io.atomic import atomic_write_text  # noqa: E402

WEIGHTS = {"rate": 0.01, "mse": 1.0, "l1": 0.1}
TARGETS = {"encoder": {"rate": 30.0}, "decoder": {"mse": 60.0, "l1": 40.0}}


def model() -> nn.ModuleDict:
    torch.manual_seed(0)
    return nn.ModuleDict({
        "encoder": nn.Sequential(nn.Conv2d(3, 64, 5, 2, 2), nn.GELU(), nn.Conv2d(64, 64, 5, 2, 2)),
        "decoder": nn.Sequential(nn.ConvTranspose2d(64, 64, 5, 2, 2, 1), nn.GELU(), nn.ConvTranspose2d(64, 3, 5, 2, 2, 1))})


def losses(net: nn.ModuleDict, x: torch.Tensor) -> dict[str, torch.Tensor]:
    y = net["encoder"](x)
    x_hat = net["decoder"](y)
    return {"rate": y.abs().mean(), "mse": (x_hat - x).square().mean(), "l1": (x_hat - x).abs().mean()}


def timed(backward, net, optimizer, batches) -> float:
    start = time.perf_counter()
    for x in batches:
        optimizer.zero_grad(set_to_none=True)
        backward(losses(net, x))
        optimizer.step()
    return (time.perf_counter() - start) / len(batches)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="steps per timed round (a multiple of 10)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "balancer" / "cost.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    net = model()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(1)
    batches = [torch.rand(8, 3, 64, 64, generator=generator) for _ in range(args.steps)]
    groups = {"encoder": net["encoder"], "decoder": net["decoder"]}
    balancers = {law: Balancer(net, groups, TARGETS, weights=WEIGHTS, every=10, fixed=["mse"], law=law)
                 for law in ("controller", "resolve")}
    law_seconds = {law: [] for law in balancers}
    for law, balancer in balancers.items():  # the law's own time per update
        propose = balancer.law.propose

        def clocked(*a, _propose=propose, _law=law, **k):
            start = time.perf_counter()
            out = _propose(*a, **k)
            law_seconds[_law].append(time.perf_counter() - start)
            return out
        balancer.law.propose = clocked
    plain = lambda step_losses: sum(WEIGHTS[k] * v for k, v in step_losses.items()).backward()  # noqa: E731
    probe = GradientProbe(net, groups, loss_order=list(WEIGHTS), every=10)
    modes = {"unbalanced": plain, "probe only (no update)": lambda step_losses: probe.backward(step_losses, WEIGHTS),
             **{f"balanced ({law})": b.backward for law, b in balancers.items()}}
    timed(plain, net, optimizer, batches[:10])  # warm-up
    times = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode, backward in modes.items():
            times[mode].append(timed(backward, net, optimizer, batches))
    median = {mode: statistics.median(values) for mode, values in times.items()}
    base = median["unbalanced"]
    command = "OMP_NUM_THREADS=1 python benchmarks/balancer_cost.py " + " ".join(sys.argv[1:])
    lines = ["# Cost of balancing at every=10", "", f"`{command}`", "",
             f"Median over {args.rounds} rounds of the mean step time over {args.steps} steps (forward, backward, Adam "
             "step); one CPU thread, shared machine.", "",
             "| mode | ms per step | ratio to unbalanced | law ms per update |", "|---|---:|---:|---:|"]
    for mode, value in median.items():
        law = mode[len("balanced ("):-1] if mode.startswith("balanced") else None
        per_update = f"{1000 * statistics.median(law_seconds[law]):.1f}" if law else "-"
        lines.append(f"| {mode} | {1000 * value:.1f} | {value / base:.3f} | {per_update} |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
