"""``gradbalance probe|table|derive|plot``: measure, tabulate and rebalance loss gradients.

    gradbalance probe --model example --steps 200 --every 10        # writes reports/probe/<run>
    gradbalance table RUN --window 10
    gradbalance derive RUN --target equal --base base.yaml --out configs/derived/x.yaml [--verify]
    gradbalance plot RUN

A user mistake (missing or unreadable file, invalid YAML, ``--every 0``) is one line on stderr and
exit status 2. ``derive --out`` and ``probe --out`` refuse an existing output unless ``--force``,
and an output that is one of the inputs in any case; ``table`` and ``plot`` redraw a run's own
tables and figures.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch
import yaml

from gradbalance.functional.derive import derive_coefficients
from gradbalance.io.export import DEFAULT_BLOCK, export_config, load_yaml_mapping, loss_weight_block
from gradbalance.io.atomic import atomic_write_text
from gradbalance.probe.preconditioned import supports_preconditioning
from gradbalance.functional.rebalance import compare_shares, rebalance
from gradbalance.report.reference import ReferenceShares, comparison_markdown
from gradbalance.targets.probe_loop import remeasure, run_target
from gradbalance.io.run import ProbeRun, save_run, write_tables
from gradbalance.report.scale_report import describe_scale
from gradbalance.targets.target import make_target


def _probe(args: argparse.Namespace) -> int:
    if args.out is not None:
        _check_out(Path(args.out), [p for p in (args.config,) if p], args.force, is_dir=True)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device in (None, "auto") else args.device
    target = make_target(args.model, config=args.config, preset=args.preset, device=device, data=args.data,
                         seed=args.seed, batch_size=args.batch_size, patch_size=args.patch_size,
                         **_parse_options(args.option))
    print(target.description)
    if not supports_preconditioning(target.optimizer):
        print(f"note: optimizer {type(target.optimizer).__name__} is not Adam/AdamW: no optimizer-aware table")
    every = args.every if args.every is not None else getattr(target, "default_every", 1)
    main_rank = not (torch.distributed.is_available() and torch.distributed.is_initialized()) \
        or torch.distributed.get_rank() == 0  # under torchrun every rank probes, rank 0 writes
    start = time.perf_counter()
    probe = run_target(target, args.steps, every, cosine=args.cosine,
                       progress=f"probe {args.model}" if main_rank else None)
    if not main_rank:
        return 0
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    parent = Path(getattr(target, "default_out", Path("reports") / "probe"))
    out = Path(args.out or parent / f"{args.model.replace(':', '_')}-{stamp}")
    metadata = dict(model=args.model, config=args.config, preset=args.preset, device=device, data=args.data,
                    seed=args.seed, batch_size=args.batch_size, patch_size=args.patch_size, steps=args.steps,
                    every=every, window=args.window, loss_order=list(probe.loss_order),
                    groups=list(probe.partition.names), description=target.description,
                    seconds=round(time.perf_counter() - start, 2), created=stamp, torch=torch.__version__,
                    options=_parse_options(args.option))
    if getattr(target, "reference", None) is not None:
        metadata["reference"] = target.reference.to_dict()
    save_run(out, probe.records, probe.cosine_records, metadata)
    run = ProbeRun.load(out)
    _report(run, args.window, write=True)
    if getattr(target, "epilogue", None):
        print(f"\n{target.epilogue}")
    print(f"run written to {out}")
    return 0


def _report(run: ProbeRun, window: Optional[int], write: bool) -> None:
    """Print (and write) the raw and, when measured, the optimizer-aware tables and figures."""
    from gradbalance.report.plots import save_plots

    variants = [(False, "table", "gradient share (%)")]
    if run.has_precond:
        variants.append((True, "precond_table", "optimizer-aware (Adam update) share (%)"))
    for precond, stem, title in variants:
        table = run.table(window, precond=precond)
        print(f"\n{title}:\n{table.to_markdown()}")
        comparison = _comparison(run, table)
        if comparison:
            print(f"\nbeside {run.metadata['reference']['name']} (difference in percentage points):\n{comparison}")
        if write:
            write_tables(table, run.path, stem)
            if comparison:
                atomic_write_text(run.path / f"{stem}_vs_reference.md", comparison + "\n")
            save_plots(run.records, table, run.path, prefix="precond_" if precond else "")


def _comparison(run: ProbeRun, table) -> str:
    """The table beside the run's reference shares (a paper's Table I), or "" without one."""
    if not run.metadata.get("reference"):
        return ""
    return comparison_markdown(table, ReferenceShares.from_dict(run.metadata["reference"]))


def _parse_options(items: list[str]) -> dict:
    """``--option KEY=VALUE`` pairs for the target's factory (values are strings)."""
    options = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--option expects KEY=VALUE, got {item!r}")
        options[key] = value
    return options


def _window(args: argparse.Namespace, run: ProbeRun) -> Optional[int]:
    """--window, else the window the run was probed with (None: all probed steps)."""
    return args.window if args.window is not None else run.metadata.get("window")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_out(out: Path, inputs: list, force: bool, is_dir: bool = False) -> None:
    """Refuse an output that is an input (also through links), of the wrong kind, or existing without --force."""
    for source in inputs:
        if _same_file(out, Path(source)):
            raise ValueError(f"--out {out} is the input {source}; refusing to overwrite it")
    if is_dir:
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file; give a folder")
        if (out / "records.csv").exists() and not force:
            raise FileExistsError(f"--out {out} already holds a probe run; use --force to replace it")
        return
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give a file name")
    if out.exists() and not force:
        raise FileExistsError(f"--out {out} already exists; use --force to overwrite it")
    folder = next((p for p in (out.parent, *out.parent.parents) if p.exists()), Path("."))
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out}: cannot write into {folder}")
    try:  # permission bits do not stop root: try, before any work is done
        handle, probe = tempfile.mkstemp(prefix=".gradbalance-write-check.", dir=folder)
    except OSError as error:
        raise PermissionError(f"--out {out}: cannot write into {folder} ({error.strerror})") from None
    os.close(handle)
    os.unlink(probe)


def _table(args: argparse.Namespace) -> int:
    run = ProbeRun.load(args.run)
    window = _window(args, run)
    tables = [run.table(window)] + ([run.table(window, precond=True)] if run.has_precond else [])
    for table in tables:
        render = {"md": table.to_markdown, "latex": table.to_latex, "csv": table.to_csv}[args.format]
        print(f"# {table.column}, {len(table.steps)} probed steps\n{render()}\n")
        comparison = _comparison(run, table)
        if comparison:
            print(f"# beside {run.metadata['reference']['name']} (percentage points)\n{comparison}\n")
    return 0


def _parse_fixed(items: list[str]) -> dict:
    fixed = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--fixed expects loss=value or loss=lo,hi, got {item!r}")
        try:
            numbers = [float(v) for v in value.split(",")]
        except ValueError:
            raise ValueError(f"--fixed {item!r}: the value of {name!r} must be a number or lo,hi") from None
        fixed[name] = tuple(numbers) if len(numbers) > 1 else numbers[0]
    return fixed


def _derive(args: argparse.Namespace) -> int:
    run_files = [Path(args.run) / name for name in ("records.csv", "run.json")]
    _check_out(Path(args.out), [args.base, *([args.target] if args.target != "equal" else []), *run_files],
               args.force)
    run = ProbeRun.load(args.run)
    window = _window(args, run)
    table = run.table(window, precond=args.precond)
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
    fixed = _parse_fixed(args.fixed)
    note = ""
    if args.precond:  # not linear in the weights: re-measure until the target is met (or refuse)
        done = rebalance(remeasure(run, window, precond=True), target, table=table, fixed=fixed, current=current,
                         tolerance=args.tolerance, max_iterations=args.max_iterations)
        result, coefficients = done.last, done.coefficients
        for k, check in enumerate(done.checks, 1):
            print(f"re-measurement {k}: largest miss {check.max_miss:.3g} percentage points")
        print(f"predicted vs re-measured shares (%):\n{done.checks[-1].to_string()}")
        note = f" Re-measured {len(done.checks)} time(s); largest miss {done.checks[-1].max_miss:.3g} pp."
    else:
        result = derive_coefficients(table, target, fixed=fixed, current=current)
        coefficients = result.coefficients
        print(f"predicted shares (%) under the derived coefficients:\n{result.predicted.round(2).to_string()}")
        print(f"log-share residual (RMS) {result.residual:.4g}, largest miss {result.max_error:.3g} "
              f"percentage points{' (infeasible target: least-squares compromise)' if not result.feasible else ''}")
        if args.verify:
            check = compare_shares(result, remeasure(run, window, precond=False)(result.multipliers))
            print(f"predicted vs re-measured shares (%):\n{check.to_string()}\nlargest miss of the re-measured "
                  f"shares {check.max_miss:.3g} percentage points, largest prediction error "
                  f"{check.max_prediction_error:.3g}")
            note = f" Re-measured: largest miss {check.max_miss:.3g} pp."
    for anchor, members in result.anchors.items():
        if len(members) > 1 or anchor not in fixed:
            print(f"note: the target fixes only the ratios of {', '.join(members)}; {anchor} keeps its current "
                  f"weight (give --fixed to choose)", file=sys.stderr)
    scale = describe_scale(current, result.multipliers, fixed=fixed, anchors=result.anchors)
    if scale.note():
        print(f"note: {scale.note()}", file=sys.stderr)
    header = (f"Run {run.path} ({run.metadata.get('model', '?')}, {len(table.steps)} probed steps, "
              f"{table.column}); target {args.target}; residual {result.residual:.4g}.{note}\n{scale.header()}")
    skipped = sorted(set(coefficients) - set(base))
    if skipped:
        print(f"warning: {skipped} not in the base block {args.block!r}; left out of {args.out}", file=sys.stderr)
    out = export_config({k: v for k, v in coefficients.items() if k in base}, args.base, args.out,
                        block=args.block, header=header)
    shown = {k: list(v) if isinstance(v, tuple) else v for k, v in coefficients.items()}
    print(f"coefficients {yaml.safe_dump(shown, default_flow_style=True).strip()}")
    print(f"written to {out}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from gradbalance.report.balance_plots import save_balance_plots

    run = ProbeRun.load(args.run)
    _report(run, _window(args, run), write=True)
    save_balance_plots(run.records, run.path, run.metadata.get("loss_order", ()), run.metadata.get("groups", ()))
    print(f"figures written to {args.run}")
    return 0


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (0 or a negative count is refused, never read as 'default')."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradbalance", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    probe = sub.add_parser("probe", help="train a target for N steps, probing every K")
    probe.add_argument("--model", required=True, help="registered target name or module:callable")
    probe.add_argument("--steps", type=positive_int, required=True)
    probe.add_argument("--config", help="the target's YAML config")
    probe.add_argument("--preset")
    probe.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto: cuda when available)")
    probe.add_argument("--data", nargs="+", help="image folder(s)")
    probe.add_argument("--batch-size", type=positive_int)
    probe.add_argument("--patch-size", type=positive_int)
    probe.add_argument("--every", type=positive_int, help="probe every K steps, plain backward otherwise "
                       "(default: the target's default_every, else 1)")
    probe.add_argument("--window", type=positive_int, help="average the last W probed steps (default: all)")
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument("--cosine", action="store_true", help="also record pairwise gradient cosines")
    probe.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="extra option for the target's factory, e.g. init=none for stlic (repeatable)")
    probe.add_argument("--out", help="run directory (default <target.default_out or reports/probe>/"
                       "<model>-<timestamp>)")
    probe.add_argument("-f", "--force", action="store_true", help="replace a probe run already in --out")
    probe.set_defaults(_run=_probe)
    table = sub.add_parser("table", help="print Table I of a saved run")
    table.add_argument("run")
    table.add_argument("--window", type=positive_int)
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
    derive.add_argument("--window", type=positive_int)
    derive.add_argument("--precond", action="store_true", help="balance the optimizer-aware shares: re-probes "
                        "the run's target with new weights until the target is met (or refuses)")
    derive.add_argument("--verify", action="store_true", help="re-probe the run's target with the derived "
                        "weights and print predicted against re-measured shares")
    derive.add_argument("--tolerance", type=float, default=1.0, help="--precond: largest accepted miss of a "
                        "re-measured share, percentage points (default 1)")
    derive.add_argument("--max-iterations", type=positive_int, default=5, help="--precond: re-measurements before "
                        "giving up (default 5)")
    derive.add_argument("-f", "--force", action="store_true", help="overwrite an existing --out file")
    derive.set_defaults(_run=_derive)
    plot = sub.add_parser("plot", help="(re)draw the figures and tables of a saved run (and, when its "
                          "weights change, coefficients and shares against targets over steps)")
    plot.add_argument("run")
    plot.add_argument("--window", type=positive_int)
    plot.set_defaults(_run=_plot)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    # third-party modules (CompressAI) script functions at import; not actionable for CLI users
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
    args = build_parser().parse_args(argv)
    prefix = f"gradbalance {args.command}"
    original_format = warnings.formatwarning  # warnings print as one line (still recordable by callers)
    warnings.formatwarning = lambda message, *_, **__: f"{prefix}: warning: {message}\n"
    try:
        return int(args._run(args) or 0)
    except (OSError, KeyError, ValueError, TypeError) as error:
        if args.debug:
            raise
        text = " ".join(str(error).split()) or type(error).__name__
        print(f"{prefix}: error: {text}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = original_format
