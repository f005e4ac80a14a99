"""GPU check: the gpu-marked tests, then training-step throughput and memory on one CUDA device.

    python benchmarks/gpu_check.py [--steps 10] [--skip-tests] [--compile]

Runs ``pytest -m gpu`` (probe, training step fp32/bf16, no host sync, eval, codec), then times
``STLICSolver.run_step`` for the full preset (``configs/stlic_015.yaml``, Table II), batch 8,
256 px random images, with unread steps (no host sync) after two warm-up steps:

* fp32, bf16 (both channels-last, the CUDA default), bf16 without channels-last;
* bf16 with the gradient probe at ``every=10`` (2 probed steps in 20) against the same unprobed;
* with ``--compile``, bf16 under ``torch.compile`` (compilation excluded from the timing).

It also counts host synchronisations in one unread step (``torch.cuda.set_sync_debug_mode``).
Writes reports/benchmarks/gpu.md (and .json) with each issue-12 target beside its measurement.
Without CUDA it says so in the report and exits 0: it runs as-is on a CPU-only machine.
Budget: about 5 minutes on an H200 (8 at most).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "reports" / "benchmarks" / "gpu.md"
#: issue 12's targets on one H200, full preset, batch 8, 256 px
TARGETS = {"bf16_seconds_per_step": 0.25, "bf16_peak_gib": 16.0, "bf16_speedup_over_fp32": 1.5,
           "probed_over_unprobed": 1.3}
#: what the issue measured before (0.87 / 0.96 s per step, 29.4 / 26.3 GiB)
BEFORE = {"fp32": (0.87, 29.4), "bf16": (0.96, 26.3)}
BATCH, PATCH = 8, 256


def run_gpu_tests(timeout: float) -> str:
    """``pytest -m gpu`` in a subprocess; returns its summary line."""
    files = sorted(str(path.relative_to(REPO)) for path in (REPO / "tests").rglob("test_*.py")
                   if "mark.gpu" in path.read_text(encoding="utf-8"))  # collect only the files with gpu tests
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-m", "gpu", *files]
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return "; ".join(failures + lines[-1:]) if lines else f"exit {done.returncode}: {done.stderr[-500:]}"


def _solver(precision: str, channels_last: bool, compile: bool):
    from stlic.training.config import load_config
    from stlic.training.solver import STLICSolver

    config = load_config("stlic_015").replace(precision=precision, batch_size=BATCH)
    return STLICSolver(config, device="cuda", channels_last=channels_last, compile=compile)


def measure(precision: str, steps: int, channels_last: bool = True, compile: bool = False,
            probe_every: int | None = None) -> dict:
    """Seconds per unread step and peak allocated memory (GiB) after two warm-up steps."""
    torch.cuda.empty_cache()
    solver = _solver(precision, channels_last, compile)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.rand(BATCH, 3, PATCH, PATCH, generator=generator).pin_memory() for _ in range(2)]
    backward = None
    if probe_every:
        from gradbalance.probe import GradientProbe
        from stlic.probe_target import STLICProbeTarget

        target = STLICProbeTarget(solver=solver, description="gpu_check")
        probe = GradientProbe(solver.model, target.groups, loss_order=target.loss_order, every=probe_every,
                              optimizer=solver.optimizer, ignore=target.ignored_parameters)
        backward = probe.backward
    for batch in batches:  # warm-up: allocator, cuDNN autotuning, compilation
        solver.run_step(batch, backward=backward)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for index in range(steps):
        solver.run_step(batches[index % 2], backward=backward, read=False)
    solver.check_finite()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    row = {"precision": precision, "channels_last": channels_last, "compile": compile, "probe_every": probe_every,
           "steps": steps, "seconds_per_step": seconds, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    if not probe_every and not compile:
        row["host_syncs_per_unread_step"] = count_syncs(solver, batches[0])
    del solver
    return row


def count_syncs(solver, batch) -> int:
    """Host synchronisations the CUDA runtime reports during one unread step."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            solver.run_step(batch, read=False)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def measure_all(steps: int, compile: bool, deadline: float) -> tuple[list[dict], list[str]]:
    rows, notes = [], []
    plan = [("fp32", {}), ("bf16", {}), ("bf16", {"channels_last": False}),
            ("bf16", {"probe_every": 10}), ("bf16", {"probe_every": 10**9})]
    if compile:
        plan.append(("bf16", {"compile": True}))
    for precision, options in plan:
        if time.perf_counter() > deadline:
            notes.append(f"skipped {precision} {options}: time budget spent")
            continue
        probe_steps = 20 if options.get("probe_every") else steps
        try:
            rows.append(measure(precision, probe_steps, **options))
        except Exception as error:  # report and go on: one failing variant must not hide the others
            notes.append(f"{precision} {options} failed: {type(error).__name__}: {error}"[:400])
        print(rows[-1] if rows else notes[-1], flush=True)
    return rows, notes


def summarise(rows: list[dict]) -> dict[str, float | None]:
    def find(**keys):
        for row in rows:
            if all(row.get(k) == v for k, v in keys.items()):
                return row
        return None

    fp32 = find(precision="fp32", probe_every=None, channels_last=True, compile=False)
    bf16 = find(precision="bf16", probe_every=None, channels_last=True, compile=False)
    probed, unprobed = find(probe_every=10), find(probe_every=10**9)
    return {
        "bf16_seconds_per_step": bf16["seconds_per_step"] if bf16 else None,
        "bf16_peak_gib": bf16["peak_gib"] if bf16 else None,
        "bf16_speedup_over_fp32": fp32["seconds_per_step"] / bf16["seconds_per_step"] if fp32 and bf16 else None,
        "probed_over_unprobed": probed["seconds_per_step"] / unprobed["seconds_per_step"]
        if probed and unprobed else None,
    }


def write_report(device: str, tests: str, rows: list[dict], summary: dict, notes: list[str]) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{device}; torch {torch.__version__}; python {platform.python_version()}"
    lines = ["# GPU check", "", f"Machine: {machine}. Written by `python benchmarks/gpu_check.py`.", "",
             f"GPU tests (`pytest -m gpu`): {tests}", ""]
    if rows:
        lines += ["Full preset (`stlic_015`), batch 8, 256 px random images, unread steps (no host sync) after "
                  "two warm-up steps; peak = `torch.cuda.max_memory_allocated`.", "",
                  "| precision | channels-last | compile | probe every | s / step | steps / s | peak GiB | host syncs |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            every = "-" if not r["probe_every"] else ("never" if r["probe_every"] >= 10**9 else r["probe_every"])
            lines.append(f"| {r['precision']} | {r['channels_last']} | {r['compile']} | {every} | "
                         f"{r['seconds_per_step']:.3f} | {1 / r['seconds_per_step']:.2f} | {r['peak_gib']:.1f} | "
                         f"{r.get('host_syncs_per_unread_step', '-')} |")
        lines.append("")
    shown = {k: ("not measured" if v is None else f"{v:.2f}") for k, v in summary.items()}
    lines += ["| target (issue 12, H200) | before | goal | measured |", "|---|---:|---:|---:|",
              f"| bf16 s / step | {BEFORE['bf16'][0]} | <= {TARGETS['bf16_seconds_per_step']} | "
              f"{shown['bf16_seconds_per_step']} |",
              f"| bf16 peak memory (GiB) | {BEFORE['bf16'][1]} | <= {TARGETS['bf16_peak_gib']:.0f} | "
              f"{shown['bf16_peak_gib']} |",
              f"| bf16 speed-up over fp32 | {BEFORE['fp32'][0] / BEFORE['bf16'][0]:.2f} | "
              f">= {TARGETS['bf16_speedup_over_fp32']} | {shown['bf16_speedup_over_fp32']} |",
              f"| probed (every 10) / unprobed step | - | <= {TARGETS['probed_over_unprobed']} | "
              f"{shown['probed_over_unprobed']} |", ""]
    lines += [f"Note: {note}" for note in notes]
    REPORT.write_text("\n".join(lines) + "\n")
    REPORT.with_suffix(".json").write_text(json.dumps(
        {"device": device, "tests": tests, "rows": rows, "summary": summary, "notes": notes}, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (probe variants: 20)")
    parser.add_argument("--skip-tests", action="store_true", help="measure only")
    parser.add_argument("--compile", action="store_true", help="also time bf16 under torch.compile")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds before remaining variants are skipped")
    args = parser.parse_args()
    deadline = time.perf_counter() + args.budget
    if not torch.cuda.is_available():
        tests = "not run: no CUDA device (every gpu-marked test would skip)"
        write_report(f"no CUDA device found ({platform.node()}, {platform.machine()})", tests, [],
                     summarise([]), ["no GPU was found: nothing was measured; rerun on a CUDA machine"])
        print(f"no CUDA device found; wrote {REPORT}")
        return 0
    device = f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    tests = "not run (--skip-tests)" if args.skip_tests else run_gpu_tests(timeout=max(60.0, args.budget / 2))
    print(f"gpu tests: {tests}", flush=True)
    rows, notes = measure_all(args.steps, args.compile, deadline)
    summary = summarise(rows)
    write_report(device, tests, rows, summary, notes)
    print(json.dumps(summary, indent=2))
    print(f"wrote {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
