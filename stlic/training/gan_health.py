"""Is the discriminator engaged, dormant, or has it won? A verdict from a run's logged D statistics.

L_D = L_G = ln 2 is what the paper's Fig. 2 reads as equilibrium, but a discriminator that answers
1/2 to everything (dormant: it never learnt to tell real from refined) prints the same numbers.
What tells them apart is how differently D answers the real image and the refined one of the same
patch. Per D step the solver logs (:func:`stlic.losses.adversarial.discriminator_health`):

    gap      = mean_patches |sigmoid(l_real) - sigmoid(l_fake)|          (d_gap)
    accuracy = 1/2 mean[l_real > 0] + 1/2 mean[l_fake < 0]               (d_accuracy)
    logit gap = mean l_real - mean l_fake                                (d_real_logit - d_fake_logit)

:func:`classify` reads a window of records with these rules, checked in order (medians, so that a
few noisy steps do not decide):

- ``diverged``: a non-finite L_D, L_G or D statistic;
- ``collapsed``: D wins: median accuracy >= :data:`COLLAPSE_ACCURACY` (0.95) and median
  L_D <= :data:`COLLAPSE_DISC_LOSS` (0.15, against ln 2 = 0.693): the generator's loss
  saturates (Goodfellow et al. 2014) and the refiner gets no useful signal;
- ``dormant``: median gap < :data:`GAP_MIN` (0.01: D's answers to x and x_hat of one patch differ
  by under one percentage point in the typical step), or the gap is there but D does not separate
  the sides: accuracy departs from 1/2 by >= :data:`DEPARTURE` (0.1) in under
  :data:`DEPARTURE_SHARE` (10 %) of the steps and the median |logit gap| < :data:`LOGIT_GAP_MIN` (0.1);
- ``engaged``: otherwise: D's answers differ between real and refined, and it classifies them
  better than chance at times. An equilibrium in the GAN sense is an engaged D held near
  L_D = ln 2 by a generator that keeps up; a dormant D is near ln 2 because it learnt nothing.

The thresholds are judgement calls: the 1,000-step run of 2026-12-01 that never engaged had a gap of
3e-5 to 3e-4, thirty times below GAP_MIN; a discriminator that separates at all moves D's answers by
several percentage points. Logs written before these statistics existed have only the mean D(x) and
D(x_hat); for them the gap is ``|mean D(x) - mean D(x_hat)|``, a lower bound of the paired gap
(``gap_source = "unpaired"``), so ``dormant`` is then less certain.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

GAP_MIN = 0.01
DEPARTURE = 0.1
DEPARTURE_SHARE = 0.1
LOGIT_GAP_MIN = 0.1
COLLAPSE_ACCURACY = 0.95
COLLAPSE_DISC_LOSS = 0.15
VERDICTS = ("engaged", "dormant", "collapsed", "diverged")


@dataclass(frozen=True)
class GanHealth:
    """The verdict on one window of discriminator steps and the numbers it used."""

    verdict: str  # one of VERDICTS
    first_step: int
    last_step: int
    steps: int  # logged D steps in the window
    median_gap: float
    departure_share: float  # share of steps with |accuracy - 1/2| >= DEPARTURE (NaN: not logged)
    median_accuracy: float
    median_logit_gap: float
    median_disc_loss: float
    median_gen_loss: float
    gap_source: str  # "paired" (d_gap) or "unpaired" (|d_real - d_fake|, older logs)
    reason: str

    def summary(self) -> str:
        return (f"{self.verdict} (steps {self.first_step}-{self.last_step}, {self.steps} logged D steps): "
                f"{self.reason}; median gap {self.median_gap:.3g} ({self.gap_source}), accuracy median "
                f"{self.median_accuracy:.3g}, off 1/2 by >= {DEPARTURE:g} in {100 * self.departure_share:.0f}% "
                f"of steps, median logit gap {self.median_logit_gap:.3g}, median L_D {self.median_disc_loss:.4g}, "
                f"L_G {self.median_gen_loss:.4g}")


def _column(records: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in records], dtype=np.float64)


def discriminator_records(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The records of steps with a discriminator update (``disc_loss`` logged)."""
    return [r for r in records if r.get("disc_loss") is not None]


def classify(records: Sequence[Mapping[str, Any]]) -> GanHealth:
    """Verdict on ``records`` (train_log.jsonl rows, all with a D step); rules in the module docstring."""
    if not records:
        raise ValueError("no discriminator step to classify (every record lacks disc_loss)")
    disc, gen = _column(records, "disc_loss"), _column(records, "gen_loss")
    paired = all(r.get("d_gap") is not None for r in records)
    gap = _column(records, "d_gap") if paired else np.abs(_column(records, "d_real") - _column(records, "d_fake"))
    accuracy = _column(records, "d_accuracy") if paired else np.full(len(records), np.nan)
    logit_gap = _column(records, "d_real_logit") - _column(records, "d_fake_logit") if paired else accuracy
    finite = [disc, gen, gap] + ([accuracy, logit_gap] if paired else [])
    departure = float(np.mean(np.abs(accuracy - 0.5) >= DEPARTURE)) if paired else math.nan
    numbers = dict(
        first_step=int(records[0]["step"]), last_step=int(records[-1]["step"]), steps=len(records),
        departure_share=departure, gap_source="paired" if paired else "unpaired",
        **{f"median_{name}": float(np.median(values)) if np.isfinite(values).all() else math.nan
           for name, values in (("gap", gap), ("accuracy", accuracy), ("logit_gap", logit_gap),
                                ("disc_loss", disc), ("gen_loss", gen))})
    if not all(np.isfinite(values).all() for values in finite):
        return GanHealth("diverged", reason="a non-finite L_D, L_G or D statistic", **numbers)
    if paired and numbers["median_accuracy"] >= COLLAPSE_ACCURACY and numbers["median_disc_loss"] <= COLLAPSE_DISC_LOSS:
        return GanHealth("collapsed", reason=f"D wins: median accuracy >= {COLLAPSE_ACCURACY:g} and median "
                                             f"L_D <= {COLLAPSE_DISC_LOSS:g}", **numbers)
    if numbers["median_gap"] < GAP_MIN:
        return GanHealth("dormant", reason=f"D answers x and x_hat alike: median gap < {GAP_MIN:g}", **numbers)
    if paired and departure < DEPARTURE_SHARE and abs(numbers["median_logit_gap"]) < LOGIT_GAP_MIN:
        return GanHealth("dormant", reason=f"D's answers differ but do not separate real from refined "
                                           f"(accuracy off 1/2 in < {100 * DEPARTURE_SHARE:.0f}% of steps, "
                                           f"|logit gap| < {LOGIT_GAP_MIN:g})", **numbers)
    return GanHealth("engaged", reason=f"median gap >= {GAP_MIN:g} and D separates real from refined", **numbers)


def run_health(records: Sequence[Mapping[str, Any]], parts: int = 4) -> tuple[GanHealth, list[GanHealth]]:
    """``(verdict on the second half of the D steps, verdicts on each of ``parts`` equal windows)``.

    The run's verdict is its second half's: a discriminator that engages late, or goes dormant
    or wins late, is judged by where the run ended up.
    """
    steps = discriminator_records(records)
    if not steps:
        raise ValueError("the log has no step with a discriminator update")
    windows = [list(chunk) for chunk in np.array_split(np.arange(len(steps)), min(parts, len(steps)))]
    return classify(steps[len(steps) // 2:]), [classify([steps[i] for i in window]) for window in windows]
