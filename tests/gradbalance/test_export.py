"""export_config: exact YAML round trip, header comment, atomic write, clear errors."""
from __future__ import annotations

import copy

import pytest
import yaml

from gradbalance import export_config

BASE = {
    "model": {"preset": "tiny", "levels": [0.5, 1.0]},
    "loss_weights": {"rate": [0.0018, 0.0483], "l1": 1.0, "l2": 0.25, "lpips": 1.0,
                     "wasserstein": 0.1, "adversarial": 0.008},
    "train": {"steps": 10, "nested": {"loss_weights": {"a": 1.0}}},
}


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text("# the base config\n" + yaml.safe_dump(BASE, sort_keys=False))
    return path


def test_round_trip_is_exact(base, tmp_path):
    coefficients = {"rate": (0.1 / 3, 2.0 / 7), "l2": 1 / 3, "adversarial": 1e-17 * 3.3}
    out = export_config(coefficients, base, tmp_path / "derived" / "x.yaml", header="target: equal")
    expected = copy.deepcopy(BASE)
    expected["loss_weights"].update(rate=[0.1 / 3, 2.0 / 7], l2=1 / 3, adversarial=1e-17 * 3.3)
    text = out.read_text()
    assert yaml.safe_load(text) == expected  # bit-exact floats, other keys untouched, order kept
    assert list(yaml.safe_load(text)) == list(BASE)
    assert text.startswith("# Loss weights derived by gradbalance") and "# target: equal\n" in text
    assert [p.name for p in out.parent.iterdir()] == ["x.yaml"]  # no temporary file left behind


def test_nested_block_and_errors(base, tmp_path):
    out = export_config({"a": 2.5}, base, tmp_path / "n.yaml", block="train.nested.loss_weights")
    assert yaml.safe_load(out.read_text())["train"]["nested"]["loss_weights"] == {"a": 2.5}
    with pytest.raises(KeyError, match="no loss-weight block 'weights'"):
        export_config({"l1": 1.0}, base, tmp_path / "e.yaml", block="weights")
    with pytest.raises(KeyError, match="no key 'lpips_typo'"):
        export_config({"lpips_typo": 1.0}, base, tmp_path / "e.yaml")
    with pytest.raises(ValueError, match="range must stay a range"):
        export_config({"rate": 0.5}, base, tmp_path / "e.yaml")
    with pytest.raises(FileNotFoundError):
        export_config({"l1": 1.0}, tmp_path / "missing.yaml", tmp_path / "e.yaml")
    assert not (tmp_path / "e.yaml").exists()
