"""BalancerSpec is the Balancer's one set of rules: settings validated once, target sums refused
when the Balancer is built, targets on pairs with no gradient path named at the first probe, old
keywords still accepted, and the controller law's state resumes exactly."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from balancer_cases import INITIAL_WEIGHTS, TARGETS, drifting_toy
from gradbalance import Balancer, BalancerSpec
from gradbalance_cases import make_mlp_case


def mlp():
    case = make_mlp_case()
    return case, {g: case.groups[g] for g in ("trunk", "head")}


@pytest.mark.parametrize("settings, message", [
    (dict(every=0), "every must be a positive integer"),
    (dict(window=1.5), "window must be a positive integer"),
    (dict(ema=-0.1), "ema must be in"),
    (dict(gain=1.5), "gain must be in"),
    (dict(law="pid"), "law must be one of"),
    (dict(max_change=0.5), "max_change must be > 1"),
    (dict(tolerance=float("nan")), "tolerance must be a finite number"),
    (dict(bounds={"fit": (2, 1)}), "bounds of 'fit' must be"),
    (dict(targets={"head": {"fit": 70, "sparse": 40}}), "group 'head' sum to 110 %, more than 100 %"),
    (dict(targets={"fit": (60, 80), "sparse": (50, 90)}), "sum to 110..170 %, more than 100 %"),
])
def test_the_spec_refuses_bad_settings_on_its_own(settings, message):
    with pytest.raises(ValueError, match=message):
        BalancerSpec(**{"targets": "equal", **settings})


def test_targets_that_cannot_sum_to_100_are_refused_when_the_balancer_is_built():
    case, groups = mlp()
    with pytest.raises(ValueError, match=r"group 'head' sum to 110 %, more than 100 %"):
        Balancer(case.model, groups, {"head": {"fit": 70, "sparse": 40}}, weights=case.weights)
    # every loss is targeted in 'trunk' (aux, fit, sparse) and they sum to 90 %
    with pytest.raises(ValueError, match=r"group 'trunk' sum to 90 %, but every loss reaching it"):
        Balancer(case.model, groups, {"trunk": {"fit": 50, "sparse": 20, "aux": 20}}, weights=case.weights)
    Balancer(case.model, groups, {"trunk": {"fit": 50, "sparse": 20}}, weights=case.weights)  # aux is free


def test_a_spec_and_the_old_keywords_build_the_same_balancer():
    case, groups = mlp()
    spec = BalancerSpec(targets="equal", every=3, ema=0.5, max_change=3.0, fixed=["sparse"])
    from_spec = Balancer(case.model, groups, weights=case.weights, spec=spec)
    from_keywords = Balancer(case.model, groups, "equal", weights=case.weights, every=3, ema=0.5, max_change=3.0,
                             fixed=["sparse"])
    assert from_spec.spec == from_keywords.spec and from_spec.fixed == {"sparse": 0.3}
    assert Balancer(case.model, groups, weights=case.weights, spec=spec, every=5).probe.every == 5
    with pytest.raises(TypeError, match="unknown setting"):
        Balancer(case.model, groups, "equal", weights=case.weights, evry=3)


def test_a_target_with_no_gradient_path_is_an_error_naming_the_pair_at_the_first_probe(caplog):
    case, groups = mlp()
    balancer = Balancer(case.model, groups, {"head": {"fit": 60, "aux": 40}}, weights=case.weights)
    with pytest.raises(ValueError, match=r"'aux' in 'head'.*no gradient path"):
        balancer.backward(case.losses())


def test_every_pair_with_no_path_is_logged_once(caplog):
    case, groups = mlp()
    balancer = Balancer(case.model, groups, {"head": {"fit": 60, "sparse": 40}}, weights=case.weights, every=1)
    with caplog.at_level(logging.INFO, logger="gradbalance.balancer"):
        for _ in range(3):
            case.model.zero_grad()
            balancer.backward(case.losses())
    lines = [r.message for r in caplog.records if "no gradient path" in r.message]
    # 'other': the model's parameters outside the groups (``unused``), which no loss reaches
    assert lines == ["balancer: no gradient path from fit to other, sparse to other, aux to head, aux to other"]
    assert balancer.unreachable == [("fit", "other"), ("sparse", "other"), ("aux", "head"), ("aux", "other")]


def test_the_controller_meets_a_feasible_target_in_one_update_without_overshoot():
    """Noise-free and static: the feed-forward solve is exact and the feedback sees no model error."""
    case, groups = mlp()
    hidden = {"fit": 1.0, "sparse": 0.8, "aux": -0.4}
    from gradbalance import GradientProbe
    probe = GradientProbe(case.model, groups, loss_order=list(hidden))
    shares = 100 * probe.measure(case.losses(), hidden).shares()
    target = {g: {l: float(shares[i, j]) for i, l in enumerate(hidden) if not np.isnan(shares[i, j])}
              for j, g in enumerate(("trunk", "head"))}
    balancer = Balancer(case.model, groups, target, weights=case.weights, every=1, max_change=100.0, gain=0.5)
    for _ in range(3):
        case.model.zero_grad()
        balancer.backward(case.losses())  # same batch, same model: every probe measures the same norms
        for loss, value in hidden.items():
            assert balancer.weights[loss] == pytest.approx(value, rel=1e-6)


def test_no_update_of_the_controller_moves_a_coefficient_more_than_max_change():
    model, groups, next_losses = drifting_toy()
    balancer = Balancer(model, groups, TARGETS, weights=INITIAL_WEIGHTS, every=2, max_change=1.3, fixed=["fit"])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    seen = []
    for _ in range(60):
        optimizer.zero_grad()
        balancer.backward(next_losses())
        optimizer.step()
        seen.append(dict(balancer.weights))
    for loss in INITIAL_WEIGHTS:
        ratios = np.array([s[loss] for s in seen[1:]]) / np.array([s[loss] for s in seen[:-1]])
        assert np.all(ratios <= 1.3 * (1 + 1e-12)) and np.all(ratios >= 1 / 1.3 * (1 - 1e-12))
    assert any(abs(np.log(seen[-1][l] / INITIAL_WEIGHTS[l])) > 0.1 for l in ("prior", "energy"))


def test_the_controller_state_resumes_exactly(tmp_path):
    def fresh():
        toy = drifting_toy()
        balancer = Balancer(toy[0], toy[1], TARGETS, weights=INITIAL_WEIGHTS, every=3, fixed=["fit"])
        return toy, balancer, torch.optim.Adam(toy[0].parameters(), lr=3e-3)

    def train(steps, balancer, toy, optimizer):
        for _ in range(steps):
            optimizer.zero_grad()
            balancer.backward(toy[2]())
            optimizer.step()

    toy, straight, optimizer = fresh()
    train(45, straight, toy, optimizer)
    toy, first, optimizer = fresh()
    train(21, first, toy, optimizer)
    torch.save(first.state_dict(), tmp_path / "balancer.pt")
    resumed = Balancer(toy[0], toy[1], TARGETS, weights=INITIAL_WEIGHTS, every=3, fixed=["fit"])
    resumed.load_state_dict(torch.load(tmp_path / "balancer.pt", weights_only=True))
    train(24, resumed, toy, optimizer)
    assert resumed.weights == straight.weights
    np.testing.assert_array_equal(resumed.law.correction, straight.law.correction)
    with pytest.raises(ValueError, match="law 'controller'"):
        Balancer(toy[0], toy[1], TARGETS, weights=INITIAL_WEIGHTS, law="resolve").load_state_dict(straight.state_dict())
