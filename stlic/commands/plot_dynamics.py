"""`stlic plot-dynamics RUN`: the paper's Fig. 2 (smoothed L_G and L_D with the ln 2 line)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder of `stlic train` (reads RUN/train_log.jsonl)")
    parser.add_argument("--smooth", type=int, default=50, help="moving-average window in logged steps (default 50)")
    parser.add_argument("--out", help="output image (default RUN/dynamics.png)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from stlic.training.dynamics import plot_dynamics

    path = plot_dynamics(args.run, smooth=args.smooth, out=args.out)
    print(f"wrote {path}")
    return 0
