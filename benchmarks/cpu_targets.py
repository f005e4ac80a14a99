"""Issue 12's CPU targets, measured side by side on the shared cores.

    python benchmarks/cpu_targets.py [--rounds 3] [--steps 10] [--probe-steps 40 --baseline DIR]

1. In one process, interleaved for ``--rounds`` rounds (the fastest round of each kind is kept), on
   the probe's ``cpu`` preset (tiny model, batch 2, 64 px, configs/stlic_probe_cpu.yaml), each
   step drawing its batch as the real commands do:

   * the preset's training step (six losses, AdamW, aux, discriminator step), no probe;
   * the same with the gradient probe at the preset's ``every=5`` (the README's probe);
   * a rate + L2 training step of the same model, batch and patch (main network forward,
     ``lambda R + l2 MSE`` backward, AdamW, aux step: the phase-1 step).

   Target: the probed-preset step at most 2.5x the rate + L2 step.
2. With ``--baseline DIR`` (another checkout, e.g. ``git archive <commit> | tar -x -C DIR``):
   the README's ``gradbalance probe --model stlic`` for ``--probe-steps`` steps, this tree and
   ``DIR`` alternating, probing time from each run's ``run.json``. The 500-step time on an idle
   machine is extrapolated from this tree's median run.

Writes reports/benchmarks/cpu_targets.{md,json}. Run it niced with OMP_NUM_THREADS=1.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "reports" / "benchmarks" / "cpu_targets"


def step_times(rounds: int, steps: int) -> dict[str, float]:
    """Fastest-round seconds per step of the three kinds (see the module doc)."""
    import torch

    from gradbalance.probe import GradientProbe
    from stlic.probe_target import DEFAULT_EVERY, make_probe_target

    target = make_probe_target(preset="cpu", device="cpu")
    solver = target.solver
    probe = GradientProbe(target.model, target.groups, loss_order=target.loss_order, every=DEFAULT_EVERY["cpu"],
                          optimizer=target.optimizer, ignore=target.ignored_parameters)
    rd_optimizer = torch.optim.AdamW([p for _, p in solver.trained if p.requires_grad], lr=1e-4, fused=True)
    l2_weight, lambda_rate = solver.config.loss_weights.l2, solver.config.loss_weights.rate[0]

    def rate_l2_step() -> None:
        x = solver.next_batch()
        output = solver.model.main(x, level=1.0)
        losses = solver.objective
        pixels = x.shape[0] * x.shape[-2] * x.shape[-1]
        loss = lambda_rate * losses.rate(output.likelihoods, pixels) + l2_weight * losses.l2(output.x_hat, x)
        rd_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        rd_optimizer.step()
        solver._aux_step()

    kinds = {
        "preset_step": lambda: solver.run_step(solver.next_batch(), read=False),
        "probed_preset_step": lambda: solver.run_step(solver.next_batch(), backward=probe.backward, read=False),
        "rate_l2_step": rate_l2_step,
    }
    for run in kinds.values():  # warm-up
        run()
    # whole probe cycles (every=5: one probed call in 5), so each timed block holds the same mix
    count = max(steps // DEFAULT_EVERY["cpu"], 1) * DEFAULT_EVERY["cpu"]
    while probe.calls % DEFAULT_EVERY["cpu"]:
        kinds["probed_preset_step"]()
    best = {name: float("inf") for name in kinds}
    for round_index in range(rounds):
        for name, run in kinds.items():
            start = time.perf_counter()
            for _ in range(count):
                run()
            best[name] = min(best[name], (time.perf_counter() - start) / count)
        print(f"round {round_index + 1}: " + ", ".join(f"{k} {v:.3f} s" for k, v in best.items()), flush=True)
    solver.check_finite()
    return best


def probe_seconds(tree: Path, steps: int) -> float:
    """Probing seconds (run.json) of the README's probe command run from ``tree``."""
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
               "MKL_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "gradbalance", "probe", "--model", "stlic", "--steps", str(steps),
                   "--out", str(Path(folder) / "run")]
        subprocess.run(command, cwd=tree, env=env, check=True, capture_output=True, text=True)
        return float(json.loads((Path(folder) / "run" / "run.json").read_text())["seconds"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per kind and round")
    parser.add_argument("--baseline", type=Path, help="another checkout to time the README probe against")
    parser.add_argument("--probe-steps", type=int, default=40)
    args = parser.parse_args()
    times = step_times(args.rounds, args.steps)
    result: dict = {"seconds_per_step": times,
                    "probed_over_rate_l2": times["probed_preset_step"] / times["rate_l2_step"],
                    "preset_over_rate_l2": times["preset_step"] / times["rate_l2_step"]}
    if args.baseline is not None:
        ours, theirs = [], []
        for _ in range(2):
            ours.append(probe_seconds(REPO, args.probe_steps))
            theirs.append(probe_seconds(args.baseline.resolve(), args.probe_steps))
            print(f"probe {args.probe_steps} steps: this tree {ours[-1]:.1f} s, baseline {theirs[-1]:.1f} s", flush=True)
        ratio = min(ours) / min(theirs)
        result.update(probe_steps=args.probe_steps, probe_seconds=ours, baseline_probe_seconds=theirs,
                      probe_over_baseline=ratio,
                      extrapolated_minutes_500=statistics.median(ours) * 500 / args.probe_steps / 60)
    write_report(result, args)
    print(json.dumps(result, indent=2))
    return 0


def write_report(result: dict, args: argparse.Namespace) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, python {platform.python_version()}, load average "
               f"{load} when written (shared cores: absolute times are inflated, ratios are side by side)")
    times = result["seconds_per_step"]
    lines = ["# CPU targets of issues 12 and 22", "", f"Machine: {machine}. Written by `python benchmarks/cpu_targets.py "
             f"--rounds {args.rounds} --steps {args.steps}" + (f" --baseline DIR --probe-steps {args.probe_steps}`"
                                                               if args.baseline else "`") + ".", "",
             "Probe `cpu` preset (tiny model, batch 2, 64 px), fastest of the interleaved rounds:", "",
             "| step | s / step |", "|---|---:|",
             f"| preset step, no probe | {times['preset_step']:.3f} |",
             f"| preset step, probed every 5 (the README probe) | {times['probed_preset_step']:.3f} |",
             f"| rate + L2 step, same model, batch, patch | {times['rate_l2_step']:.3f} |", "",
             "| target | goal | measured |", "|---|---:|---:|",
             f"| probed-preset step / rate + L2 step | <= 2.5 | {result['probed_over_rate_l2']:.2f} |"]
    if "probe_over_baseline" in result:
        lines.append(f"| README probe, this tree / baseline, {args.probe_steps} steps each, alternated | < 1 | "
                     f"{result['probe_over_baseline']:.2f} |")
        lines.append(f"| README probe, 500 steps of probing, extrapolated from this tree's {args.probe_steps} | "
                     f"(`make probe` <= 5 min with install) | {result['extrapolated_minutes_500']:.1f} min |")
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        lines += ["", "Warning: the load average exceeded the core count while measuring; other jobs distort even "
                  "side-by-side ratios at this load. Rerun on an idle machine."]
    REPORT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    REPORT.with_suffix(".json").write_text(json.dumps({"machine": machine, **result}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
