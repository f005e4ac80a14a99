"""Update laws of the :class:`gradbalance.Balancer`: how measured norms and shares become coefficients.

A law sees, at each probed step, the per-unit-coefficient norms n_lg = ||w_l ∂L_l/∂θ_g|| / |c_l| and
the shares s_lg measured under the coefficients in effect, and proposes new coefficients; the
Balancer then limits each change to the factor ``max_change`` and to the bounds
(:func:`gradbalance.balance_solve.limit_change`) and tells the law what was applied. The solve is the
stateless :mod:`gradbalance.balance_solve`; a law keeps only its filters.

``Resolve`` (the law of issue 10): an EMA of the norms, u <- β u + (1 - β) n, and derive's solve of
the shares predicted at u. It lags about β / (1 - β) probes behind a drifting scale, and with
per-batch noise the share at the mean norm is not the mean share, so it settles off target.

``Controller`` (the default): a feed-forward solve at filtered norms, corrected by integral feedback
on the shares measured under the coefficients in effect.

* Level: log n_lg filtered by ``level <- level + α (log n - level)``, with α the steady-state Kalman
  gain of a random-walk level in noise, read off the recent variogram (:func:`level_gain`), never
  below ``1 - ema``. Noise alone gives the slow filter; a ramp, a rotation or a step raises α and
  the level follows within a few probes instead of lagging β / (1 - β) probes.
* Feed-forward: derive's solve over ``window`` frames exp(level + d + e_i), the level times the last
  ``window`` innovations e_i (centred), so the *mean* share over the noise meets the target (derive
  fits the mean of per-step shares, Table I), not the share at the mean norm.
* Feedback: d_lg <- d_lg + k (s_measured - s_predicted) / (s (1 - s)) per probe
  (:func:`gradbalance.balance_solve.share_error`): the integral of the model's error on the shares
  measured under the coefficients in effect, in log-norm units. At steady state the mean measured
  share equals the predicted one, and the solve puts the prediction on the target, so the mean
  measured share is on target: the feedback removes what the prediction misses (filter lag under
  drift, norms that respond to the coefficients, Adam's preconditioner).

Why this and not integral action on log-coefficients (c = c_ff exp(b), b integrating the target
error): measured on the drift suite, that double counts with the feed-forward (both react to the
same error; a noise-free feasible target overshot by the gain at the first update), and with an
unreachable target its error never vanishes, so b winds up. The model-error integral is 0 when the
prediction is right, and it does not depend on the targets at all, so it cannot wind up.

``ema`` (β) and ``gain`` (k) trade speed for smoothness: the feedback's log-coefficient jitter is
about σ √(k / 2), σ the per-probe noise of a log-norm ratio (0.57 for lognormal σ = 0.4 on two losses).
Measured on ``benchmarks/balancer_drift.py`` (``reports/balancer/drift.md``). References: Åström &
Murray, *Feedback Systems* (2008), ch. 10-11 (feed-forward with integral action); Harvey (1989) for
the local-level gain.
"""
from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Mapping
from typing import Optional

import numpy as np
import pandas as pd

from gradbalance.functional.balance_solve import mean_shares, share_error, solve_coefficients

#: the longer lag of the variogram that separates drift from noise (:func:`level_gain`)
LAG = 4


def level_gain(logs: np.ndarray, slowest: float) -> np.ndarray:
    """Per-cell gain α of the level filter ``level <- level + α (log n - level)`` from recent ``logs``
    (probes x losses x groups): the steady-state Kalman gain of a random-walk level observed in noise,

        α = (-λ + sqrt(λ² + 4 λ)) / 2,   λ = q / r,

    with the noise variance r and the drift variance per probe q read off the variogram
    γ_k = mean (log n_t - log n_{t-k})² = 2 r + k q at lags 1 and ``LAG``; α is at least ``slowest``
    (= 1 - ema). Noise alone gives q ≈ 0 and the slowest filter; a drift or a step raises q and the
    filter follows it within a few probes (Harvey, *Forecasting, structural time series models and
    the Kalman filter*, 1989, sec. 4.1: the local level model and its gain)."""
    if len(logs) <= LAG:
        return np.full(logs.shape[1:], max(slowest, 0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells: not measured
        near = np.nanmean(np.square(logs[1:] - logs[:-1]), axis=0)
        far = np.nanmean(np.square(logs[LAG:] - logs[:-LAG]), axis=0)
    # less one standard error of the difference (about near * sqrt(2 / n)): noise alone must not read as drift
    q = np.maximum((far - near - near * np.sqrt(2.0 / (len(logs) - LAG))) / (LAG - 1), 0.0)
    r = np.maximum((near - q) / 2, 1e-12)
    ratio = q / r
    return np.clip((-ratio + np.sqrt(ratio ** 2 + 4 * ratio)) / 2, slowest, 1.0)


class UpdateLaw:
    """What the Balancer asks of a law: ``observe`` each probe, ``propose`` coefficients, ``applied``
    (the coefficients after the Balancer's limits), ``norms`` (smoothed u_lg) and a state dict."""

    name = ""

    def observe(self, unit: np.ndarray, shares: np.ndarray) -> None:
        """``unit``: per-unit-coefficient norms, ``shares``: measured shares (%), losses x groups, NaN = not seen."""
        raise NotImplementedError

    def propose(self, losses, groups, weights, targets, bounds, fixed) -> tuple[dict, pd.DataFrame]:
        """New coefficients and the shares (%) predicted under them."""
        raise NotImplementedError

    def applied(self, weights: Mapping[str, float]) -> None:
        """The coefficients after the Balancer's limits (nothing to do for these laws)."""


class Resolve(UpdateLaw):
    """Clipped re-solve at an EMA of the norms (issue 10's law): ``u <- β u + (1 - β) n``."""

    name = "resolve"

    def __init__(self, shape: tuple[int, int], ema: float = 0.9, **_: object) -> None:
        self.ema = float(ema)
        self.norms = np.full(shape, np.nan)  # u_lg, NaN = not measured

    def observe(self, unit: np.ndarray, shares: np.ndarray) -> None:
        old = self.norms
        self.norms = np.where(np.isnan(old), unit, np.where(np.isnan(unit), old, self.ema * old + (1 - self.ema) * unit))

    def propose(self, losses, groups, weights, targets, bounds, fixed) -> tuple[dict, pd.DataFrame]:
        return solve_coefficients(pd.DataFrame(self.norms, index=list(losses), columns=list(groups)),
                                  weights, targets, bounds, fixed)

    def state_dict(self) -> dict:
        return {"norms": self.norms.tolist()}

    def load_state_dict(self, state: Mapping) -> None:
        self.norms = np.array(state["norms"], dtype=np.float64)


class Controller(UpdateLaw):
    """Feed-forward solve at the filtered norms, corrected by integral feedback on measured shares (module doc)."""

    name = "controller"

    def __init__(self, shape: tuple[int, int], ema: float = 0.9, gain: float = 0.1, window: int = 10,
                 **_: object) -> None:
        self.ema, self.gain, self.window = float(ema), float(gain), int(window)
        self.level = np.full(shape, np.nan)  # log n, NaN = not measured
        self.gains = np.full(shape, np.nan)  # the level filter's gain at the latest probe
        self.correction = np.zeros(shape)  # d: the integral of the model's share error, in log-norm
        self.recent: deque = deque(maxlen=self.window)  # innovations log n - level
        self.logs: deque = deque(maxlen=max(2 * self.window, 2 * LAG))  # log n (the noise and drift estimate)
        self.measured: Optional[np.ndarray] = None  # shares (%) of the latest probe, NaN where it saw nothing

    @property
    def norms(self) -> np.ndarray:
        return np.exp(self.level)

    def observe(self, unit: np.ndarray, shares: np.ndarray) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.where(unit > 0, np.log(unit), np.nan)
        self.logs.append(logs)
        self.recent.append(logs - self.level)
        self.gains = level_gain(np.stack(self.logs), 1 - self.ema)
        first = np.isnan(self.level)
        step = np.nan_to_num(self.gains * (logs - self.level))
        self.level = np.where(first, logs, np.where(np.isnan(logs), self.level, self.level + step))
        self.measured = np.where(np.isfinite(logs), shares, np.nan)

    def frames(self, losses, groups) -> list[pd.DataFrame]:
        """The predicted per-unit norms: exp(level + d + e_i) for the last ``window`` innovations e_i
        (centred, clipped at 3 std), so that their mean share is the predicted mean share."""
        recent = np.stack(list(self.recent)[-self.window:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells: not measured
            recent = np.nan_to_num(recent - np.nanmean(recent, axis=0))
        bound = 3 * recent.std(axis=0)
        return [pd.DataFrame(np.exp(self.level + self.correction + np.clip(e, -bound, bound)),
                             index=list(losses), columns=list(groups)) for e in recent]

    def propose(self, losses, groups, weights, targets, bounds, fixed) -> tuple[dict, pd.DataFrame]:
        if self.measured is not None and self.gain > 0:
            active = np.isfinite(self.measured)
            expected = mean_shares([f.where(active) for f in self.frames(losses, groups)], weights)
            self.correction += self.gain * share_error(expected.to_numpy(), self.measured)
        return solve_coefficients(self.frames(losses, groups), weights, targets, bounds, fixed)

    def state_dict(self) -> dict:
        return {"level": self.level.tolist(), "gains": self.gains.tolist(), "correction": self.correction.tolist(),
                "recent": [r.tolist() for r in self.recent], "logs": [r.tolist() for r in self.logs],
                "measured": None if self.measured is None else self.measured.tolist()}

    def load_state_dict(self, state: Mapping) -> None:
        self.level = np.array(state["level"], dtype=np.float64)
        self.gains = np.array(state["gains"], dtype=np.float64)
        self.correction = np.array(state["correction"], dtype=np.float64)
        self.recent = deque((np.array(r, dtype=np.float64) for r in state["recent"]), maxlen=self.recent.maxlen)
        self.logs = deque((np.array(r, dtype=np.float64) for r in state["logs"]), maxlen=self.logs.maxlen)
        self.measured = None if state["measured"] is None else np.array(state["measured"], dtype=np.float64)


LAWS = {law.name: law for law in (Resolve, Controller)}
