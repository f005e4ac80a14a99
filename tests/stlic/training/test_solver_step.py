"""One solver step: gradient routing (distortion -> codec only), typed output, parameter groups."""
from __future__ import annotations

import math

import pytest
import torch

from stlic_training_helpers import fast_config
from stlic.training.config import LOSS_NAMES
from stlic.training.objective import weighted_total
from stlic.training.solver import STLICSolver


@pytest.fixture(scope="module")
def solver(tmp_path_factory):
    from stlic_training_helpers import write_photos

    photos = write_photos(tmp_path_factory.mktemp("step") / "photos")
    return STLICSolver(fast_config(), data=[photos])


def _grad_norms(loss, modules):
    params = [[p for p in m.parameters() if p.requires_grad] for m in modules]
    flat = [p for group in params for p in group]
    grads = torch.autograd.grad(loss, flat, retain_graph=True, allow_unused=True)
    norms, offset = [], 0
    for group in params:
        chunk = grads[offset:offset + len(group)]
        offset += len(group)
        norms.append(math.sqrt(sum(float(g.pow(2).sum()) for g in chunk if g is not None)))
    return norms


def test_refiner_gets_only_perceptual_gradients(solver):
    model = solver.model
    seen = {}

    def routing_backward(losses, weights):
        for name in LOSS_NAMES:
            seen[name] = _grad_norms(losses[name], (model.main, model.refiner))
        (weights["l1"] * losses["l1"] + weights["l2"] * losses["l2"]).backward()

    solver.run_step(solver.next_batch(), backward=routing_backward)
    for name in ("rate", "l2", "l1"):
        main, refiner = seen[name]
        assert main > 0 and refiner == 0, name
    for name in ("lpips", "wasserstein", "adversarial"):
        main, refiner = seen[name]
        assert main > 0 and refiner > 0, name
    # the step's backward only held l1 + l2: every refiner .grad is None or zero
    assert all(p.grad is None or not p.grad.any() for p in model.refiner.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.main.parameters())


def test_step_output_is_consistent(solver):
    captured = {}

    def recording_backward(losses, weights):
        captured.update(losses={k: float(v.detach()) for k, v in losses.items()}, weights=dict(weights))
        weighted_total(losses, weights).backward()

    before = solver.step
    out = solver.run_step(solver.next_batch(), backward=recording_backward)
    assert out.step == before + 1 == solver.step
    assert out.losses == captured["losses"] and out.weights == captured["weights"]
    low, high = solver.config.loss_weights.rate
    assert low <= out.lambda_rate <= high and out.weights["rate"] == out.lambda_rate
    assert out.level == solver.model.level_for_lambda(out.lambda_rate)
    assert out.total == pytest.approx(sum(out.weights[k] * out.losses[k] for k in LOSS_NAMES), rel=1e-9)
    assert out.bpp == out.losses["rate"] and out.gen_loss == out.losses["adversarial"]
    assert 0 < out.d_real < 1 and 0 < out.d_fake < 1 and out.disc_loss > 0
    assert math.isfinite(out.psnr_decoded) and math.isfinite(out.psnr_refined) and out.lr == 1e-4
    for key in ("loss/lpips", "weighted/wasserstein"):
        assert key in out.record()


def test_parameter_groups(solver):
    main_ids = {id(p) for g in solver.optimizer.param_groups for p in g["params"]}
    aux_ids = {id(p) for g in solver.aux_optimizer.param_groups for p in g["params"]}
    quantiles = {id(p) for n, p in solver.model.named_parameters() if n.endswith("quantiles")}
    assert quantiles and aux_ids == quantiles and not main_ids & quantiles
    expected = {id(p) for p in solver.model.parameters()} - quantiles
    assert main_ids == expected
    disc = {id(p) for p in solver.adversarial.discriminator.parameters()}
    assert {id(p) for g in solver.adversarial.optimizer.param_groups for p in g["params"]} == disc
    assert not disc & main_ids


def test_adversarial_warmup_skips_the_discriminator(tmp_path):
    from stlic_training_helpers import write_photos

    solver = STLICSolver(fast_config(schedule={"adversarial_start": 5}), data=[write_photos(tmp_path / "p")])
    before = [p.detach().clone() for p in solver.adversarial.discriminator.parameters()]
    out = solver.run_step(solver.next_batch())
    assert out.weights["adversarial"] == 0 and out.disc_loss is None and out.d_real is None
    after = list(solver.adversarial.discriminator.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_step_matches_fp32_losses(tmp_path, precision):
    from stlic_training_helpers import write_photos

    photos = write_photos(tmp_path / "p")
    reference = STLICSolver(fast_config(), data=[photos])
    batch = reference.next_batch()
    fp32 = reference.run_step(batch)
    mixed = STLICSolver(fast_config(precision=precision), data=[photos])
    out = mixed.run_step(batch)
    assert out.lambda_rate == fp32.lambda_rate  # same seed, same draw
    for name in ("rate", "l2", "l1", "lpips"):
        assert out.losses[name] == pytest.approx(fp32.losses[name], rel=0.05), name
    assert mixed.scaler.is_enabled() == (precision == "fp16")
    assert "scale" in mixed.state_dict()["scaler"] or precision == "bf16"


def test_bf16_autocast_keeps_the_entropy_model_in_float32(solver):
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = solver.model.main(x, level=1.0)
    assert out.x_hat.dtype == torch.bfloat16  # the transforms run in bf16
    assert all(v.dtype == torch.float32 for v in out.likelihoods.values()) and out.y_hat.dtype == torch.float32


def test_bf16_on_cpu_runs_vgg_and_discriminator_in_bf16_and_the_codec_in_fp32(tmp_path):
    """``precision: bf16`` on the CPU: the convolutions that carry the cost (VGG trunk, D) in bf16;
    the main network and refiner, which gain nothing from it there, in fp32."""
    from stlic_training_helpers import write_photos

    solver = STLICSolver(fast_config(precision="bf16"), data=[write_photos(tmp_path / "p")])
    seen = {}

    def record(name):
        def hook(module, args, out):
            seen.setdefault(name, out.dtype)  # returns None: the output is kept
        return hook

    solver.objective.perceptual.wasserstein.backbone.layers[0].register_forward_hook(record("vgg"))
    solver.model.refiner.register_forward_hook(record("refiner"))
    first_conv = next(m for m in solver.adversarial.discriminator.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(record("discriminator"))
    out = solver.run_step(solver.next_batch())
    assert seen == {"refiner": torch.float32, "vgg": torch.bfloat16, "discriminator": torch.bfloat16}
    assert all(math.isfinite(v) for v in out.losses.values())
