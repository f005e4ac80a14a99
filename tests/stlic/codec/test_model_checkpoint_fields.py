"""Fuzz of a model.pt's fields: every edited model_config field, an unknown or missing field and a
non-mapping extra is an error naming the file and the field (stlic/checkpoints.py, ModelConfig)."""
import dataclasses
import random

import pytest
import torch

from stlic.checkpoints import load_model_checkpoint, save_model_checkpoint
from stlic.cli import main
from stlic.models import ModelConfig

#: values of the wrong kind for any field (a field's own kind is filtered out below)
WRONG = ["abc", 2.5, True, None, [], [[1, 2]], -3, {"a": 1}, [1.5, 2.0], "16,16,24,32"]


@pytest.fixture(scope="module")
def saved(coding_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("fields") / "model.pt"
    save_model_checkpoint(path, coding_model, coding_model.config)
    return path


def _edited(saved, tmp_path, edit):
    payload = torch.load(saved, weights_only=True)
    edit(payload)
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    return path


def _cases(seed=0):
    rng = random.Random(seed)
    fields = [f.name for f in dataclasses.fields(ModelConfig)]
    cases = [(name, value) for name in fields for value in rng.sample(WRONG, 4)]
    return [(name, value) for name, value in cases if (name, value) != ("rate_lambdas", [1.5, 2.0])]  # valid


@pytest.mark.parametrize("field, value", _cases(), ids=lambda v: repr(v))
def test_a_wrong_kind_of_value_names_the_file_and_the_field(saved, tmp_path, field, value):
    path = _edited(saved, tmp_path, lambda payload: payload["model_config"].__setitem__(field, value))
    with pytest.raises(ValueError) as error:
        load_model_checkpoint(path)
    message = str(error.value)
    assert str(path) in message and f"field {field} " in message and "invalid model_config" in message, message


def test_a_string_where_widths_belong_says_what_the_field_must_be(saved, tmp_path):
    """The issue's case: used to say 'transform_channels needs 4 widths and transform_depths 3 depths'."""
    path = _edited(saved, tmp_path, lambda payload: payload["model_config"].__setitem__("transform_channels", "abcd"))
    with pytest.raises(ValueError, match=r"field transform_channels must be a list of 4 integers >= 1, got 'abcd'"):
        load_model_checkpoint(path)


def test_unknown_and_missing_fields_say_another_version_wrote_the_file(saved, tmp_path, capsys):
    path = _edited(saved, tmp_path, lambda payload: payload["model_config"].__setitem__("bogus", 1))
    with pytest.raises(ValueError, match=rf"'{path}' was written by another version of stlic: .*unknown field\(s\) \['bogus'\]"):
        load_model_checkpoint(path)
    path = _edited(saved, tmp_path, lambda payload: payload["model_config"].pop("hyper_depth"))
    with pytest.raises(ValueError, match=r"another version of stlic: its model_config lacks the field\(s\) \['hyper_depth'\]"):
        load_model_checkpoint(path)
    image = tmp_path / "in.png"
    from stlic.codec.image_io import write_image

    write_image(image, torch.rand(3, 8, 8))
    assert main(["compress", str(image), str(tmp_path / "o.stlic"), "--checkpoint", str(path), "--rate-level", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "hyper_depth" in err[0]


def test_a_non_mapping_extra_names_the_field(saved, tmp_path):
    path = _edited(saved, tmp_path, lambda payload: payload.__setitem__("extra", "step 7"))
    with pytest.raises(ValueError, match=rf"'{path}': field extra must be a mapping"):
        load_model_checkpoint(path)
