"""The trainer's ``balancer`` section: config validation, coefficients applied and logged, the
history saved for ``gradbalance plot``, and exact resume with the balancer's state."""
from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from stlic_training_helpers import fast_config, training_records
from gradbalance.io.run import ProbeRun
from stlic.training.checkpoint import load_checkpoint
from stlic.training.config import ConfigError, TrainConfig
from stlic.training.solver import STLICSolver

#: the paper's Table I (main network / refiner), /work/shared/paper/README.md
PAPER_TABLE_I = {"main": {"rate": 18.62, "l2": 31.88, "l1": 32.80, "lpips": 11.29, "wasserstein": 1.56,
                          "adversarial": 3.84},
                 "refiner": {"lpips": 56.14, "wasserstein": 11.62, "adversarial": 32.24}}


@pytest.fixture
def targets(tmp_path):
    path = tmp_path / "table1.yaml"
    path.write_text(yaml.safe_dump(PAPER_TABLE_I))
    return str(path)


def with_balancer(section: dict, **sections) -> TrainConfig:
    """:func:`fast_config` with a ``balancer`` section (which fast_config cannot merge into None)."""
    data = fast_config(**sections).to_dict()
    data["balancer"] = section
    return TrainConfig.from_dict(data)


def balanced_config(targets: str, **balancer) -> TrainConfig:
    return with_balancer({"targets": targets, "every": 2, "ema": 0.5, **balancer})


@pytest.mark.parametrize("section, message", [
    ({"targets": "equal", "every": 0}, "balancer: every must be a positive integer"),
    ({"targets": "equal", "ema": 1.0}, "balancer: ema must be in"),
    ({"targets": "equal", "max_change": 1.0}, "balancer: max_change must be > 1"),
    ({"targets": "equal", "gain": 2.0}, "balancer: gain must be in"),
    ({"targets": "equal", "law": "pid"}, "balancer: law must be one of"),
    ({"targets": "equal", "fixed": ["l3"]}, "unknown loss 'l3'"),
    ({"targets": "equal", "bounds": {"l2": [10, 1]}}, "balancer: bounds of 'l2' must be"),
    ({"targets": "equal", "step": 3}, "unknown key 'step' in section 'balancer'"),
    ({"every": 3}, "missing required key 'targets'"),
])
def test_bad_balancer_sections_are_named(section, message):
    with pytest.raises(ConfigError, match=message):
        with_balancer(section)


def test_a_missing_target_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        STLICSolver(balanced_config(str(tmp_path / "nowhere.yaml")))


@pytest.mark.parametrize("targets, message", [
    ({"main": {"rate": 60, "l2": 50}}, "group 'main' sum to 110 %, more than 100 %"),
    ({"refiner": {"rate": 0, "l2": 0, "l1": 0, "lpips": 40, "wasserstein": 10, "adversarial": 10}},
     "group 'refiner' sum to 60 %, but every loss reaching it"),
])
def test_target_sums_are_checked_at_startup_with_the_balancers_rules(tmp_path, targets, message):
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump(targets))
    with pytest.raises(ConfigError, match=message):
        balanced_config(str(path))  # the config is refused when read, before any training
    from gradbalance import BalancerSpec
    with pytest.raises(ValueError, match=message):  # the same rule, from the spec the section maps onto
        BalancerSpec(targets=targets).check(("rate", "l2", "l1", "lpips", "wasserstein", "adversarial"),
                                            ("main", "refiner"))


def test_the_section_is_the_spec_one_to_one():
    import dataclasses

    from gradbalance import BalancerSpec
    from stlic.training.balancing import BalancerConfig
    section = [f.name for f in dataclasses.fields(BalancerConfig)]
    assert section == [f.name for f in dataclasses.fields(BalancerSpec)]
    spec = BalancerConfig(targets="equal", gain=0.2, bounds={"l2": [1, 100]}).spec()
    assert spec == BalancerSpec(targets="equal", gain=0.2, bounds={"l2": (1, 100)}, fixed=["rate"])


def test_balanced_training_applies_logs_and_saves_the_coefficients(tmp_path, photos, targets):
    config = balanced_config(targets, bounds={"l2": [10.0, 200.0]})
    solver = STLICSolver(config, out_dir=tmp_path / "run", data=[photos])
    outputs = [solver.run_step(solver.next_batch()) for _ in range(3)]
    solver.save_checkpoint()
    first = outputs[0].record()
    assert first["balancer/weight/rate"] == 1.0  # held: the multiplier of the drawn lambda
    assert first["balancer/weight/l2"] != config.loss_weights.l2 and 10.0 <= first["balancer/weight/l2"] <= 200.0
    shares = {k: v for k, v in first.items() if k.startswith("balancer/share/refiner/")}
    assert set(shares) == {f"balancer/share/refiner/{l}" for l in ("lpips", "wasserstein", "adversarial")}
    assert sum(shares.values()) == pytest.approx(100.0)
    # step 2 trains with the coefficients updated after the probe of step 1
    second = outputs[1]
    for loss in ("l2", "l1", "lpips", "wasserstein", "adversarial"):
        assert second.weights[loss] == pytest.approx(first[f"balancer/weight/{loss}"], rel=1e-15)
    assert second.weights["rate"] == second.lambda_rate
    run = ProbeRun.load(tmp_path / "run" / "balancer")
    assert sorted(run.records.step.unique()) == [0, 2]
    assert run.records.query("loss == 'l2' and group == 'refiner'").share.isna().all()  # cannot reach it
    assert load_checkpoint(tmp_path / "run")["balancer"]["updates"] == 2


def test_resume_with_the_balancer_continues_exactly(tmp_path, photos, targets):
    config = balanced_config(targets).replace(checkpoint_every=3)
    straight = STLICSolver(config, out_dir=tmp_path / "straight", data=[photos])
    straight.fit(3)
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    straight.fit(6)
    resumed = STLICSolver(config, out_dir=tmp_path / "resumed", data=[photos])
    assert resumed.resume() == 3
    resumed.fit(6)
    expected, got = training_records(tmp_path / "straight"), training_records(tmp_path / "resumed")
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    assert got == expected and "balancer/weight/lpips" in got[-1]
    assert resumed.balancing.balancer.weights == straight.balancing.balancer.weights
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_coupled_run_balances_the_main_network_alone(tmp_path, photos, targets):
    main_only = tmp_path / "main.yaml"
    main_only.write_text(yaml.safe_dump({"main": PAPER_TABLE_I["main"]}))
    data = with_balancer({"targets": str(main_only), "every": 1, "ema": 0.5}).to_dict()
    solver = STLICSolver(TrainConfig.from_dict({**data, "arrangement": "coupled"}), data=[photos])
    for _ in range(2):
        out = solver.run_step(solver.next_batch())
    assert any(key.startswith("balancer/") for key in out.balance) and out.losses["lpips"] > 0
    with pytest.raises(ValueError, match="refiner"):  # Table I's refiner column names a group a coupled run lacks
        STLICSolver(TrainConfig.from_dict({**data, "arrangement": "coupled", "balancer": {
            **data["balancer"], "targets": str(tmp_path / "table1.yaml")}}), data=[photos])
