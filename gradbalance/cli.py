"""``gradbalance probe|table|derive|plot``: measure, tabulate and rebalance loss gradients.

    gradbalance probe --model example --steps 200 --every 10        # writes reports/probe/<run>
    gradbalance table RUN --window 10
    gradbalance derive RUN --target equal --base base.yaml --out configs/derived/x.yaml
    gradbalance plot RUN
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch
import yaml

from gradbalance.derive import derive_coefficients
from gradbalance.export import DEFAULT_BLOCK, export_config, load_yaml_mapping, loss_weight_block
from gradbalance.preconditioned import supports_preconditioning
from gradbalance.probe import GradientProbe
from gradbalance.run import ProbeRun, save_run, write_tables
from gradbalance.target import make_target


def _probe(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device in (None, "auto") else args.device
    target = make_target(args.model, config=args.config, preset=args.preset, device=device, data=args.data,
                         seed=args.seed, batch_size=args.batch_size, patch_size=args.patch_size)
    print(target.description)
    optimizer = target.optimizer if supports_preconditioning(target.optimizer) else None
    if optimizer is None:
        print(f"note: optimizer {type(target.optimizer).__name__} is not Adam/AdamW: no optimizer-aware table")
    every = args.every or getattr(target, "default_every", 1)
    probe = GradientProbe(target.model, target.groups, loss_order=target.loss_order, every=every,
                          optimizer=optimizer, scaler=getattr(target, "scaler", None), cosine=args.cosine,
                          ignore=getattr(target, "ignored_parameters", ()))
    main_rank = not (torch.distributed.is_available() and torch.distributed.is_initialized()) \
        or torch.distributed.get_rank() == 0  # under torchrun every rank probes, rank 0 writes
    start = time.perf_counter()
    for step in tqdm(range(args.steps), desc=f"probe {args.model}", unit="step", disable=not main_rank):
        target.train_step(step, probe.backward)
    if not probe.history:
        raise ValueError("no step was probed; use --steps >= 1")
    if not main_rank:
        return 0
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    parent = Path(getattr(target, "default_out", Path("reports") / "probe"))
    out = Path(args.out or parent / f"{args.model.replace(':', '_')}-{stamp}")
    metadata = dict(model=args.model, config=args.config, preset=args.preset, device=device, data=args.data,
                    seed=args.seed, steps=args.steps, every=every, window=args.window,
                    loss_order=list(probe.loss_order), groups=list(probe.partition.names),
                    description=target.description, seconds=round(time.perf_counter() - start, 2),
                    created=stamp, torch=torch.__version__)
    save_run(out, probe.records, probe.cosine_records, metadata)
    run = ProbeRun.load(out)
    _report(run, args.window, write=True)
    print(f"run written to {out}")
    return 0


def _report(run: ProbeRun, window: Optional[int], write: bool) -> None:
    """Print (and write) the raw and, when measured, the optimizer-aware tables and figures."""
    from gradbalance.plots import save_plots

    variants = [(False, "table", "gradient share (%)")]
    if run.has_precond:
        variants.append((True, "precond_table", "optimizer-aware (Adam update) share (%)"))
    for precond, stem, title in variants:
        table = run.table(window, precond=precond)
        span = f"training steps {table.steps[0]}..{table.steps[-1]}"
        print(f"\n{title}, mean ± std over {len(table.steps)} probed steps ({span}):\n{table.to_markdown()}")
        if write:
            write_tables(table, run.path, stem)
            save_plots(run.records, table, run.path, prefix="precond_" if precond else "")


def _window(args: argparse.Namespace, run: ProbeRun) -> Optional[int]:
    """--window, else the window the run was probed with (None: all probed steps)."""
    return args.window or run.metadata.get("window")


def _table(args: argparse.Namespace) -> int:
    run = ProbeRun.load(args.run)
    window = _window(args, run)
    tables = [run.table(window)] + ([run.table(window, precond=True)] if run.has_precond else [])
    for table in tables:
        render = {"md": table.to_markdown, "latex": table.to_latex, "csv": table.to_csv}[args.format]
        print(f"# {table.column}, {len(table.steps)} probed steps\n{render()}\n")
    return 0


def _parse_fixed(items: list[str]) -> dict:
    fixed = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--fixed expects loss=value or loss=lo,hi, got {item!r}")
        numbers = [float(v) for v in value.split(",")]
        fixed[name] = tuple(numbers) if len(numbers) > 1 else numbers[0]
    return fixed


def _derive(args: argparse.Namespace) -> int:
    run = ProbeRun.load(args.run)
    table = run.table(_window(args, run), precond=args.precond)
    target = args.target if args.target == "equal" else load_yaml_mapping(args.target)
    base = loss_weight_block(load_yaml_mapping(args.base), args.block, source=args.base)
    current = {}
    for loss, measured in table.weights.items():
        value = base.get(loss)
        if isinstance(value, list):
            current[loss] = tuple(value)
        elif value is not None and abs(float(value) - measured) > 1e-6 * max(abs(measured), 1e-12):
            print(f"warning: {loss} was probed with weight {measured:g}, base config says {value}; "
                  f"scaling the probed weight", file=sys.stderr)
    result = derive_coefficients(table, target, fixed=_parse_fixed(args.fixed), current=current)
    print(f"predicted shares (%) under the derived coefficients:\n{result.predicted.round(2).to_string()}")
    print(f"log-share residual (RMS) {result.residual:.4g}, largest miss {result.max_error:.3g} "
          f"percentage points{' (infeasible target: least-squares compromise)' if not result.feasible else ''}")
    header = (f"Run {run.path} ({run.metadata.get('model', '?')}, {len(table.steps)} probed steps, "
              f"{table.column}); target {args.target}; residual {result.residual:.4g}.")
    skipped = sorted(set(result.coefficients) - set(base))
    if skipped:
        print(f"warning: {skipped} not in the base block {args.block!r}; left out of {args.out}", file=sys.stderr)
    out = export_config({k: v for k, v in result.coefficients.items() if k in base}, args.base, args.out,
                        block=args.block, header=header)
    print(f"coefficients {yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in result.coefficients.items()}, default_flow_style=True).strip()}")
    print(f"written to {out}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    run = ProbeRun.load(args.run)
    _report(run, _window(args, run), write=True)
    print(f"figures written to {args.run}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradbalance", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    probe = sub.add_parser("probe", help="train a target for N steps, probing every K")
    probe.add_argument("--model", required=True, help="registered target name or module:callable")
    probe.add_argument("--steps", type=int, required=True)
    probe.add_argument("--config", help="the target's YAML config")
    probe.add_argument("--preset")
    probe.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto: cuda when available)")
    probe.add_argument("--data", nargs="+", help="image folder(s)")
    probe.add_argument("--batch-size", type=int)
    probe.add_argument("--patch-size", type=int)
    probe.add_argument("--every", type=int, help="probe every K steps, plain backward otherwise "
                       "(default: the target's default_every, else 1)")
    probe.add_argument("--window", type=int, help="average the last W probed steps (default: all)")
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument("--cosine", action="store_true", help="also record pairwise gradient cosines")
    probe.add_argument("--out", help="run directory (default <target.default_out or reports/probe>/"
                       "<model>-<timestamp>)")
    probe.set_defaults(_run=_probe)
    table = sub.add_parser("table", help="print Table I of a saved run")
    table.add_argument("run")
    table.add_argument("--window", type=int)
    table.add_argument("--format", choices=("md", "latex", "csv"), default="md")
    table.set_defaults(_run=_table)
    derive = sub.add_parser("derive", help="derive loss coefficients for target shares, export a config")
    derive.add_argument("run")
    derive.add_argument("--target", required=True, help="'equal' or a YAML file {group: {loss: percent}} "
                        "or {loss: [min%%, max%%]}")
    derive.add_argument("--fixed", nargs="*", default=[], metavar="LOSS=VALUE", help="coefficients to hold")
    derive.add_argument("--base", required=True, help="base YAML config with the loss-weight block")
    derive.add_argument("--out", required=True, help="output YAML")
    derive.add_argument("--block", default=DEFAULT_BLOCK, help="loss-weight block key (dotted for nested)")
    derive.add_argument("--window", type=int)
    derive.add_argument("--precond", action="store_true", help="balance the optimizer-aware shares")
    derive.set_defaults(_run=_derive)
    plot = sub.add_parser("plot", help="(re)draw the figures and tables of a saved run")
    plot.add_argument("run")
    plot.add_argument("--window", type=int)
    plot.set_defaults(_run=_plot)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    # third-party modules (CompressAI) script functions at import; not actionable for CLI users
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (FileNotFoundError, KeyError, ValueError, TypeError) as error:
        if args.debug:
            raise
        print(f"gradbalance {args.command}: error: {error}", file=sys.stderr)
        return 2
