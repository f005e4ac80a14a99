"""--device auto picks CUDA when available; a device that cannot be used is a clear error."""
import pytest
import torch

from stlic.cli import build_parser
from stlic.devices import resolve_device


def test_auto_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_unusable_devices_are_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="--device cuda:1 requested but CUDA is not available"):
        resolve_device("cuda:1")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="unsupported device 'meta'"):
        resolve_device("meta")


@pytest.mark.parametrize("command", ["train", "eval"])
def test_train_and_eval_default_to_auto(command):
    required = {"train": ["--out", "x"], "eval": ["--checkpoint", "c", "--data", "d", "--out", "o"]}[command]
    assert build_parser().parse_args([command, *required]).device == "auto"
