"""RD-curve figures: bpp vs PSNR and bpp vs LPIPS, one line per method (anchors dashed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from stlic.evaluation.figures import save_figure  # noqa: E402
from stlic.evaluation.rd import RDCurve  # noqa: E402

AXIS_LABELS = {"psnr": "PSNR (dB) ↑", "lpips": "LPIPS ↓", "ms_ssim": "MS-SSIM ↑", "fid": "FID/256 ↓"}


def plot_rd_curve(curves: list[RDCurve], anchors: list[RDCurve], metric: str, path: str | Path, title: str = "") -> Path | None:
    """Save bpp vs ``metric`` for every curve having it; returns the path, or None if none has it."""
    drawable = [(c, False) for c in curves if c.has(metric)] + [(a, True) for a in anchors if a.has(metric)]
    if not drawable:
        return None
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    palette = sns.color_palette("tab10", len(drawable))
    for (curve, is_anchor), colour in zip(drawable, palette):
        ax.plot(
            curve.bpp, curve.metrics[metric], marker="o", ms=4, color=colour,
            linestyle="--" if is_anchor else "-", label=curve.method + (" (anchor)" if is_anchor else ""),
        )
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(AXIS_LABELS.get(metric, metric))
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
