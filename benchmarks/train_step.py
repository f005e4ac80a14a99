"""Seconds per training step and peak memory of STLICSolver for the small and full presets.

    python benchmarks/train_step.py [--patch 256] [--steps 2] [--device cpu]

Each preset runs in its own subprocess (so ``ru_maxrss`` is that preset's peak): one warm-up
step, then ``--steps`` timed steps on random-crop batches of the default training data. The
presets alternate for ``--repeats`` rounds and the fastest round of each is kept (the least
disturbed by other jobs on shared cores). Prints both rows and the full/small ratios; writes
reports/benchmarks/train_step.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPORT_DIR = Path(__file__).resolve().parents[1] / "reports" / "benchmarks"
#: (preset, batch size): the full model at batch 1 keeps a CPU run to a few minutes
CASES = (("small", 2), ("full", 1))


def measure(preset: str, batch_size: int, patch: int, steps: int, device: str) -> dict:
    import torch

    from stlic.training.config import load_config
    from stlic.training.solver import STLICSolver

    config = load_config("stlic_small").to_dict()
    config["model"]["preset"] = preset
    config["schedule"]["stages"] = [{"patch_size": patch, "steps": steps + 1, "data": []}]
    config.update(batch_size=batch_size)
    from stlic.training.config import TrainConfig

    solver = STLICSolver(TrainConfig.from_dict(config), device=device)
    parameters = sum(p.numel() for p in solver.model.parameters())
    batches = [solver.next_batch() for _ in range(steps + 1)]
    solver.run_step(batches[0])  # warm-up (allocator, autograd graph caches)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for batch in batches[1:]:
        solver.run_step(batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    start = time.perf_counter()  # the codec alone: forward + backward of rate + L2 (no perceptual losses)
    for batch in batches[1:]:
        output = solver.model(batch.to(device), level=1.0)
        pixels = batch.shape[0] * batch.shape[-2] * batch.shape[-1]
        (solver.objective.rate(output.likelihoods, pixels) + (output.x_hat - batch.to(device)).pow(2).mean()).backward()
        solver.model.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    codec_seconds = (time.perf_counter() - start) / steps
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # Linux: KiB
    return {"preset": preset, "batch_size": batch_size, "patch": patch, "steps": steps, "device": device,
            "parameters": parameters, "seconds_per_step": seconds,
            "codec_seconds_per_step": codec_seconds, "peak_memory_mib": peak / 2**20,
            "memory_kind": "cuda max_memory_allocated" if device.startswith("cuda") else "process max RSS"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", nargs=2, metavar=("PRESET", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker[0], int(args.worker[1]), args.patch, args.steps, args.device)))
        return 0
    best: dict[str, dict] = {}
    for round_index in range(args.repeats):
        for preset, batch in CASES:
            command = [sys.executable, __file__, "--worker", preset, str(batch), "--patch", str(args.patch),
                       "--steps", str(args.steps), "--device", args.device]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"round {round_index + 1}: {preset:>5} batch {batch}: {row['seconds_per_step']:.2f} s/step "
                  f"(codec only {row['codec_seconds_per_step']:.2f}), {row['peak_memory_mib']:.0f} MiB peak", flush=True)
            if preset not in best or row["seconds_per_step"] < best[preset]["seconds_per_step"]:
                best[preset] = row
    rows = [best[preset] for preset, _ in CASES]
    small, full = rows
    ratios = {"seconds_per_step_full_over_small": full["seconds_per_step"] / small["seconds_per_step"],
              "seconds_per_image_full_over_small": (full["seconds_per_step"] / full["batch_size"])
              / (small["seconds_per_step"] / small["batch_size"]),
              "peak_memory_full_over_small": full["peak_memory_mib"] / small["peak_memory_mib"]}
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}")
    write_report(rows, ratios)
    return 0


def write_report(rows: list[dict], ratios: dict) -> None:
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, python {platform.python_version()}, "
               f"load average {load} when written (other jobs share the cores: absolute times are inflated)")
    (REPORT_DIR / "train_step.json").write_text(json.dumps({"machine": machine, "rows": rows, "ratios": ratios},
                                                           indent=2))
    lines = ["# STLICSolver.run_step: time and peak memory", "",
             f"Machine: {machine}; device `{rows[0]['device']}`; patch {rows[0]['patch']}; "
             f"{rows[0]['steps']} timed steps after one warm-up, fastest of the alternating rounds; "
             f"memory = {rows[0]['memory_kind']}.",
             "Each step: forward, six losses (LPIPS, Wasserstein distortion on VGG-16, GAN), backward, AdamW, "
             "aux step, discriminator step. Written by `python benchmarks/train_step.py`.", "",
             "`codec only` = forward + backward of rate + L2 through the model alone, on the same batches "
             "(the rest of a step is the perceptual losses, the GAN and the optimizer steps).", "",
             "| preset | parameters | batch | s / step | s / image | codec only (s / step) | peak memory (MiB) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['preset']} | {row['parameters'] / 1e6:.1f} M | {row['batch_size']} | "
                     f"{row['seconds_per_step']:.2f} | {row['seconds_per_step'] / row['batch_size']:.2f} | "
                     f"{row['codec_seconds_per_step']:.2f} | {row['peak_memory_mib']:.0f} |")
    lines += ["", "| ratio (full / small) | value |", "|---|---:|"]
    lines += [f"| {key} | {value:.2f} |" for key, value in ratios.items()]
    (REPORT_DIR / "train_step.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
