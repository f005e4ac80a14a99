"""Phase 1 (rate-distortion pretraining of the main network) and ``--init`` from trained weights."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from stlic_training_helpers import fast_config, write_photos
from stlic.checkpoints import save_model_checkpoint
from stlic.models.lalic_keys import ours_to_official
from stlic.training.config import ConfigError
from stlic.training.initialize import init_main_network
from stlic.training.solver import STLICSolver

RD = {"phase": "rd", "loss_weights": {"l1": 0.0, "lpips": 0.0, "wasserstein": 0.0, "adversarial": 0.0}}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photos(tmp_path_factory.mktemp("rd") / "photos")


def test_phase_rd_refuses_perceptual_weights():
    with pytest.raises(ConfigError, match=r"phase 'rd'.*\['lpips'"):
        fast_config(phase="rd", loss_weights={"l1": 0.0, "wasserstein": 0.0, "adversarial": 0.0})
    with pytest.raises(ConfigError, match="phase: one of"):
        fast_config(phase="perceptual")


def test_phase_rd_trains_the_main_network_only(photos):
    solver = STLICSolver(fast_config(**RD), data=[photos])
    assert not hasattr(solver.objective, "perceptual")  # no VGG built
    refiner_before = {k: v.clone() for k, v in solver.model.refiner.state_dict().items()}
    main_before = {k: v.clone() for k, v in solver.model.main.state_dict().items()}
    out = solver.run_step(solver.next_batch())
    assert out.losses["lpips"] == out.losses["wasserstein"] == out.losses["adversarial"] == 0.0
    assert out.disc_loss is None and out.psnr_refined == out.psnr_decoded
    assert all(p.grad is None for p in solver.model.refiner.parameters())
    assert all(torch.equal(v, refiner_before[k]) for k, v in solver.model.refiner.state_dict().items())
    changed = [k for k, v in solver.model.main.state_dict().items() if not torch.equal(v, main_before[k])]
    assert any(k.startswith("g_a.") for k in changed) and any(k.startswith("g_s.") for k in changed)
    trained = {id(p) for group in solver.optimizer.param_groups for p in group["params"]}
    assert not trained & {id(p) for p in solver.model.refiner.parameters()}


def _perturbed_main(solver, seed=3):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in solver.model.main.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.01)
    return {k: v.clone() for k, v in solver.model.main.state_dict().items()}


def _fresh_phase2(photos):
    return STLICSolver(fast_config(), data=[photos])


def _assert_main_equal(solver, expected):
    state = solver.model.main.state_dict()
    for key, value in expected.items():
        if "_cdf" in key or "_offset" in key or "scale_table" in key:
            continue  # CDF tables are rebuilt by update()
        assert torch.equal(state[key], value), key


def test_init_from_model_file_loads_main_and_keeps_identity_refiner(photos, tmp_path):
    source = STLICSolver(fast_config(**RD), data=[photos])
    expected = _perturbed_main(source)
    path = save_model_checkpoint(tmp_path / "model.pt", source.model, source.model_config)
    target = _fresh_phase2(photos)
    report = init_main_network(target.model, path)
    assert report.kind == "stlic-model" and report.loaded > 0 and not report.missing
    assert all(k.startswith("refiner.") for k in report.unused)  # the refiner restarts as the identity
    _assert_main_equal(target, expected)
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(target.model.refiner(x), x)


def test_init_from_training_checkpoint(photos, tmp_path):
    source = STLICSolver(fast_config(**RD), data=[photos], out_dir=tmp_path)
    expected = _perturbed_main(source)
    path = source.save_checkpoint()
    target = _fresh_phase2(photos)
    report = init_main_network(target.model, path)
    assert report.kind == "stlic-training"
    _assert_main_equal(target, expected)
    assert target.step == 0 and not target.optimizer.state  # fresh optimizer


def test_init_from_official_lalic_layout(photos, tmp_path):
    source = STLICSolver(fast_config(**RD), data=[photos])
    expected = _perturbed_main(source)
    official = {ours_to_official(k): v for k, v in source.model.main.state_dict().items()
                if ours_to_official(k) is not None}
    official["some.unknown.key"] = torch.zeros(1)
    torch.save({"state_dict": official}, tmp_path / "lalic.pth")
    target = _fresh_phase2(photos)
    report = init_main_network(target.model, tmp_path / "lalic.pth")
    assert report.kind == "lalic-official" and "some.unknown.key" in report.unused
    assert any("gain" in k for k in report.missing)  # QVRF gains: not in the official model
    _assert_main_equal(target, {k: v for k, v in expected.items() if "gain" not in k})


def test_init_refuses_other_files(tmp_path):
    model = fast_config().model_config()
    from stlic.models import STLIC

    net = STLIC(model)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        init_main_network(net, tmp_path / "junk.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no key matched"):
        init_main_network(net, tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        init_main_network(net, tmp_path / "missing.pt")


def test_train_help_offers_init():
    result = subprocess.run([sys.executable, "-m", "stlic", "train", "--help"], capture_output=True, text=True,
                            check=True)
    assert "--init" in result.stdout


def test_train_refuses_init_with_resume(tmp_path):
    result = subprocess.run([sys.executable, "-m", "stlic", "train", "--config", "stlic_tiny", "--out",
                             str(tmp_path / "run"), "--resume", "--init", str(tmp_path / "x.pt")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "cannot be combined with --resume" in result.stderr
    assert "Traceback" not in result.stderr
