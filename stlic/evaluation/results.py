"""Typed results of ``stlic eval`` and their files: per-image CSV, summary JSON, Table III markdown.

Both reconstructions are kept and labelled: ``decoder`` (LALIC output x_hat, what L1/L2 train)
and ``refined`` (UNet refiner output, what the paper reports).
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from stlic.evaluation.table import TableRow, table3_markdown

OUTPUTS = ("refined", "decoder")


@dataclass
class ImageResult:
    """Metrics of one image; PSNR is per image, MS-SSIM NaN when the image is under 161 px."""

    name: str
    height: int
    width: int
    level: float
    bytes: int
    bpp: float  # 8 * bytes / (H * W), container header included
    psnr_decoder: float
    psnr_refined: float
    ms_ssim_decoder: float
    ms_ssim_refined: float
    lpips_decoder: float
    lpips_refined: float


@dataclass
class OutputSummary:
    psnr: float  # mean of per-image PSNR (papers)
    psnr_pooled: float  # PSNR of the pooled MSE (CLIC leaderboard)
    ms_ssim: float | None
    lpips: float
    fid: float | None = None  # FID/256 over patches, None when disabled
    fid_patches: int | None = None


@dataclass
class EvalSummary:
    method: str
    checkpoint: str
    data: str
    num_images: int
    bpp: float  # mean over images
    rate_level: float | None
    target_bpp: float | None
    lpips_name: str
    fid_name: str
    outputs: dict[str, OutputSummary]
    notes: list[str] = field(default_factory=list)
    num_skipped: int = 0  # images of the folder not evaluated (unreadable, too large, could not be coded)

    def table_rows(self) -> list[TableRow]:
        rows = []
        for output in OUTPUTS:
            s = self.outputs[output]
            rows.append(TableRow(f"{self.method} {output}", self.bpp, s.psnr, s.ms_ssim, s.lpips, s.fid))
        return rows

    def table_markdown(self) -> str:
        return table3_markdown(self.table_rows(), self.lpips_name, self.fid_name)


def _json_safe(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_per_image(out_dir: Path, images: list[ImageResult]) -> Path:
    """Write ``out_dir/per_image.csv`` atomically (also after each image: the partial results)."""
    from stlic.output_files import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=[f.name for f in fields(ImageResult)])
    writer.writeheader()
    writer.writerows(asdict(result) for result in images)
    return atomic_write_text(out_dir / "per_image.csv", table.getvalue())


def write_results(out_dir: Path, summary: EvalSummary, images: list[ImageResult]) -> dict[str, Path]:
    """Write ``per_image.csv``, ``summary.json`` and ``table3.md`` into ``out_dir``."""
    from stlic.output_files import atomic_write_text

    paths = {"per_image": write_per_image(out_dir, images), "summary": out_dir / "summary.json",
             "table": out_dir / "table3.md"}
    atomic_write_text(paths["summary"], json.dumps(_json_safe(asdict(summary)), indent=2) + "\n")
    notes = "".join(f"\n- {note}" for note in summary.notes)
    header = (
        f"Evaluation of `{summary.checkpoint}` on `{summary.data}` ({summary.num_images} images"
        f"{f', {summary.num_skipped} skipped' if summary.num_skipped else ''}). "
        f"PSNR: mean of per-image PSNR; bpp: file size.{notes}\n\n"
    )
    atomic_write_text(paths["table"], header + summary.table_markdown())
    return paths
