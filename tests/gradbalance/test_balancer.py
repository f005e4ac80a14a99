"""Balancer: .grad is the weighted sum's, an update meets a feasible target (re-measured), the
per-update limit, bounds, fixed coefficients, the EMA, exact resume, saved runs, bad input."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from balancer_cases import INITIAL_WEIGHTS, TARGETS, drifting_toy
from gradbalance import Balancer, GradientProbe, derive_coefficients
from gradbalance.io.run import ProbeRun
from gradbalance_cases import make_mlp_case

MLP_GROUPS = ("trunk", "head")


def mlp():
    case = make_mlp_case()
    return case, {g: case.groups[g] for g in MLP_GROUPS}


def measured_shares(case, groups, weights) -> np.ndarray:
    """Shares (%) at ``weights`` from one fresh probe measurement (losses x groups, NaN = absent)."""
    probe = GradientProbe(case.model, groups, loss_order=list(weights))
    return 100 * probe.measure(case.losses(), weights).shares()


def target_from(shares: np.ndarray, losses) -> dict:
    return {g: {l: float(shares[i, j]) for i, l in enumerate(losses) if not np.isnan(shares[i, j])}
            for j, g in enumerate(MLP_GROUPS)}


def test_backward_accumulates_the_weighted_sum_on_probed_and_plain_steps():
    case, groups = mlp()
    balancer = Balancer(case.model, groups, "equal", weights=case.weights, every=2, max_change=3.0)
    factors = {"sparse": 2.5}
    for call in range(3):
        applied = {l: balancer.weights[l] * factors.get(l, 1.0) for l in case.weights}
        case.model.zero_grad(set_to_none=True)
        sum(applied[k] * v for k, v in case.losses().items()).backward()
        reference = [None if p.grad is None else p.grad.clone() for p in case.model.parameters()]
        case.model.zero_grad(set_to_none=True)
        stats = balancer.backward(case.losses(), factors)
        assert (stats is not None) == (call % 2 == 0)
        for p, expected in zip(case.model.parameters(), reference):
            if expected is None:
                assert p.grad is None
            else:
                torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-15)
    assert balancer.updates == 2 and balancer.weights != case.weights


def test_one_update_meets_a_feasible_target_when_remeasured():
    case, groups = mlp()
    hidden = {"fit": 1.0, "sparse": 0.8, "aux": -0.4}  # shares at these coefficients are the target
    target = target_from(measured_shares(case, groups, hidden), list(hidden))
    balancer = Balancer(case.model, groups, target, weights=case.weights, every=1, ema=0.0, max_change=100.0,
                        fixed={"fit": 1.0})
    balancer.backward(case.losses())
    for loss, value in hidden.items():
        assert balancer.weights[loss] == pytest.approx(value, rel=1e-6)
    np.testing.assert_allclose(measured_shares(case, groups, balancer.weights),
                               measured_shares(case, groups, hidden), rtol=1e-6)
    assert not balancer.misses


def test_an_update_moves_a_coefficient_by_at_most_max_change():
    case, groups = mlp()
    hidden = {"fit": 1.0, "sparse": 30.0, "aux": -0.05}  # sparse must grow 100x
    target = target_from(measured_shares(case, groups, hidden), list(hidden))
    balancer = Balancer(case.model, groups, target, weights=case.weights, every=1, ema=0.0, max_change=1.5)
    seen = [balancer.weights["sparse"]]
    for _ in range(14):
        balancer.backward(case.losses())
        seen.append(balancer.weights["sparse"])
    ratios = np.array(seen[1:]) / np.array(seen[:-1])
    np.testing.assert_allclose(ratios[:11], 1.5, rtol=1e-12)  # 0.3 * 1.5**11 = 25.9 < 30 < 0.3 * 1.5**12
    assert seen[-1] == pytest.approx(30.0, rel=1e-6) and balancer.weights["fit"] == 1.0


def test_a_bound_holds_its_coefficient_the_rest_is_resolved_and_the_miss_is_logged(caplog):
    case, groups = mlp()
    hidden = {"fit": 1.0, "sparse": 0.8, "aux": -0.4}
    target = target_from(measured_shares(case, groups, hidden), list(hidden))
    balancer = Balancer(case.model, groups, target, weights=case.weights, every=1, ema=0.0, max_change=100.0,
                        bounds={"sparse": (0.1, 0.5)})
    with caplog.at_level(logging.WARNING, logger="gradbalance.balancer"):
        balancer.backward(case.losses())
    assert balancer.weights["sparse"] == 0.5
    # reference: derive with sparse held at its bound, from a fresh measurement at the initial weights
    probe = GradientProbe(case.model, groups, loss_order=list(hidden))
    probe.measure(case.losses(), case.weights)  # recorded as step 0
    reference = derive_coefficients(probe.table(), target, fixed={"fit": 1.0, "sparse": 0.5})
    assert balancer.weights["aux"] == pytest.approx(reference.coefficients["aux"], rel=1e-6)
    assert balancer.misses and "out of reach" in caplog.text and "misses by" in caplog.text
    worst = max(balancer.misses.values())
    assert worst == pytest.approx(reference.max_error, rel=1e-6)


def test_a_loss_in_warm_up_leaves_the_others_balanced_in_the_target_ratios(caplog):
    case, groups = mlp()
    hidden = {"fit": 1.0, "sparse": 0.8, "aux": -0.4}
    target = target_from(measured_shares(case, groups, hidden), list(hidden))
    balancer = Balancer(case.model, groups, target, weights=case.weights, every=1, ema=0.0, max_change=100.0)
    with caplog.at_level(logging.WARNING, logger="gradbalance.balancer"):
        balancer.backward(case.losses(), {"sparse": 0.0})  # sparse off: the head holds fit alone
    assert "weights held" not in caplog.text
    assert balancer.weights["sparse"] == case.weights["sparse"]  # never measured: held
    # the trunk's fit : aux ratio is the target's, so aux gets its hidden coefficient
    assert balancer.weights["aux"] == pytest.approx(hidden["aux"], rel=1e-6)


def test_the_ema_smooths_norms_per_unit_coefficient_and_a_zero_factor_adds_nothing():
    case, groups = mlp()
    balancer = Balancer(case.model, groups, "equal", weights=case.weights, every=1, ema=0.75, max_change=1.0001,
                        law="resolve")
    reference = GradientProbe(case.model, groups, loss_order=list(case.weights))
    first = reference.measure(case.losses(), case.weights).raw_norm
    balancer.backward(case.losses(), {"sparse": 3.0})
    with torch.no_grad():
        for p in case.model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # a different model state: different norms
    second = reference.measure(case.losses(), case.weights).raw_norm
    balancer.backward(case.losses(), {"aux": 0.0})
    factors = np.array([[1.0], [3.0], [1.0]])  # fit, sparse, aux on the first call
    expected = 0.75 * factors * first + 0.25 * second
    expected[2] = first[2]  # aux had factor 0 on the second call: no information
    np.testing.assert_allclose(balancer.norms, expected, rtol=1e-10)  # groups: trunk, head, other (unreached)


def run_toy(steps: int, balancer: Balancer, toy, optimizer) -> None:
    model, _, next_losses = toy
    for _ in range(steps):
        optimizer.zero_grad()
        balancer.backward(next_losses())
        optimizer.step()


def test_state_dict_resumes_exactly(tmp_path):
    def fresh():
        toy = drifting_toy()
        balancer = Balancer(toy[0], toy[1], TARGETS, weights=INITIAL_WEIGHTS, every=4, ema=0.8, fixed=["fit"])
        return toy, balancer, torch.optim.Adam(toy[0].parameters(), lr=3e-3)

    toy, straight, optimizer = fresh()
    run_toy(30, straight, toy, optimizer)
    toy, first, optimizer = fresh()
    run_toy(14, first, toy, optimizer)
    torch.save(first.state_dict(), tmp_path / "balancer.pt")
    resumed = Balancer(toy[0], toy[1], TARGETS, weights=INITIAL_WEIGHTS, every=4, ema=0.8, fixed=["fit"])
    resumed.load_state_dict(torch.load(tmp_path / "balancer.pt", weights_only=True))
    run_toy(16, resumed, toy, optimizer)
    assert resumed.weights == straight.weights and resumed.updates == straight.updates == 8
    np.testing.assert_array_equal(resumed.norms, straight.norms)
    assert resumed.history.equals(straight.history)


def test_saved_history_is_a_probe_run(tmp_path):
    toy = drifting_toy()
    balancer = Balancer(toy[0], toy[1], TARGETS, weights=INITIAL_WEIGHTS, every=2)
    run_toy(6, balancer, toy, torch.optim.SGD(toy[0].parameters(), lr=0.01))
    run = ProbeRun.load(balancer.save(tmp_path / "run"))
    assert run.metadata["balancer"] and run.metadata["targets"] == TARGETS
    assert sorted(run.records.step.unique()) == [0, 2, 4]
    assert run.table().mean.loc["energy", "head"] != run.table().mean.loc["energy", "head"]  # NaN: absent
    np.testing.assert_allclose(run.records.share, balancer.history.share)


def test_precond_balances_the_adam_update_shares():
    toy = drifting_toy()
    optimizer = torch.optim.Adam(toy[0].parameters(), lr=3e-3)
    balancer = Balancer(toy[0], toy[1], TARGETS, weights=INITIAL_WEIGHTS, every=1, optimizer=optimizer, precond=True)
    run_toy(3, balancer, toy, optimizer)
    history = balancer.history
    totals = history.groupby(["step", "group"]).precond_norm.transform("sum")
    np.testing.assert_allclose(history.share, 100 * history.precond_norm / totals, rtol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(targets={"decoder": {"fit": 50}}), "group 'decoder'"),
    (dict(targets={"head": {"l9": 50}}), "loss 'l9'"),
    (dict(targets={"head": {"fit": 150}}), "percentage"),
    (dict(targets="uniform"), "unknown target"),
    (dict(targets={"head": {"fit": None, "sparse": 0}}), "set no share"),
    (dict(weights={"fit": 1.0, "sparse": 0.0, "aux": 1.0}), "nonzero"),
    (dict(bounds={"sparse": (1.0, 2.0)}), "outside its bounds"),
    (dict(fixed=["l9"]), "unknown loss"),
    (dict(precond=True), "optimizer"),
    (dict(ema=1.0), "ema"),
    (dict(max_change=1.0), "max_change"),
])
def test_bad_input_is_a_clear_error(kwargs, message):
    case, groups = mlp()
    options = {"targets": "equal", "weights": case.weights, **kwargs}
    with pytest.raises(ValueError, match=message):
        Balancer(case.model, groups, options.pop("targets"), **options)


def test_an_unknown_loss_at_backward_is_a_clear_error():
    case, groups = mlp()
    balancer = Balancer(case.model, groups, "equal", weights={"fit": 1.0, "sparse": 0.3})
    with pytest.raises(ValueError, match="no coefficient"):
        balancer.backward(case.losses())
