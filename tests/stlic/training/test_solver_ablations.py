"""Ablations as config fields: coupled arrangement (no refiner), the perceptual gradient's scale into the
main network, a frozen main network, D update ratio, lazy R1, spectral norm; each validated, and resumed exactly."""
from __future__ import annotations

import shutil

import pytest
import torch

from stlic_training_helpers import fast_config, training_records
from stlic.probe_target import STLICProbeTarget
from stlic.training.config import ConfigError
from stlic.training.solver import STLICSolver


@pytest.mark.parametrize("sections,message", [
    ({"arrangement": "decoupled"}, "arrangement: one of"),
    ({"phase": "rd", "arrangement": "coupled", "loss_weights": {"lpips": 0, "wasserstein": 0, "adversarial": 0}},
     "phase 'rd' has no perceptual losses"),
    ({"main_perceptual_scale": 1.5}, r"main_perceptual_scale: must be a number in \[0, 1\], got 1.5"),
    ({"main_perceptual_scale": -0.1}, r"main_perceptual_scale: must be a number in \[0, 1\]"),
    ({"arrangement": "coupled", "main_perceptual_scale": 0.5}, "main_perceptual_scale: only phase 'stlic' with"),
    ({"phase": "rd", "main_perceptual_scale": 0.0, "loss_weights": {"lpips": 0, "wasserstein": 0, "adversarial": 0}},
     "main_perceptual_scale: only phase 'stlic'"),
    ({"discriminator": {"updates_per_step": 0}}, "discriminator.updates_per_step: must be >= 1"),
    ({"discriminator": {"r1_gamma": -1.0}}, "discriminator.r1_gamma: must be >= 0"),
    ({"discriminator": {"r1_every": 0}}, "discriminator.r1_every: must be >= 1"),
    ({"discriminator": {"spectral_norm": "yes"}}, "discriminator.spectral_norm: expected bool"),
])
def test_bad_ablation_fields_are_named(sections, message):
    with pytest.raises(ConfigError, match=message):
        fast_config(**sections)


def test_coupled_puts_every_loss_on_the_decoder_output_and_leaves_the_refiner_untrained(photos):
    solver = STLICSolver(fast_config(arrangement="coupled"), data=[photos])
    refiner = {n: p.detach().clone() for n, p in solver.model.refiner.named_parameters()}
    trained = {id(p) for g in solver.optimizer.param_groups for p in g["params"]}
    assert not trained & {id(p) for p in solver.model.refiner.parameters()}
    out = solver.run_step(solver.next_batch())
    assert out.psnr_refined == out.psnr_decoded  # what the losses and D saw is x_hat itself
    assert out.losses["lpips"] > 0 and out.losses["wasserstein"] > 0 and out.disc_loss is not None
    assert out.weights["adversarial"] > 0
    for name, parameter in solver.model.refiner.named_parameters():
        assert torch.equal(parameter, refiner[name]), name


def test_the_probe_target_of_a_coupled_run_measures_the_main_network_only(photos):
    from gradbalance.targets.probe_loop import run_target

    target = STLICProbeTarget(solver=STLICSolver(fast_config(arrangement="coupled"), data=[photos]), description="")
    assert list(target.groups) == ["main"]
    table = run_target(target, steps=2, every=1).table()
    assert list(table.mean.columns) == ["main"]
    assert table.mean.loc[["lpips", "wasserstein", "adversarial"], "main"].gt(0).all()  # they reach the codec


def test_discriminator_updates_per_step_and_lazy_r1(photos):
    solver = STLICSolver(fast_config(discriminator={"updates_per_step": 3, "r1_gamma": 2.0, "r1_every": 2}),
                         data=[photos])
    r1 = [solver.run_step(solver.next_batch()).discriminator["r1"] for _ in range(3)]
    states = solver.adversarial.optimizer.state_dict()["state"].values()
    assert {int(state["step"]) for state in states} == {9}  # three D updates for each of three steps
    assert r1[0] > 0 and r1[1] == 0 and r1[2] > 0  # lazy: steps 0 and 2 of every 2


def _straight_and_resumed(config, tmp_path, photos):
    """Four steps straight, and two + a resume from the step-2 checkpoint + two; their logs must agree."""
    straight = STLICSolver(config, out_dir=tmp_path / "straight", data=[photos])
    straight.fit(2)
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    straight.fit(4)
    resumed = STLICSolver(config, out_dir=tmp_path / "resumed", data=[photos])
    assert resumed.resume() == 2
    resumed.fit(4)
    assert training_records(tmp_path / "resumed") == training_records(tmp_path / "straight")
    return straight, resumed


def test_spectral_norm_r1_and_two_updates_resume_exactly(tmp_path, photos):
    config = fast_config(checkpoint_every=2, discriminator={"spectral_norm": True, "updates_per_step": 2,
                                                            "r1_gamma": 1.0, "r1_every": 3})
    straight, resumed = _straight_and_resumed(config, tmp_path, photos)
    for (name, a), (_, b) in zip(straight.adversarial.state_dict().items(), resumed.adversarial.state_dict().items()):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), name


def test_scale_gradient_is_the_identity_forward_and_scales_the_gradient():
    from stlic.models.stlic import scale_gradient

    x = torch.randn(2, 3, requires_grad=True)
    weight = torch.randn(2, 3)
    for scale in (1.0, 0.25, 0.0):
        x.grad = None
        y = scale_gradient(x, scale)
        assert torch.equal(y, x)
        if scale == 0.0:
            assert not y.requires_grad
            continue
        (y * weight).sum().backward()
        assert torch.equal(x.grad, weight * scale)


def _perceptual_gradients(photos, scale):
    """The raw gradients of each refiner-output loss in the main network and the refiner, on one step."""
    solver = STLICSolver(fast_config(main_perceptual_scale=scale), data=[photos])
    main, refiner = list(solver.model.main.parameters()), list(solver.model.refiner.parameters())
    grads = {}

    def backward(losses, weights):
        for name in ("lpips", "wasserstein", "adversarial", "l2"):
            grads[name] = [torch.autograd.grad(losses[name], params, retain_graph=True, allow_unused=True)
                           for params in (main, refiner)]
        sum(weights[n] * losses[n] for n in losses).backward()

    solver.run_step(solver.next_batch(), backward=backward)
    return grads


def _flat(grads):
    return torch.cat([torch.zeros(0)] + [g.flatten() for g in grads if g is not None])


def test_main_perceptual_scale_scales_only_what_the_refiner_losses_send_to_the_main_network(photos):
    full = _perceptual_gradients(photos, 1.0)
    for scale in (0.0, 0.5):
        scaled = _perceptual_gradients(photos, scale)
        for name in ("lpips", "wasserstein", "adversarial"):
            (full_main, full_refiner), (main, refiner) = full[name], scaled[name]
            assert _flat(full_main).abs().sum() > 0, name
            if scale == 0.0:  # no path at all: the probe reports these cells as absent
                assert all(g is None for g in main), (scale, name)
            else:  # same seed, batch and weights: exactly s times the gradient
                torch.testing.assert_close(_flat(main), _flat(full_main) * scale, rtol=1e-6, atol=1e-12)
            torch.testing.assert_close(_flat(refiner), _flat(full_refiner), rtol=0, atol=0)
        # distortion untouched
        torch.testing.assert_close(_flat(scaled["l2"][0]), _flat(full["l2"][0]), rtol=0, atol=0)


@pytest.mark.parametrize("sections,message", [
    ({"freeze_main": "yes"}, "freeze_main: expected bool"),
    ({"freeze_main": True, "arrangement": "coupled"}, "freeze_main: only phase 'stlic' with arrangement semi_decoupled"),
    ({"freeze_main": True, "main_perceptual_scale": 0.0}, "freeze_main: the frozen main network takes no gradient"),
])
def test_bad_freeze_main_is_named(sections, message):
    with pytest.raises(ConfigError, match=message):
        fast_config(**sections)


def test_freeze_main_trains_the_refiner_alone_and_leaves_the_codec_bit_exact(photos):
    solver = STLICSolver(fast_config(freeze_main=True), data=[photos])
    main = {n: p.detach().clone() for n, p in solver.model.main.named_parameters()}
    refiner = {n: p.detach().clone() for n, p in solver.model.refiner.named_parameters()}
    trained = {id(p) for g in solver.optimizer.param_groups for p in g["params"]}
    assert trained == {id(p) for p in solver.model.refiner.parameters()}
    for _ in range(2):
        out = solver.run_step(solver.next_batch())
    assert out.losses["lpips"] > 0 and out.disc_loss is not None
    for name, parameter in solver.model.main.named_parameters():  # quantiles included
        assert torch.equal(parameter, main[name]), name
        assert parameter.grad is None, name
    assert any(not torch.equal(p, refiner[n]) for n, p in solver.model.refiner.named_parameters())


def test_train_refuses_freeze_main_without_init(tmp_path, photos, capsys):
    import yaml

    from stlic.cli import main as stlic_main

    config = tmp_path / "frozen.yaml"
    config.write_text(yaml.safe_dump(fast_config(freeze_main=True).to_dict()))
    code = stlic_main(["train", "--config", str(config), "--data", str(photos), "--out", str(tmp_path / "run"),
                       "--steps", "1"])
    assert code == 2
    assert "freeze_main keeps the main network as --init loads it: pass --init" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_freeze_main_resumes_exactly_and_stays_frozen(tmp_path, photos):
    config = fast_config(checkpoint_every=2, freeze_main=True)
    main = {n: p.detach().clone() for n, p in STLICSolver(config, data=[photos]).model.main.named_parameters()}
    straight, resumed = _straight_and_resumed(config, tmp_path, photos)
    for name, parameter in resumed.model.main.named_parameters():
        assert torch.equal(parameter, main[name]), name
    for (name, a), (_, b) in zip(straight.model.refiner.state_dict().items(), resumed.model.refiner.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("sections,message", [
    ({"refined_distortion": 1.5}, r"refined_distortion: must be a number in \[0, 1\], got 1.5"),
    ({"refined_distortion": -0.5}, r"refined_distortion: must be a number in \[0, 1\]"),
    ({"refined_distortion": 0.5, "arrangement": "coupled"}, "refined_distortion: only phase 'stlic' with"),
    ({"refined_distortion": 0.5, "phase": "rd", "loss_weights": {"lpips": 0, "wasserstein": 0, "adversarial": 0}},
     "refined_distortion: only phase 'stlic'"),
])
def test_bad_refined_distortion_is_named(sections, message):
    with pytest.raises(ConfigError, match=message):
        fast_config(**sections)


def _distortion_step(photos, **sections):
    """A batch, its output and losses after one training step, and the raw L2 gradient in the main
    network and the refiner (``()`` where nothing there requires a gradient)."""
    solver = STLICSolver(fast_config(**sections), data=[photos])
    solver.run_step(solver.next_batch())  # the refiner starts as the identity; one step moves it off
    x = solver.next_batch()
    output = solver.network(x, level=0.0, refine=True)
    losses = solver.objective(x, output)
    grads = []
    for module in (solver.model.main, solver.model.refiner):
        params = [p for p in module.parameters() if p.requires_grad]  # none of a frozen main network
        grads.append(torch.autograd.grad(losses["l2"], params, retain_graph=True, allow_unused=True)
                     if params and losses["l2"].requires_grad else ())
    return x, output, losses, grads


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_refined_distortion_measures_that_share_of_l1_l2_on_the_refined_output(photos, share):
    x, output, losses, (main, refiner) = _distortion_step(photos, refined_distortion=share)
    x_hat, x_ref = output.x_hat.detach(), output.x_refined.detach()
    assert not torch.equal(x_hat, x_ref)  # the refiner changes its input, so the share is visible
    for name, loss in (("l2", lambda a: (a - x).pow(2).mean()), ("l1", lambda a: (a - x).abs().mean())):
        expected = (1 - share) * loss(x_hat) + share * loss(x_ref)
        torch.testing.assert_close(losses[name].detach(), expected, rtol=1e-6, atol=0)
    assert (_flat(refiner).abs().sum() > 0) == (share > 0)  # paper (0): L2 never reaches the refiner
    assert _flat(main).abs().sum() > 0  # through x_hat, directly or via the refiner


def test_refined_distortion_is_the_refiner_s_pixel_anchor_under_a_frozen_main_network(photos):
    _, _, _, (main, refiner) = _distortion_step(photos, freeze_main=True, refined_distortion=0.5)
    assert main == ()
    assert _flat(refiner).abs().sum() > 0
    _, _, losses, _ = _distortion_step(photos, freeze_main=True)
    assert not losses["l2"].requires_grad  # paper's arrangement, frozen codec: no pixel loss trains anything
