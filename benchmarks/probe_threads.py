"""Quick start with 1 or 2 intra-op threads: `gradbalance probe --model stlic` timed side by side.

    python benchmarks/probe_threads.py [--steps 60] [--rounds 2] [--threads 1 2]

Runs the README's probe (CPU preset) for ``--steps`` steps with ``OMP_NUM_THREADS`` set to each
value in turn, alternating for ``--rounds`` rounds, and reads the probing seconds from each run's
``run.json`` (start-up excluded). Prints seconds per step and the ratios to the first setting;
writes reports/benchmarks/probe_threads.md. Run it on an otherwise idle machine: a second thread
only helps when the second core is free.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from report_file import publish

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "reports" / "benchmarks" / "probe_threads.md"


def probe_seconds(threads: int, steps: int, workdir: Path) -> float:
    out = Path(tempfile.mkdtemp(dir=workdir)) / "run"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    subprocess.run([sys.executable, "-m", "gradbalance", "probe", "--model", "stlic", "--steps", str(steps),
                    "--out", str(out)], cwd=REPO, env=env, check=True, capture_output=True)
    return json.loads((out / "run.json").read_text())["seconds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args()
    times: dict[int, list[float]] = {t: [] for t in args.threads}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.rounds):
            for threads in args.threads:
                times[threads].append(probe_seconds(threads, args.steps, Path(workdir)))
                print(f"{threads} thread(s): {times[threads][-1]:.1f} s", flush=True)
    first = statistics.median(times[args.threads[0]])
    lines = ["# Quick-start probe: intra-op threads", "",
             f"`python benchmarks/probe_threads.py --steps {args.steps} --rounds {args.rounds} --threads "
             f"{' '.join(map(str, args.threads))}`", "",
             f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end; median of "
             f"{args.rounds} alternated rounds of {args.steps} probed-preset steps.", "",
             "| OMP_NUM_THREADS | seconds per step | ratio to the first |", "|---:|---:|---:|"]
    for threads in args.threads:
        median = statistics.median(times[threads])
        lines.append(f"| {threads} | {median / args.steps:.3f} | {median / first:.2f}x |")
    return publish(args.out, lines)


if __name__ == "__main__":
    sys.exit(main())
