"""The Balancer's stateless math against independent references: the share error's linearisation
(finite differences of the share formula), the level filter's gain (the Kalman filter's Riccati
recursion), the per-update limit, and unreachable targeted pairs."""
from __future__ import annotations

import numpy as np
import pytest

from gradbalance.functional.balance_solve import limit_change, share_error, unreachable_pairs
from gradbalance.balancer.update_laws import level_gain


def shares(norms: np.ndarray) -> np.ndarray:
    return 100 * norms / norms.sum(axis=0, keepdims=True)


def test_share_error_inverts_the_share_of_a_small_log_norm_change():
    norms = np.array([[2.0, 1.0], [1.0, 3.0], [0.5, 0.2]])
    for i, j in [(0, 0), (1, 1), (2, 0)]:
        bumped = np.log(norms)
        bumped[i, j] += 1e-6
        moved = shares(np.exp(bumped))
        step = share_error(shares(norms), moved)
        assert step[i, j] == pytest.approx(1e-6, rel=1e-4)


def riccati_gain(q: float, r: float) -> float:
    """Steady-state Kalman gain of a random walk (variance q per step) observed in noise r, iterated."""
    p = 1.0
    for _ in range(10000):
        prior = p + q
        gain = prior / (prior + r)
        p = (1 - gain) * prior
    return gain


def test_the_level_gain_is_the_kalman_gain_of_the_measured_drift_and_noise():
    rng = np.random.default_rng(0)
    q, r = 0.01, 0.04
    level = np.cumsum(rng.normal(0, np.sqrt(q), 40000))
    logs = (level + rng.normal(0, np.sqrt(r), level.size))[:, None, None]
    assert level_gain(logs, 0.01)[0, 0] == pytest.approx(riccati_gain(q, r), abs=0.03)
    noise_only = rng.normal(0, 0.4, (40000, 1, 1))
    assert level_gain(noise_only, 0.1)[0, 0] == 0.1  # no drift: the slowest filter


def test_limit_change_caps_the_factor_then_the_bounds():
    current = {"a": 1.0, "b": 2.0, "c": -0.5}
    proposed = {"a": 10.0, "b": 0.1, "c": -0.6}
    out = limit_change(current, proposed, 2.0, {"c": (-0.55, -0.1)})
    assert out == {"a": 2.0, "b": 1.0, "c": -0.55}


def test_unreachable_pairs_are_the_targeted_cells_without_a_path():
    reached = np.array([[True, True], [True, False]])
    targets = {"enc": {"rate": 20, "mse": None}, "dec": {"mse": 80, "rate": 20}}
    assert unreachable_pairs(targets, ["mse", "rate"], ["enc", "dec"], reached) == [("rate", "dec")]
    assert unreachable_pairs({"dec": {"mse": 100, "rate": 0}}, ["mse", "rate"], ["enc", "dec"], reached) == []
    assert unreachable_pairs("equal", ["mse", "rate"], ["enc", "dec"], reached) == []
