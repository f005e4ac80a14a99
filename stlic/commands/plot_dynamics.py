"""`stlic plot-dynamics RUN [--out FIG] [-f]`: the paper's Fig. 2 (smoothed L_G and L_D with the ln 2 line)
above a health panel (D's accuracy, real-fake gap, D(x), D(x_hat)), and the run's GAN verdict
(engaged, dormant, collapsed or diverged, :mod:`stlic.training.gan_health`) with the numbers it used,
for the second half of the D steps and for each quarter.

The default ``RUN/dynamics.png`` is redrawn in place; an explicit ``--out`` that exists is refused
unless ``--force``. Figures are written atomically.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder of `stlic train` (reads RUN/train_log.jsonl)")
    parser.add_argument("--smooth", type=int, default=50, help="moving-average window in logged steps (default 50)")
    parser.add_argument("--out", help="output image (default RUN/dynamics.png)")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite an existing --out file")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stlic.output_files import check_output
    from stlic.training.dynamics import plot_dynamics
    from stlic.training.logging import LOG_NAME

    if args.smooth < 1:
        raise ValueError(f"--smooth must be >= 1, got {args.smooth}")
    run_dir = Path(args.run)
    log = run_dir / LOG_NAME if run_dir.is_dir() else run_dir
    if args.out is not None:
        check_output(args.out, (log,), force=args.force)
    path = plot_dynamics(args.run, smooth=args.smooth, out=args.out)
    print(f"wrote {path}")
    from stlic.training.gan_health import run_health
    from stlic.training.logging import read_log

    overall, quarters = run_health(read_log(args.run))
    print(f"GAN verdict: {overall.summary()}")
    for index, part in enumerate(quarters, 1):
        print(f"  part {index}/{len(quarters)}: {part.summary()}")
    return 0
