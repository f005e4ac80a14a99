"""Model checkpoint file: exact round trip (CDF tables included), atomic write, clear errors."""
import pytest
import torch

from stlic.checkpoints import load_model_checkpoint, save_model_checkpoint, weights_digest
from stlic.codec.fingerprint import model_fingerprint
from stlic.models import PRESETS, STLIC


@pytest.fixture(scope="module")
def saved(coding_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_model_checkpoint(path, coding_model, coding_model.config, extra={"step": 7, "note": "test"})
    return path


def test_round_trip_restores_every_tensor_and_the_fingerprint(coding_model, saved):
    model, config, extra = load_model_checkpoint(saved)
    assert config == coding_model.config == PRESETS["tiny"]
    assert extra == {"step": 7, "note": "test"}
    assert not model.training
    expected = coding_model.state_dict()
    loaded = model.state_dict()
    assert sorted(loaded) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(loaded[name], tensor), name
    # the CDF tables built by update() came along: same fingerprint, files interchange
    assert model_fingerprint(model) == model_fingerprint(coding_model)


def test_write_is_atomic_and_weights_only_loadable(saved):
    assert [p.name for p in saved.parent.iterdir()] == ["model.pt"]  # no temporary left behind
    payload = torch.load(saved, weights_only=True)
    assert payload["format"] == "stlic-model" and payload["model_name"] == "stlic"
    assert isinstance(payload["model_config"], dict)


def test_extra_must_be_weights_only_loadable(coding_model, tmp_path):
    with pytest.raises(TypeError, match="extra.when is a object"):
        save_model_checkpoint(tmp_path / "x.pt", coding_model, coding_model.config, extra={"when": object()})
    assert not list(tmp_path.iterdir())


def _resave(saved, tmp_path, **changes):
    payload = torch.load(saved, weights_only=True)
    payload.update(changes)
    if "state_dict" in changes:  # a deliberate edit, not corruption: store its checksum
        payload["weights_sha256"] = weights_digest(payload["state_dict"])
    path = tmp_path / "changed.pt"
    torch.save(payload, path)
    return path


def test_clear_errors(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match="is not a model checkpoint"):
        load_model_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no format marker"):
        load_model_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="holds model 'elic'"):
        load_model_checkpoint(_resave(saved, tmp_path, model_name="elic"))
    with pytest.raises(ValueError, match="format version 99"):
        load_model_checkpoint(_resave(saved, tmp_path, format_version=99))


def test_config_state_mismatch_names_the_keys(saved, tmp_path):
    payload = torch.load(saved, weights_only=True)
    config = dict(payload["model_config"], refiner_depth=3)  # one more UNet level than stored
    with pytest.raises(ValueError, match=r"missing keys \['refiner.down.2"):
        load_model_checkpoint(_resave(saved, tmp_path, model_config=config))
    config = dict(payload["model_config"], refiner_channels=4)
    with pytest.raises(ValueError, match=r"shape mismatch .*refiner.down.0.0.bias: checkpoint \(16,\) vs model \(8,\)"):
        load_model_checkpoint(_resave(saved, tmp_path, model_config=config))
    state = dict(payload["state_dict"], stray=torch.zeros(1))
    with pytest.raises(ValueError, match=r"unexpected keys \['stray'\]"):
        load_model_checkpoint(_resave(saved, tmp_path, state_dict=state))


def test_fresh_model_loads_a_checkpoint_saved_after_update(tmp_path):
    """CDF buffers change size in update(); a never-updated model's file loads too."""
    torch.manual_seed(3)
    fresh = STLIC("tiny")
    save_model_checkpoint(tmp_path / "fresh.pt", fresh, fresh.config)
    model, _, extra = load_model_checkpoint(tmp_path / "fresh.pt")
    assert extra == {}
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
