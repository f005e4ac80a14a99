"""Phase-2 (ST-LIC) training step against a phase-1 (rate-distortion) step, fp32 and bf16, by part.

    python benchmarks/phase2_step.py [--config configs/derived/paper_table1_cpu_iter4.yaml]
                                     [--batch 8] [--patch 128] [--threads 1] [--rounds 3]

One process, one intra-op thread by default. Four solvers are built on the same model preset and
batch: phase 2 ("stlic": rate, L1, L2, ST-LPIPS, Wasserstein, GAN and the discriminator step) and
phase 1 ("rd": the same main network on rate + L2 + L1), each in fp32 and with
``precision: bf16`` (autocast). Their steps alternate for ``--rounds`` rounds on the same batches,
so every ratio is measured side by side; the median round is reported.

The breakdown times each part of the phase-2 step on its own, forward + backward on that step's
tensors, alternated the same way: main network (forward + backward of rate + L2 + L1), refiner,
VGG-16 trunk (real image without autograd, refined image with), Wasserstein statistics and LPIPS
heads on those taps, discriminator (generator loss backward + one discriminator step) and the
optimizers (AdamW over main + refiner, the aux step). Parts run in isolation, so their sum is
close to, not equal to, the step.

Writes reports/benchmarks/phase2_step.md.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from report_file import publish

REPORT = Path(__file__).resolve().parents[1] / "reports" / "benchmarks" / "phase2_step.md"
PRECISIONS = ("fp32", "bf16")


def _solvers(config_path: str, batch: int, patch: int):
    from stlic.training.config import TrainConfig, load_config
    from stlic.training.solver import STLICSolver

    base = load_config(config_path).to_dict()
    base["schedule"] = {**base["schedule"], "stages": [{"patch_size": patch, "steps": 1000, "data": []}],
                        "adversarial_start": 0}
    base.update(batch_size=batch)
    solvers = {}
    for precision in PRECISIONS:
        for phase in ("stlic", "rd"):
            config = copy.deepcopy(base)
            config.update(precision=precision, phase=phase)
            if phase == "rd":
                config["loss_weights"].update(lpips=0.0, wasserstein=0.0, adversarial=0.0)
            solvers[phase, precision] = STLICSolver(TrainConfig.from_dict(config))
    return solvers


def _autocast(precision: str):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def _parts(solver, x, precision: str) -> dict:
    """Closures, one per part of the phase-2 step, each forward + backward on fixed inputs."""
    import torch

    model, objective = solver.model, solver.objective
    level = model.level_for_lambda(solver.config.loss_weights.rate[0])
    with torch.no_grad(), _autocast(precision):
        output = model(x, level=level)
    x_hat, x_refined, y_hat = output.x_hat.float(), output.x_refined.float(), output.y_hat.float()
    perceptual = objective.perceptual
    trunk, lpips = perceptual.wasserstein.backbone, perceptual.lpips
    with torch.no_grad(), _autocast(precision):
        taps_real = trunk.taps_of_normalised(lpips.normalise_input(x))
        taps_fake = trunk.taps_of_normalised(lpips.normalise_input(x_refined))
    weights = {k: float(v) for k, v in objective.weights(1.0).items()}

    def main_network():
        with _autocast(precision):
            out = model(x, level=level, refine=False)
        pixels = x.shape[0] * x.shape[-2] * x.shape[-1]
        total = (weights["rate"] * objective.rate({k: v.float() for k, v in out.likelihoods.items()}, pixels)
                 + weights["l2"] * objective.l2(out.x_hat.float(), x) + weights["l1"] * objective.l1(out.x_hat.float(), x))
        total.backward()

    def refiner():
        source = x_hat.clone().requires_grad_()
        with _autocast(precision):
            out = model.refiner(source)
        out.float().square().mean().backward()

    def vgg_trunk():
        fake = x_refined.clone().requires_grad_()
        with _autocast(precision):
            with torch.no_grad():
                trunk.taps_of_normalised(lpips.normalise_input(x))
            taps = trunk.taps_of_normalised(lpips.normalise_input(fake))
        sum(t.float().mean() for t in taps).backward()

    def _fake_taps():
        return [t.clone().requires_grad_() for t in taps_fake]

    def wasserstein():
        from stlic.losses.precision import upcast
        from stlic.losses.wasserstein import _checked_wasserstein_distortion, _sigma_for

        wd, total = perceptual.wasserstein, 0
        for real, fake in zip(taps_real, _fake_taps()):
            real, fake = upcast(real), upcast(fake)
            sigma = _sigma_for(wd.log2_sigma, tuple(x.shape[-2:]), real)
            total = total + _checked_wasserstein_distortion(real, fake, sigma, wd.num_levels, wd.sqrt_grad_limit,
                                                            wd.padding).mean()
        total.backward()

    def lpips_heads():
        lpips.distance_from_taps(_fake_taps(), taps_real).mean().backward()

    def discriminator():
        fake = x_refined.clone().requires_grad_()
        with _autocast(precision):
            solver.adversarial.generator_loss(fake, y_hat).backward()
        solver._discriminator_step(x, output)

    def optimizers():
        for _, p in solver.trained:
            p.grad = torch.zeros_like(p)
        solver.optimizer.step()
        solver._aux_step()

    def zero():
        solver.optimizer.zero_grad(set_to_none=True)

    parts = {"main network": main_network, "refiner": refiner, "VGG-16 trunk": vgg_trunk,
             "Wasserstein statistics": wasserstein, "LPIPS heads": lpips_heads, "discriminator": discriminator,
             "optimizers": optimizers}
    return {name: (lambda f=f: (f(), zero())) for name, f in parts.items()}


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/derived/paper_table1_cpu_iter4.yaml")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    solvers = _solvers(args.config, args.batch, args.patch)
    feeder = solvers["stlic", "fp32"]
    batches = [feeder.next_batch() for _ in range(args.rounds + 1)]
    for solver in solvers.values():  # warm-up: allocator, oneDNN primitive caches
        solver.run_step(batches[0])
    steps = {key: [] for key in solvers}
    for batch in batches[1:]:
        for key, solver in solvers.items():
            steps[key].append(_time(lambda: solver.run_step(batch)))
    step = {key: statistics.median(times) for key, times in steps.items()}

    parts = {precision: _parts(solvers["stlic", precision], batches[0], precision) for precision in PRECISIONS}
    for precision in PRECISIONS:
        for fn in parts[precision].values():
            fn()
    part_times = {precision: {name: [] for name in parts[precision]} for precision in PRECISIONS}
    for _ in range(args.rounds):
        for precision in PRECISIONS:
            for name, fn in parts[precision].items():
                part_times[precision][name].append(_time(fn))
    part = {p: {n: statistics.median(t) for n, t in part_times[p].items()} for p in PRECISIONS}

    lines = [
        "# Phase-2 training step: cost by part, fp32 and bf16",
        "",
        f"`python benchmarks/phase2_step.py --config {args.config} --batch {args.batch} --patch {args.patch} "
        f"--threads {args.threads} --rounds {args.rounds}`",
        "",
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} intra-op "
        f"thread(s), load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores at the end. "
        f"Tiny preset, batch {args.batch}, {args.patch} px crops; median of {args.rounds} alternated rounds.",
        "",
        "| | fp32 | bf16 | fp32 / bf16 |",
        "|---|---:|---:|---:|",
        f"| phase-2 step (s) | {step['stlic', 'fp32']:.3f} | {step['stlic', 'bf16']:.3f} | "
        f"{step['stlic', 'fp32'] / step['stlic', 'bf16']:.2f}x |",
        f"| phase-1 step (s) | {step['rd', 'fp32']:.3f} | {step['rd', 'bf16']:.3f} | "
        f"{step['rd', 'fp32'] / step['rd', 'bf16']:.2f}x |",
        f"| phase-2 / phase-1 | {step['stlic', 'fp32'] / step['rd', 'fp32']:.2f}x | "
        f"{step['stlic', 'bf16'] / step['rd', 'bf16']:.2f}x | |",
        f"| bf16 phase-2 / fp32 phase-1 | | {step['stlic', 'bf16'] / step['rd', 'fp32']:.2f}x | |",
        "",
        "Parts of the phase-2 step, each timed on its own (seconds; share of the parts' sum):",
        "",
        "| part | fp32 | bf16 | fp32 / bf16 |",
        "|---|---:|---:|---:|",
    ]
    sums = {p: sum(part[p].values()) for p in PRECISIONS}
    for name in part["fp32"]:
        a, b = part["fp32"][name], part["bf16"][name]
        lines.append(f"| {name} | {a:.3f} ({100 * a / sums['fp32']:.0f} %) | {b:.3f} ({100 * b / sums['bf16']:.0f} %) "
                     f"| {a / b:.2f}x |")
    lines.append(f"| sum of parts | {sums['fp32']:.3f} | {sums['bf16']:.3f} | {sums['fp32'] / sums['bf16']:.2f}x |")
    return publish(args.out, lines)


if __name__ == "__main__":
    sys.exit(main())
