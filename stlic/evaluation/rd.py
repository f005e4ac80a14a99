"""Rate-distortion curves and Bjøntegaard deltas (Bjøntegaard 2001, VCEG-M33).

A curve is a method's (bpp, quality) points over rate levels. Against an anchor curve:

    BD-rate = mean over the common quality range of (R_test(q) / R_anchor(q)) - 1   (in %)
    BD-PSNR = mean over the common log-rate range of (PSNR_test(r) - PSNR_anchor(r)) (in dB)

with log-rate interpolated piecewise-cubically (``bjontegaard`` package, ``pchip`` by default).
Negative BD-rate = fewer bits for the same quality. For LPIPS (lower is better) the quality axis
is ``-LPIPS``, so the sign convention is the same.

Inputs: ``stlic eval`` summaries (``summary.json`` or the folder holding it; points of the same
``method`` form one curve) and anchor CSVs (columns ``bpp,psnr`` and optionally ``lpips``,
``ms_ssim``, ``fid``, ``method``; ``#`` lines are comments).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

METRICS = ("psnr", "ms_ssim", "lpips", "fid")
LOWER_IS_BETTER = {"lpips", "fid"}
MIN_BD_POINTS = 3


@dataclass
class RDCurve:
    """One method's RD points, sorted by rate; missing metrics are NaN."""

    method: str
    bpp: np.ndarray
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        order = np.argsort(self.bpp)
        self.bpp = np.asarray(self.bpp, dtype=np.float64)[order]
        self.metrics = {k: np.asarray(v, dtype=np.float64)[order] for k, v in self.metrics.items()}

    def has(self, metric: str) -> bool:
        values = self.metrics.get(metric)
        return values is not None and len(values) > 0 and bool(np.isfinite(values).all())


class BDResult(NamedTuple):
    """One row of the BD table; NaN values come with a ``note`` saying why."""

    method: str
    anchor: str
    metric: str
    bd_rate: float  # percent; negative = fewer bits at equal quality
    bd_quality: float  # dB for PSNR, metric units otherwise (natural sign)
    note: str = ""


def load_anchor_csv(path: str | Path) -> RDCurve:
    """An anchor/result CSV (``bpp,psnr[,lpips,ms_ssim,fid,method]``) as one curve."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RD file not found: {path}")
    frame = pd.read_csv(path, comment="#")
    frame.columns = [c.strip().lower() for c in frame.columns]
    missing = {"bpp", "psnr"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; found {list(frame.columns)}")
    method = str(frame["method"].iloc[0]) if "method" in frame.columns else path.stem
    metrics = {m: frame[m].to_numpy(dtype=float) for m in METRICS if m in frame.columns}
    return RDCurve(method, frame["bpp"].to_numpy(dtype=float), metrics, source=str(path))


def _summary_path(path: Path) -> Path:
    candidate = path / "summary.json" if path.is_dir() else path
    if not candidate.is_file():
        raise FileNotFoundError(f"no eval summary at {candidate} (run `stlic eval --out DIR` first)")
    return candidate


def load_eval_summaries(paths: list[str | Path], output: str = "refined") -> list[RDCurve]:
    """Group ``stlic eval`` summaries into one curve per method, using ``output`` (refined|decoder)."""
    points: dict[str, list[tuple[float, dict[str, float]]]] = {}
    for path in paths:
        summary_file = _summary_path(Path(path))
        summary = json.loads(summary_file.read_text())
        outputs = summary.get("outputs", {})
        if output not in outputs:
            raise ValueError(f"{summary_file}: no {output!r} output (has {sorted(outputs)})")
        values = {m: _as_float(outputs[output].get(m)) for m in METRICS}
        points.setdefault(summary["method"], []).append((float(summary["bpp"]), values))
    curves = []
    for method, items in points.items():
        metrics = {m: np.array([v[m] for _, v in items]) for m in METRICS}
        curves.append(RDCurve(method, np.array([b for b, _ in items]), metrics, source=output))
    return curves


def _as_float(value: object) -> float:
    return float("nan") if value is None else float(value)  # type: ignore[arg-type]


def _quality(curve: RDCurve, metric: str) -> np.ndarray:
    values = curve.metrics[metric]
    return -values if metric in LOWER_IS_BETTER else values


def bd_metrics(anchor: RDCurve, test: RDCurve, metric: str = "psnr", method: str = "pchip") -> tuple[float, float]:
    """(BD-rate in %, BD-quality) of ``test`` against ``anchor`` on ``metric``.

    BD-quality is in the metric's units with its natural sign (for LPIPS: negative = better).
    Raises ValueError when a curve lacks the metric or has fewer than :data:`MIN_BD_POINTS` points.
    The ``bjontegaard`` package warns (UserWarning) when the curves overlap too little.
    """
    import bjontegaard

    for curve in (anchor, test):
        if not curve.has(metric):
            raise ValueError(f"curve {curve.method!r} has no {metric} values")
        if len(curve.bpp) < MIN_BD_POINTS:
            raise ValueError(f"curve {curve.method!r} has {len(curve.bpp)} points; BD needs at least {MIN_BD_POINTS}")
    qa, qt = _quality(anchor, metric), _quality(test, metric)
    kwargs = {"method": method, "require_matching_points": False}
    rate = bjontegaard.bd_rate(anchor.bpp, qa, test.bpp, qt, **kwargs)
    quality = bjontegaard.bd_psnr(anchor.bpp, qa, test.bpp, qt, **kwargs)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    return float(rate), sign * float(quality)


def compare_to_anchors(
    curves: list[RDCurve], anchors: list[RDCurve], metrics: tuple[str, ...] = ("psnr", "lpips")
) -> list[BDResult]:
    """BD-rate / BD-quality of every curve against every anchor on each shared metric.

    Pairs that cannot be compared get NaN and a ``note`` saying why (instead of failing); warnings
    of the ``bjontegaard`` package (e.g. insufficient curve overlap) go into ``note`` too.
    """
    rows = []
    for test in curves:
        for anchor in anchors:
            for metric in metrics:
                if not (test.has(metric) and anchor.has(metric)):
                    continue
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        rate, quality = bd_metrics(anchor, test, metric)
                    note = "; ".join(sorted({str(w.message) for w in caught}))
                    rows.append(BDResult(test.method, anchor.method, metric, rate, quality, note))
                except ValueError as error:
                    rows.append(BDResult(test.method, anchor.method, metric, math.nan, math.nan, str(error)))
    return rows
