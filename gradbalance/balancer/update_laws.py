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

* Loss-value channel (``loss_values=True``, the default): every step's weighted loss value per unit
  coefficient v_l = |f_l L_l| is free (no backward), and a scale change of a loss moves v and n
  together. Per step, log v is filtered (variogram Kalman gain, at least the probe filter's rate) and a
  two-sided CUSUM on it (Page 1954) restarts the level at a jump and asks the Balancer for an update
  before the next probe. Per probe, two elasticities are fitted over the recent probes: β_batch, of
  log n on the probed batch's deviation from its interval's mean log v (it removes that batch's
  noise from the measurement and from the feedback's expected share), and β, of the denoised log n's
  change on the interval mean's change, precision-weighted towards β_batch (prior std
  ``BETA_PRIOR_STD``) where the level barely moves. The level filter then runs on
  z = log n - β_batch (v_k - v̄_k) - β v̄_k and the predicted level is z + β v_now. A loss whose
  gradient norm does not follow its value (an L1 rate term, whose value falls as its coefficient
  rises) fits β near 0 and is left to the probes, so the value cannot feed back on itself.
  Measured on the drift suite (reports/balancer/drift.md), against the law without it (the same
  suite, ``loss_values=False``): worst mean miss 2.96 against 3.10 pp, worst 100-step window 7.69
  against 8.91 pp, worst share jitter 5.52 against 7.72 pp; the issue's goals (2 / 3 / 2 pp) are
  still not met.

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

#: the longer lag of the variogram that separates drift from noise (:func:`level_gain`), in probes
LAG = 4
#: the per-step loss values: steps of memory of their level filter, and its variogram's longer lag (steps)
VALUE_MEMORY, VALUE_LAG = 100, 10
#: the loss values' CUSUM: slack and threshold, in standard deviations of one step's log value
CUSUM_SLACK, CUSUM_THRESHOLD = 0.75, 6.0
#: prior standard deviation of the level elasticity about the per-batch one (:meth:`Controller._regress`)
BETA_PRIOR_STD = 0.3


def level_gain(logs: np.ndarray, slowest: float, lag: int = LAG) -> np.ndarray:
    """Per-cell gain α of the level filter ``level <- level + α (log n - level)`` from recent ``logs``
    (probes x losses x groups): the steady-state Kalman gain of a random-walk level observed in noise,

        α = (-λ + sqrt(λ² + 4 λ)) / 2,   λ = q / r,

    with the noise variance r and the drift variance per probe q read off the variogram
    γ_k = mean (log n_t - log n_{t-k})² = 2 r + k q at lags 1 and ``LAG``; α is at least ``slowest``
    (= 1 - ema). Noise alone gives q ≈ 0 and the slowest filter; a drift or a step raises q and the
    filter follows it within a few probes (Harvey, *Forecasting, structural time series models and
    the Kalman filter*, 1989, sec. 4.1: the local level model and its gain)."""
    if len(logs) <= lag:
        return np.full(logs.shape[1:], max(slowest, 0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells: not measured
        near = np.nanmean(np.square(logs[1:] - logs[:-1]), axis=0)
        far = np.nanmean(np.square(logs[lag:] - logs[:-lag]), axis=0)
    # less one standard error of the difference (about near * sqrt(2 / n)): noise alone must not read as drift
    q = np.maximum((far - near - near * np.sqrt(2.0 / (len(logs) - lag))) / (lag - 1), 0.0)
    r = np.maximum((near - q) / 2, 1e-12)
    ratio = q / r
    return np.clip((-ratio + np.sqrt(ratio ** 2 + 4 * ratio)) / 2, slowest, 1.0)


class UpdateLaw:
    """What the Balancer asks of a law: ``observe`` each probe, ``propose`` coefficients, ``applied``
    (the coefficients after the Balancer's limits), ``norms`` (smoothed u_lg) and a state dict.
    ``tracks_values``: the Balancer passes every step's loss values to ``track``."""

    name = ""
    tracks_values = False

    def observe(self, unit: np.ndarray, shares: np.ndarray) -> None:
        """``unit``: per-unit-coefficient norms, ``shares``: measured shares (%), losses x groups, NaN = not seen."""
        raise NotImplementedError

    def propose(self, losses, groups, weights, targets, bounds, fixed) -> tuple[dict, pd.DataFrame]:
        """New coefficients and the shares (%) predicted under them."""
        raise NotImplementedError

    def applied(self, weights: Mapping[str, float]) -> None:
        """The coefficients after the Balancer's limits (nothing to do for these laws)."""

    def track(self, values: np.ndarray) -> bool:
        """One step's loss values |f_l L_l| (losses, NaN = absent), when ``tracks_values``; True asks
        the Balancer for an update before the next probe."""
        return False


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
                 values: bool = True, every: int = 10, **_: object) -> None:
        self.ema, self.gain, self.window, self.values = float(ema), float(gain), int(window), bool(values)
        self.every = int(every)
        self.tracks_values = self.values
        self.level = np.full(shape, np.nan)  # log n at the current loss level, NaN = not measured
        self.residual = np.full(shape, np.nan)  # z = log n - β log v: the level of what the loss value does not explain
        self.gains = np.full(shape, np.nan)  # the level filter's gain at the latest probe
        self.correction = np.zeros(shape)  # d: the integral of the model's share error, in log-norm
        self.beta = np.zeros(shape)  # β_lg: elasticity of the norm's level to the loss value's level (0 without values)
        self.beta_batch = np.zeros(shape)  # elasticity of one batch's norm to its value's deviation from the interval
        self.interval_sum, self.interval_count = np.zeros(shape[0]), np.zeros(shape[0])  # log v since the probe
        self.recent: deque = deque(maxlen=self.window)  # innovations log n - level
        self.recent_residual: deque = deque(maxlen=self.window)  # innovations of z
        self.logs: deque = deque(maxlen=max(2 * self.window, 2 * LAG))  # log n (the noise and drift estimate)
        self.probe_values: deque = deque(maxlen=self.logs.maxlen)  # log v at the probed steps, beside ``logs``
        self.interval_means: deque = deque(maxlen=self.logs.maxlen)  # mean log v over each probe's interval
        self.value_level = np.full(shape[0], np.nan)  # the filtered per-step log v (the loss level now)
        self.value_logs: deque = deque(maxlen=VALUE_MEMORY)  # per-step log v since the last restart (its drift)
        self.value_noise: deque = deque(maxlen=VALUE_MEMORY)  # per-step log v (its noise: never cut)
        self.value_count = np.zeros(shape[0])  # steps since the level (re)started: the running-mean start
        self.cusum_up, self.cusum_down = np.zeros(shape[0]), np.zeros(shape[0])  # CUSUM statistics (σ units)
        self.cusum_run = np.zeros(shape[0])  # steps since the CUSUM left 0: the change point's estimate
        self.last_value: Optional[np.ndarray] = None  # log v of the latest step
        self.conditional: Optional[np.ndarray] = None  # predicted log n of the latest probed step, from its values
        self.measured: Optional[np.ndarray] = None  # shares (%) of the latest probe, NaN where it saw nothing

    @property
    def norms(self) -> np.ndarray:
        return np.exp(self.level)

    def track(self, values: np.ndarray) -> bool:
        """Filter one step's loss values |f_l L_l| (losses; NaN = absent). True when a loss's level has
        jumped (a CUSUM alarm): the Balancer then re-solves at once, without waiting for the next probe.

        The level of log v follows the variogram Kalman gain (:func:`level_gain`, at least the probe
        filter's rate per step); a two-sided CUSUM on the standardised innovations, slack
        ``CUSUM_SLACK`` σ and threshold ``CUSUM_THRESHOLD`` σ (Page 1954), restarts the level at the mean
        of the steps since the change, followed by a running mean, so a step in a loss's scale is
        followed in a few steps where the probe filter would need several probes."""
        if not self.values:
            return False
        with np.errstate(divide="ignore", invalid="ignore"):
            row = np.where(values > 0, np.log(values), np.nan)
        self.last_value = row.copy()
        seen = np.isfinite(row)
        self.interval_sum = self.interval_sum + np.where(seen, row, 0.0)
        self.interval_count = self.interval_count + seen
        first = np.isnan(self.value_level) & seen
        self.value_level = np.where(first, row, self.value_level)
        self.value_count = np.where(first, 1.0, self.value_count)
        self.value_logs.append(row.copy())
        self.value_noise.append(row.copy())
        history = np.stack(self.value_logs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a loss not seen yet
            # σ of one step's log v: the median |Δ| of the last VALUE_MEMORY steps (1.4826 MAD / √2,
            # robust to a jump, and kept across a restart: a scale change does not change log-noise)
            sigma = 1.4826 * np.nanmedian(np.abs(np.diff(np.stack(self.value_noise), axis=0)), axis=0) / np.sqrt(2) \
                if len(self.value_noise) > 2 else np.full(row.shape, np.nan)
        innovation = np.where(seen & ~first, row - self.value_level, 0.0)
        z = np.where(np.isfinite(sigma) & (sigma > 0), innovation / np.where(sigma > 0, sigma, 1.0), 0.0)
        self.cusum_up = np.where(seen, np.maximum(0.0, self.cusum_up + z - CUSUM_SLACK), self.cusum_up)
        self.cusum_down = np.where(seen, np.maximum(0.0, self.cusum_down - z - CUSUM_SLACK), self.cusum_down)
        self.cusum_run = np.where(seen, np.where((self.cusum_up > 0) | (self.cusum_down > 0), self.cusum_run + 1, 0), self.cusum_run)
        alarm = seen & (np.maximum(self.cusum_up, self.cusum_down) > CUSUM_THRESHOLD) & (len(history) > 2)
        slowest = 1 - self.ema ** (1.0 / self.every)
        gains = np.maximum(level_gain(history, slowest, lag=VALUE_LAG), 1.0 / (self.value_count + 1))
        update = np.where(seen & ~first, gains * innovation, 0.0)
        self.value_level = self.value_level + update
        self.value_count = self.value_count + seen
        if alarm.any():
            run = np.maximum(self.cusum_run, 1).astype(int)
            for i in np.flatnonzero(alarm):  # restart at the mean since the change, forget the old variogram
                since = history[-run[i]:, i]
                self.value_level[i] = np.nanmean(since)
                self.value_count[i] = float(np.isfinite(since).sum())
                self.cusum_up[i] = self.cusum_down[i] = 0.0
                self.cusum_run[i] = 0
                for k, past in enumerate(self.value_logs):
                    if k < len(self.value_logs) - run[i]:
                        past[i] = np.nan
        return bool(alarm.any())

    @staticmethod
    def _regress(x: np.ndarray, y: np.ndarray, prior: Optional[np.ndarray] = None) -> np.ndarray:
        """Per cell slope of ``y`` on ``x`` (probes x losses x groups, centred here), clipped to [0, 1];
        0 where there is too little to fit. Without ``prior``: shrunk to 0 by its standard error
        (James-Stein: β (1 - se² / β²)+). With ``prior`` β0: the precision-weighted mean of the fit and
        β0 (prior standard deviation ``BETA_PRIOR_STD``), so a slope the data cannot identify (x that
        barely moves) stays at β0."""
        ok = np.isfinite(x) & np.isfinite(y)
        n = ok.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            x = np.where(ok, x - np.nanmean(np.where(ok, x, np.nan), axis=0), 0.0)
            y = np.where(ok, y - np.nanmean(np.where(ok, y, np.nan), axis=0), 0.0)
            sxx, sxy = np.square(x).sum(axis=0), (x * y).sum(axis=0)
            beta = sxy / sxx
            se2 = (np.square(y - beta * x) * ok).sum(axis=0) / np.maximum(n - 2, 1) / sxx
            fitted = (n >= 5) & (sxx > 1e-12) & np.isfinite(beta) & np.isfinite(se2)
            if prior is None:
                beta = beta * np.clip(1 - se2 / np.square(beta), 0.0, 1.0)
                return np.where(fitted, np.clip(beta, 0.0, 1.0), 0.0)
            weight = BETA_PRIOR_STD ** 2 / (BETA_PRIOR_STD ** 2 + se2)
            beta = weight * beta + (1 - weight) * prior
        return np.clip(np.where(fitted, beta, prior), 0.0, 1.0)

    def observe(self, unit: np.ndarray, shares: np.ndarray) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.where(unit > 0, np.log(unit), np.nan)
        shape = logs.shape
        use_values = self.values and self.last_value is not None and self.interval_count.any()
        if use_values:
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(self.interval_count > 0, self.interval_sum / self.interval_count, np.nan)
            probed, level_now = self.last_value, np.nan_to_num(self.value_level)
        else:
            mean, probed, level_now = np.full(shape[0], np.nan), np.full(shape[0], np.nan), np.zeros(shape[0])
        self.interval_sum, self.interval_count = np.zeros(shape[0]), np.zeros(shape[0])
        self.logs.append(logs)
        self.probe_values.append(probed)
        self.interval_means.append(mean)
        n = np.stack(self.logs)
        batch = (np.stack(self.probe_values) - np.stack(self.interval_means))[:, :, None] * np.ones(shape)
        level = np.stack(self.interval_means)[:, :, None] * np.ones(shape)
        if use_values:
            self.beta_batch = self._regress(batch, n)
            denoised = n - self.beta_batch * np.nan_to_num(batch)
            beta = self._regress(np.diff(level, axis=0), np.diff(denoised, axis=0), prior=self.beta_batch)
        else:
            self.beta_batch, denoised, beta = np.zeros(shape), n, np.zeros(shape)
        # keep the level continuous at the loss level now when β moves: z shifts by -Δβ log v
        self.residual = self.residual - (beta - self.beta) * level_now[:, None]
        self.beta = beta
        residuals = denoised - self.beta * np.nan_to_num(level)
        z = residuals[-1]
        predicted = self.residual + self.beta * level_now[:, None]  # log n before this probe
        self.conditional = predicted + self.beta_batch * np.nan_to_num(batch[-1])
        self.recent.append(logs - predicted)
        self.recent_residual.append(z - self.residual)
        self.gains = level_gain(residuals, 1 - self.ema)
        first = np.isnan(self.residual)
        step = np.nan_to_num(self.gains * (z - self.residual))
        self.residual = np.where(first, z, np.where(np.isnan(z), self.residual, self.residual + step))
        self.level = self.residual + self.beta * level_now[:, None]
        self.measured = np.where(np.isfinite(logs), shares, np.nan)

    def frames(self, losses, groups, base: Optional[np.ndarray] = None, recent: Optional[deque] = None) -> list[pd.DataFrame]:
        """The predicted per-unit norms: exp(base + d + e_i) for the last ``window`` innovations e_i
        (centred, clipped at 3 std; ``base`` the level), so that their mean share is the predicted mean share."""
        base = self.level if base is None else base
        innovations = np.stack(list(self.recent if recent is None else recent)[-self.window:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells: not measured
            innovations = np.nan_to_num(innovations - np.nanmean(innovations, axis=0))
        bound = 3 * innovations.std(axis=0)
        return [pd.DataFrame(np.exp(base + self.correction + np.clip(e, -bound, bound)),
                             index=list(losses), columns=list(groups)) for e in innovations]

    def propose(self, losses, groups, weights, targets, bounds, fixed) -> tuple[dict, pd.DataFrame]:
        if self.last_value is not None:  # the level at the loss level now (moved by the values since the probe)
            self.level = self.residual + self.beta * np.nan_to_num(self.value_level)[:, None]
        if self.measured is not None and self.gain > 0:
            active = np.isfinite(self.measured)
            if self.conditional is not None and np.isfinite(self.conditional[active]).all() and self.beta_batch.any():
                # the shares expected for the probed step given its loss values: the residual noise only
                frames = self.frames(losses, groups, base=np.nan_to_num(self.conditional), recent=self.recent_residual)
            else:
                frames = self.frames(losses, groups)
            expected = mean_shares([f.where(active) for f in frames], weights)
            self.correction += self.gain * share_error(expected.to_numpy(), self.measured)
            self.measured = None  # integrated once: an update between probes (a CUSUM alarm) adds no error
        return solve_coefficients(self.frames(losses, groups), weights, targets, bounds, fixed)

    def state_dict(self) -> dict:
        def rows(d):
            return [r.tolist() for r in d]

        return {"level": self.level.tolist(), "residual": self.residual.tolist(), "gains": self.gains.tolist(),
                "correction": self.correction.tolist(), "beta": self.beta.tolist(), "recent": rows(self.recent),
                "recent_residual": rows(self.recent_residual), "logs": rows(self.logs),
                "probe_values": rows(self.probe_values), "interval_means": rows(self.interval_means),
                "interval": [self.interval_sum.tolist(), self.interval_count.tolist()],
                "beta_batch": self.beta_batch.tolist(), "value_level": self.value_level.tolist(),
                "value_logs": rows(self.value_logs), "value_noise": rows(self.value_noise), "value_count": self.value_count.tolist(),
                "cusum": [self.cusum_up.tolist(), self.cusum_down.tolist(), self.cusum_run.tolist()],
                "last_value": None if self.last_value is None else self.last_value.tolist(),
                "conditional": None if self.conditional is None else self.conditional.tolist(),
                "measured": None if self.measured is None else self.measured.tolist()}

    def load_state_dict(self, state: Mapping) -> None:
        def array(x):
            return np.array(x, dtype=np.float64)

        def rows(d, key, fill=None):
            items = state[key] if key in state else (fill or [])
            return deque((array(r) for r in items), maxlen=d.maxlen)

        self.level, self.gains, self.correction = array(state["level"]), array(state["gains"]), array(state["correction"])
        # states written before the loss-value channel: z = log n (β = 0)
        self.residual = array(state.get("residual", state["level"]))
        self.beta = array(state.get("beta", np.zeros_like(self.level)))
        self.recent = rows(self.recent, "recent")
        self.recent_residual = rows(self.recent_residual, "recent_residual", state["recent"])
        self.logs = rows(self.logs, "logs")
        self.probe_values = rows(self.probe_values, "probe_values", [[float("nan")] * len(self.level)] * len(self.logs))
        self.interval_means = rows(self.interval_means, "interval_means", [[float("nan")] * len(self.level)] * len(self.logs))
        zeros = [0.0] * len(self.level)
        self.interval_sum, self.interval_count = (array(x) for x in state.get("interval", [zeros, zeros]))
        self.beta_batch = array(state.get("beta_batch", np.zeros_like(self.level)))
        self.value_level = array(state.get("value_level", np.full(len(self.level), np.nan)))
        self.value_logs = rows(self.value_logs, "value_logs")
        self.value_noise = rows(self.value_noise, "value_noise")
        self.value_count = array(state.get("value_count", zeros))
        self.cusum_up, self.cusum_down, self.cusum_run = (array(c) for c in state.get("cusum", [zeros] * 3))
        self.last_value = None if state.get("last_value") is None else array(state["last_value"])
        self.conditional = None if state.get("conditional") is None else array(state["conditional"])
        self.measured = None if state["measured"] is None else array(state["measured"])


LAWS = {law.name: law for law in (Resolve, Controller)}
