"""`stlic rd RESULTS... --anchors reports/anchors/*.csv --out DIR`: RD curves and BD-rate."""
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


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from stlic.evaluation.rd import compare_to_anchors, load_anchor_csv, load_eval_summaries
    from stlic.evaluation.rd_plot import plot_rd_curve

    curves = load_eval_summaries(args.results, output=args.output)
    anchors = [load_anchor_csv(path) for path in args.anchors]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for metric in ("psnr", "lpips"):
        path = plot_rd_curve(curves, anchors, metric, out / f"rd_{metric}.png", title=f"{args.output} output")
        if path is not None:
            written.append(path)
    rows = compare_to_anchors(curves, anchors)
    pd.DataFrame(rows, columns=rows[0]._fields if rows else None).to_csv(out / "bd.csv", index=False)
    (out / "bd.md").write_text(_bd_markdown(rows))
    written += [out / "bd.csv", out / "bd.md"]
    print(_bd_markdown(rows), end="")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
