"""Rate-distortion curves and Bjøntegaard deltas (Bjøntegaard 2001, VCEG-M33).

A curve is a method's (bpp, quality) points over rate levels. Against an anchor curve:

    BD-rate = mean over the common quality range of (R_test(q) / R_anchor(q)) - 1   (in %)
    BD-PSNR = mean over the common log-rate range of (PSNR_test(r) - PSNR_anchor(r)) (in dB)

with log-rate interpolated piecewise-cubically (``bjontegaard`` package, ``pchip`` by default).
Negative BD-rate = fewer bits for the same quality. For LPIPS (lower is better) the quality axis
is ``-LPIPS``, so the sign convention is the same.

Inputs: ``stlic eval`` summaries (``summary.json`` or the folder holding it; points of the same
``method`` form one curve) and anchor CSVs (columns ``bpp,psnr`` and optionally ``lpips``,
``ms_ssim``, ``fid``, ``method``; ``#`` lines are comments). An anchor with an ``lpips`` column
must name its variant in an ``lpips_variant`` column (``LPIPS(alex)``, ``ST-LPIPS(vgg)``, ... as
``stlic eval`` labels its own); LPIPS curves of different variants are never compared (their
BD row is NaN with a note, and a warning is raised), since the scales differ.
"""
from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from stlic.output_files import read_input_bytes

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
    lpips_variant: str | None = None  # e.g. "LPIPS(alex)", "ST-LPIPS(vgg)"; None: unknown

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
    frame = pd.read_csv(io.BytesIO(read_input_bytes(path, "RD file")), comment="#")
    frame.columns = [c.strip().lower() for c in frame.columns]
    missing = {"bpp", "psnr"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; found {list(frame.columns)}")
    method = str(frame["method"].iloc[0]) if "method" in frame.columns else path.stem
    try:
        metrics = {m: frame[m].to_numpy(dtype=float) for m in ("bpp", *METRICS) if m in frame.columns}
    except ValueError as error:
        raise ValueError(f"{path}: a value is not a number ({error})") from None
    variant = None
    if "lpips" in metrics:
        variants = set(frame["lpips_variant"].dropna().astype(str).str.strip()) if "lpips_variant" in frame else set()
        if len(variants) != 1:
            raise ValueError(f"{path}: an lpips column needs one lpips_variant naming the LPIPS variant "
                             f"(e.g. LPIPS(alex), ST-LPIPS(vgg)); found {sorted(variants) or 'none'}")
        (variant,) = variants
    return RDCurve(method, metrics.pop("bpp"), metrics, source=str(path), lpips_variant=variant)


def lpips_mismatch(test: RDCurve, anchor: RDCurve) -> str | None:
    """Why the LPIPS values of two curves cannot be compared (None when they can)."""
    if test.lpips_variant is None or anchor.lpips_variant is None:
        unknown = test.method if test.lpips_variant is None else anchor.method
        return f"LPIPS variant of {unknown!r} unknown: not compared"
    if test.lpips_variant != anchor.lpips_variant:
        return f"LPIPS variants differ ({test.lpips_variant} vs {anchor.lpips_variant}): not compared"
    return None


def _summary_path(path: Path) -> Path:
    candidate = path / "summary.json" if path.is_dir() else path
    if not candidate.is_file():
        raise FileNotFoundError(f"no eval summary at {candidate} (run `stlic eval --out DIR` first)")
    return candidate


def load_eval_summaries(paths: list[str | Path], output: str = "refined") -> list[RDCurve]:
    """Group ``stlic eval`` summaries into one curve per method, using ``output`` (refined|decoder)."""
    points: dict[str, list[tuple[float, dict[str, float]]]] = {}
    variants: dict[str, set] = {}
    for path in paths:
        summary_file = _summary_path(Path(path))
        try:
            summary = json.loads(read_input_bytes(summary_file, "eval summary"))
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"{summary_file} is not an eval summary (invalid JSON: {error})") from None
        if not isinstance(summary, dict) or not {"method", "bpp", "outputs"} <= set(summary):
            raise ValueError(f"{summary_file} is not an eval summary (needs 'method', 'bpp' and 'outputs')")
        outputs = summary.get("outputs", {})
        if output not in outputs:
            raise ValueError(f"{summary_file}: no {output!r} output (has {sorted(outputs)})")
        values = {m: _as_float(outputs[output].get(m)) for m in METRICS}
        points.setdefault(summary["method"], []).append((float(summary["bpp"]), values))
        variants.setdefault(summary["method"], set()).add(summary.get("lpips_name"))
    curves = []
    for method, items in points.items():
        if len(variants[method]) > 1:
            raise ValueError(f"method {method!r}: its summaries use different LPIPS variants "
                             f"{sorted(map(str, variants[method]))}")
        metrics = {m: np.array([v[m] for _, v in items]) for m in METRICS}
        (variant,) = variants[method]
        curves.append(RDCurve(method, np.array([b for b, _ in items]), metrics, source=output, lpips_variant=variant))
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
    of the ``bjontegaard`` package (e.g. insufficient curve overlap) go into ``note`` too. LPIPS
    of different (or unknown) variants is not compared, with a warning (:func:`lpips_mismatch`).
    """
    rows = []
    for test in curves:
        for anchor in anchors:
            for metric in metrics:
                if not (test.has(metric) and anchor.has(metric)):
                    continue
                mismatch = lpips_mismatch(test, anchor) if metric == "lpips" else None
                if mismatch:
                    warnings.warn(f"{test.method} vs {anchor.method}: {mismatch}", stacklevel=2)
                    rows.append(BDResult(test.method, anchor.method, metric, math.nan, math.nan, mismatch))
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
