"""Group specs: modules, regexes, parameter lists and names; disjointness and strictness."""
from __future__ import annotations

import re

import pytest
from torch import nn

from gradbalance import partition_parameters


def make_model() -> nn.Module:
    return nn.ModuleDict({"enc": nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 3)), "dec": nn.Linear(3, 2)})


def names_of(groups, name):
    return [groups.param_names[i] for i in range(len(groups.params))][groups.slices[name]]


def test_module_regex_params_and_names_specs_agree():
    model = make_model()
    by_module = partition_parameters(model, {"enc": model["enc"], "dec": model["dec"]})
    by_regex = partition_parameters(model, {"enc": r"^enc\.", "dec": re.compile(r"^dec\.")})
    by_params = partition_parameters(model, {"enc": list(model["enc"].parameters()), "dec": model["dec"].parameters()})
    by_names = partition_parameters(model, {"enc": ["enc.0.weight", "enc.0.bias", "enc.1.weight", "enc.1.bias"],
                                            "dec": ["dec.weight", "dec.bias"]})
    expected = {"enc": [n for n, _ in model.named_parameters() if n.startswith("enc")],
                "dec": ["dec.weight", "dec.bias"]}
    for groups in (by_module, by_regex, by_params, by_names):
        assert {g: sorted(names_of(groups, g)) for g in groups.names} == {g: sorted(v) for g, v in expected.items()}
        assert [id(p) for p in groups.group_params("dec")] == [id(model["dec"].weight), id(model["dec"].bias)]


def test_overlapping_groups_are_an_error():
    model = make_model()
    with pytest.raises(ValueError, match="disjoint.*enc.1.weight"):
        partition_parameters(model, {"a": model["enc"], "b": r"^enc\.1\.", "c": model["dec"]})


def test_ungrouped_parameters_form_group_other_unless_strict():
    model = make_model()
    loose = partition_parameters(model, {"enc": model["enc"]})
    assert loose.names == ("enc", "other") and loose.n_grouped == 6
    assert [n for n in loose.param_names[loose.slices["other"]]] == ["dec.weight", "dec.bias"]
    with pytest.raises(ValueError, match="2 trainable parameter.*dec.weight"):
        partition_parameters(model, {"enc": model["enc"]}, strict=True)
    ignored = partition_parameters(model, {"enc": model["enc"]}, ignore=model["dec"].parameters(), strict=True)
    assert ignored.names == ("enc",) and len(ignored.params) == 6  # ignored: unmeasured, still trained
    with pytest.raises(ValueError, match="1 trainable parameter.*dec.bias"):
        partition_parameters(model, {"enc": model["enc"]}, ignore=[model["dec"].weight], strict=True)
    partial = partition_parameters(model, {"enc": model["enc"]}, ignore=[model["dec"].weight])
    assert partial.group_params("other") == (model["dec"].bias,) and len(partial.params) == 6
    with pytest.raises(ValueError, match="'other' is reserved"):
        partition_parameters(model, {"other": model["enc"]})
    model["dec"].requires_grad_(False)
    assert partition_parameters(model, {"enc": model["enc"]}, strict=True).n_grouped == 4  # frozen: not required


def test_frozen_parameters_left_out_and_bad_specs_named():
    model = make_model()
    model["enc"][0].weight.requires_grad_(False)
    groups = partition_parameters(model, {"enc": model["enc"], "dec": model["dec"]})
    assert all(p is not model["enc"][0].weight for p in groups.group_params("enc"))  # skipped while frozen
    assert any(p is model["enc"][0].weight for p in groups.group_params("enc", trainable_only=False))
    with pytest.raises(ValueError, match="'x' matched no parameters"):
        partition_parameters(model, {"x": r"^nothing", "all": model})
    with pytest.raises(ValueError, match="no parameter named 'dec.w'"):
        partition_parameters(model, {"x": ["dec.w"]})
    with pytest.raises(ValueError, match="not a parameter of the probed model"):
        partition_parameters(model, {"x": nn.Linear(1, 1), "all": model})
    with pytest.raises(TypeError, match="spec must be"):
        partition_parameters(model, {"x": 3})
    with pytest.raises(ValueError, match="at least one"):
        partition_parameters(model, {})


def test_group_of_modules_and_tied_alias():
    model = make_model()
    listed = partition_parameters(model, {"all": [model["enc"], model["dec"].weight, "dec.bias"]})
    assert listed.names == ("all",) and len(listed.group_params("all")) == 6

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.body, self.head = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 3)
            self.head.weight = self.embed.weight

    tied = Tied()
    by_alias = partition_parameters(tied, {"head": ["head.weight", "head.bias"], "body": tied.body})
    assert by_alias.group_params("head")[0] is tied.embed.weight and by_alias.names == ("head", "body", "other")
    by_regex = partition_parameters(tied, {"head": r"^head\.", "body": tied.body}, strict=False)
    assert {id(p) for p in by_regex.group_params("head")} == {id(tied.embed.weight), id(tied.head.bias)}
