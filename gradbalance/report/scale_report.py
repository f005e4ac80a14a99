"""Where the common scale of derived coefficients went: the operating point a derived config keeps.

Gradient shares fix only the ratios of the loss weights (:mod:`gradbalance.functional.derive`): multiplying every
weight by one factor leaves every share unchanged. The overall scale comes from the held coefficients
(``fixed``) or, without any, from the anchor loss that keeps its weight. A coefficient given as a range
(e.g. a variable-rate model's lambda range ``[lo, hi]``: the model's operating point) therefore moves
whenever the scale is set by another coefficient. :func:`describe_scale` says which ranges are kept and
which moved, by what factor and because of which held coefficients.

A range that is kept still gives another operating point when the weights it trades against move relative
to it: a rate range holds the bitrate only while the distortion weights keep their ratio to it (the
optimum depends on ``lambda / w_distortion``, not on ``lambda`` alone). So the report also gives, for a kept
or held range, the multipliers of the other coefficients divided by the range's own
(:attr:`ScaleReport.tradeoff`, listed when one moves by more than :data:`TRADEOFF_TOLERANCE`): when the
target shares force that ratio elsewhere, no choice of ``--fixed`` keeps the operating point, and the
header says so instead of "kept".

Example:
    >>> report = describe_scale({"rate": (0.1, 1.0), "gan": 1.0}, {"rate": 3.0, "gan": 1.0}, fixed={"gan": 1.0})
    >>> report.header()
    'Operating point moved: rate [0.1, 1] -> [0.3, 3] (x3), the scale set by held gan.'
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional, Union

Coefficient = Union[float, tuple[float, float]]

#: relative change of a weight against a kept range above which the trade-off counts as moved (10 %)
TRADEOFF_TOLERANCE = 0.1


def _range(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


@dataclass(frozen=True)
class ScaleReport:
    """Range coefficients kept / moved by the derived multipliers, and what set the scale."""

    kept: dict[str, tuple[float, ...]]
    held_ranges: dict[str, tuple[tuple[float, ...], tuple[float, ...]]]  # set by --fixed: name -> (base, held)
    moved: dict[str, tuple[tuple[float, ...], tuple[float, ...], float]]  # name -> (old, new, multiplier)
    scale_from: tuple[str, ...]  # the held coefficients, else the anchors, that set the common scale
    held: bool  # True when scale_from are held (--fixed) coefficients
    # kept or held range -> {other coefficient: its multiplier / the range's}, when one moved > TRADEOFF_TOLERANCE
    tradeoff: dict[str, dict[str, float]] = field(default_factory=dict)

    def _tradeoff_text(self) -> str:
        return "; ".join(f"against {name}: " + ", ".join(f"{other} x{m:.3g}" for other, m in ratios.items())
                         for name, ratios in self.tradeoff.items())

    def header(self) -> str:
        """One sentence for the derived config's header ('' without range coefficients)."""
        kept = "; ".join([f"{name} {_range(values)}" for name, values in self.kept.items()]
                         + [f"{name} {_range(new)} (held; the base had {_range(old)})" if old != new else
                            f"{name} {_range(new)} (held)" for name, (old, new) in self.held_ranges.items()])
        if not self.moved and self.tradeoff:
            return (f"Range kept: {kept}; but the weights it trades against moved relative to it "
                    f"({self._tradeoff_text()}), so the operating point each range value gives moves too.")
        if not self.moved:
            return f"Operating point kept: {kept}." if kept else ""
        moved = "; ".join(f"{name} {_range(old)} -> {_range(new)} (x{m:.4g})" for name, (old, new, m)
                          in self.moved.items())
        why = f"held {', '.join(self.scale_from)}" if self.held else f"anchor {', '.join(self.scale_from)}"
        return f"Operating point moved: {moved}, the scale set by {why}." + (f" Kept: {kept}." if kept else "")

    def note(self) -> Optional[str]:
        """A warning when held coefficients moved a range, naming how to keep it, or when the target moved
        the trade-off of a kept range (None otherwise)."""
        if not self.moved and self.tradeoff:
            return (f"the target shares set the ratios of the weights, and they moved against the kept range(s) "
                    f"({self._tradeoff_text()}): the operating point moves although the range is kept (a rate "
                    f"range gives other bitrates); compare results at matched operating points, e.g. matched bpp")
        if not self.moved:
            return None
        hold = " ".join(f"{name}={','.join(f'{v:g}' for v in old)}" for name, (old, _, _) in self.moved.items())
        source = f"the held coefficient(s) {', '.join(self.scale_from)}" if self.held else \
            f"the anchor {', '.join(self.scale_from)}"
        return (f"{source} set the common scale of the weights, so the range coefficient(s) "
                f"{', '.join(self.moved)} moved ({self.header()[len('Operating point moved: '):]}); "
                f"to keep the operating point hold them too: --fixed {hold}")


def describe_scale(current: Mapping[str, Coefficient], multipliers: Mapping[str, float], *,
                   fixed: Optional[Mapping[str, Coefficient]] = None,
                   anchors: Optional[Mapping[str, tuple[str, ...]]] = None, tolerance: float = 1e-9) -> ScaleReport:
    """Which range coefficients of ``current`` the ``multipliers`` keep (``|m - 1| <= tolerance``), hold
    (named in ``fixed``: the user chose them) or move."""
    kept, held_ranges, moved = {}, {}, {}
    fixed = dict(fixed or {})
    for name, value in current.items():
        if not isinstance(value, (tuple, list)) or name not in multipliers:
            continue
        m = float(multipliers[name])
        old = tuple(float(v) for v in value)
        if name in fixed:
            held_ranges[name] = (old, tuple(float(v) for v in fixed[name]))
        elif abs(m - 1.0) <= tolerance:
            kept[name] = old
        else:
            moved[name] = (old, tuple(v * m for v in old), m)
    held = tuple(fixed)
    tradeoff = {}
    for name in [*kept, *held_ranges]:
        base = float(multipliers[name])  # a held range's: the held value over the base's (derive's ratio)
        ratios = {other: float(m) / base for other, m in multipliers.items()
                  if other != name and other not in current and base > 0}
        if any(abs(r - 1.0) > TRADEOFF_TOLERANCE for r in ratios.values()):
            tradeoff[name] = ratios
    return ScaleReport(kept, held_ranges, moved, held or tuple(anchors or ()), bool(held), tradeoff)
