"""Results in the layout of ST-LIC's Table III: rows = method @ bitrate, columns bpp, PSNR,
MS-SSIM, LPIPS, FID (arrows give the better direction). Missing values print as "-"."""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence


class TableRow(NamedTuple):
    method: str
    bpp: float
    psnr: float | None = None
    ms_ssim: float | None = None
    lpips: float | None = None
    fid: float | None = None


COLUMNS = (("bpp", "bpp", 4), ("psnr", "PSNR (dB) ↑", 2), ("ms_ssim", "MS-SSIM ↑", 4), ("lpips", "LPIPS ↓", 4), ("fid", "FID ↓", 2))


def _cell(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def table3_markdown(rows: Sequence[TableRow], lpips_name: str = "LPIPS", fid_name: str = "FID") -> str:
    """Markdown table; ``lpips_name``/``fid_name`` label the variants (e.g. "ST-LPIPS(vgg)", "FID/256")."""
    headers = ["Method"] + [
        label.replace("LPIPS", lpips_name).replace("FID", fid_name) for _, label, _ in COLUMNS
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in sorted(rows, key=lambda r: (r.method, r.bpp)):
        cells = [row.method] + [_cell(getattr(row, key), digits) for key, _, digits in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
