"""`stlic rd RESULTS... --anchors reports/anchors/*.csv --out DIR`: RD curves and BD-rate.

The figures and tables in ``--out`` are redrawn (replaced atomically) on every run: they are
derived from the inputs, never inputs themselves (``--out`` must be a folder, not an input file).
LPIPS of different variants is not compared: the anchor is left out of ``rd_lpips.png`` and its
BD row is NaN with a note (see :mod:`stlic.evaluation.rd`).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="`stlic eval` summary.json files or their folders")
    parser.add_argument("--anchors", nargs="*", default=[], help="anchor CSVs (bpp,psnr[,lpips,...])")
    parser.add_argument("--out", required=True, help="output folder: rd_psnr.png, rd_lpips.png, bd.csv, bd.md")
    parser.add_argument("--output", choices=("refined", "decoder"), default="refined",
                        help="which reconstruction of the eval summaries to plot (default: refined)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def _bd_markdown(rows) -> str:
    lines = ["| Method | Anchor | Metric | BD-rate (%) | BD-quality | Note |", "|---|---|---|---|---|---|"]
    for r in rows:
        rate = "-" if math.isnan(r.bd_rate) else f"{r.bd_rate:+.2f}"
        quality = "-" if math.isnan(r.bd_quality) else f"{r.bd_quality:+.4f}"
        lines.append(f"| {r.method} | {r.anchor} | {r.metric} | {rate} | {quality} | {r.note} |")
    return "\n".join(lines) + "\n"


def _lpips_plot_inputs(curves, anchors):
    """Curves and anchors that may share the LPIPS axis (one variant), warning about the rest."""
    import warnings

    from stlic.evaluation.rd import lpips_mismatch

    curves = [c for c in curves if c.has("lpips")]
    variants = {c.lpips_variant for c in curves}
    if len(variants) > 1:
        warnings.warn(f"rd_lpips.png not drawn: the results use different LPIPS variants {sorted(map(str, variants))}")
        return [], []
    kept = []
    for anchor in (a for a in anchors if a.has("lpips")):
        reason = lpips_mismatch(curves[0], anchor) if curves else None
        if reason:
            warnings.warn(f"anchor {anchor.method!r} left out of rd_lpips.png: {reason}")
        else:
            kept.append(anchor)
    return curves, kept


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from stlic.evaluation.rd import compare_to_anchors, load_anchor_csv, load_eval_summaries
    from stlic.evaluation.rd_plot import plot_rd_curve
    from stlic.output_files import atomic_write_text, check_input_file, check_writable_folder, same_file

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a folder")
    check_writable_folder(out, "--out")
    curves = load_eval_summaries(args.results, output=args.output)
    anchors = [load_anchor_csv(check_input_file(path, "anchor file")) for path in args.anchors]
    out.mkdir(parents=True, exist_ok=True)
    inputs = [*args.anchors, *args.results]
    clash = [name for name in ("rd_psnr.png", "rd_lpips.png", "bd.csv", "bd.md")
             if any(same_file(out / name, source) for source in inputs)]
    if clash:
        raise ValueError(f"--out {str(out)!r}: {clash[0]} is one of the inputs; choose another folder")
    written = []
    for metric, (drawn, drawn_anchors) in (("psnr", (curves, anchors)), ("lpips", _lpips_plot_inputs(curves, anchors))):
        variant = drawn[0].lpips_variant if metric == "lpips" and drawn else None
        title = f"{args.output} output" + (f", {variant}" if variant else "")
        path = plot_rd_curve(drawn, drawn_anchors, metric, out / f"rd_{metric}.png", title=title)
        if path is not None:
            written.append(path)
    rows = compare_to_anchors(curves, anchors)
    frame = pd.DataFrame(rows, columns=rows[0]._fields if rows else None)
    atomic_write_text(out / "bd.csv", frame.to_csv(index=False))
    atomic_write_text(out / "bd.md", _bd_markdown(rows))
    written += [out / "bd.csv", out / "bd.md"]
    print(_bd_markdown(rows), end="")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
