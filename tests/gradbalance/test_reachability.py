"""No-path pairs stated by name (probe log, table notes, derive's refusal) and Adam's warm-up in precond tables."""
from __future__ import annotations

import logging

import pytest
import torch

from gradbalance import GradientProbe, derive_coefficients
from gradbalance.report.table import WarmupOnlyError
from gradbalance_cases import make_mlp_case


def test_no_path_pairs_are_named_once_and_in_the_table(caplog):
    case = make_mlp_case()  # 'aux' reaches only the trunk; no loss reaches 'unused'
    probe = GradientProbe(case.model, case.groups, loss_order=["fit", "sparse", "aux"])
    with caplog.at_level(logging.INFO, logger="gradbalance.probe"):
        for _ in range(3):
            probe.backward(case.losses(), case.weights)
    messages = [r.getMessage() for r in caplog.records if r.name == "gradbalance.probe"]
    expected = {("fit", "unused"), ("sparse", "unused"), ("aux", "head"), ("aux", "unused")}
    assert len(messages) == 1 and messages[0].startswith("step 0: no path from ")
    assert all(f"{l} to {g}" in messages[0] for l, g in expected)
    assert set(probe.no_path) == expected
    table = probe.table(window=2)
    assert set(table.no_path) == expected
    notes = table.to_markdown().splitlines()[-1]
    assert notes.startswith("mean ± std over 2 probed steps (1-2); -: no path from ") and "aux to head" in notes


def test_derive_names_every_target_without_a_path():
    case = make_mlp_case()
    probe = GradientProbe(case.model, case.groups)
    probe.measure(case.losses(), case.weights)
    with pytest.raises(ValueError, match=r"no path: aux to head, fit to unused"):
        derive_coefficients(probe.table(), {"head": {"aux": 20, "fit": 80}, "unused": {"fit": 100}})
    derive_coefficients(probe.table(), {"head": {"aux": 0, "fit": 50, "sparse": 50}})  # 0 % there is consistent


def test_precond_table_skips_adams_warmup():
    case = make_mlp_case()
    optimizer = torch.optim.Adam(case.model.parameters(), lr=1e-3)
    probe = GradientProbe(case.model, case.groups, optimizer=optimizer, every=2)
    for _ in range(14):  # probed at Adam steps 1, 3, ..., 13
        optimizer.zero_grad(set_to_none=True)
        probe.backward(case.losses(), case.weights)
        optimizer.step()
    assert probe.records.dropna(subset=["precond_norm"])["adam_step"].unique().tolist() == [1, 3, 5, 7, 9, 11, 13]
    assert len(probe.precond_table().steps) == 2  # Adam steps 11 and 13
    assert len(probe.precond_table(warmup=0).steps) == 7
    with pytest.raises(WarmupOnlyError, match="all 7 probed steps are in Adam's first 13 steps"):
        probe.precond_table(warmup=13)


def test_adams_first_step_divides_each_loss_by_the_total():
    """What the warm-up shows: at Adam step 1, precond_norm_i = ||w_i g_i / |G| || (eps negligible)."""
    case = make_mlp_case()
    optimizer = torch.optim.Adam(case.model.parameters(), lr=1e-3, eps=1e-14)
    probe = GradientProbe(case.model, case.groups, optimizer=optimizer)
    weights = {"fit": 1.0, "sparse": 0.3}
    losses = {k: v for k, v in case.losses().items() if k in weights}
    params = list(case.model.trunk.parameters())
    grads = {k: torch.cat([g.reshape(-1) for g in torch.autograd.grad(weights[k] * losses[k], params,
                                                                         retain_graph=True)]) for k in weights}
    total = grads["fit"] + grads["sparse"]
    stats = probe.backward(losses, weights)
    optimizer.step()
    j = stats.groups.index("trunk")
    for i, name in enumerate(stats.losses):
        assert stats.precond_norm[i, j] == pytest.approx(float((grads[name] / total.abs()).norm()), rel=1e-6)
    # the two raw norms differ far more than the optimizer-aware ones: those reflect where the losses cancel
    raw = stats.norm[:, j]
    assert max(raw) / min(raw) > 2 * max(stats.precond_norm[:, j]) / min(stats.precond_norm[:, j])
