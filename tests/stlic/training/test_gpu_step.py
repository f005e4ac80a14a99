"""The training step on CUDA (fp32 and bf16) and `stlic eval --device cuda`."""
from __future__ import annotations

import pytest
import torch

from stlic_training_helpers import fast_config
from stlic.training.solver import STLICSolver

pytestmark = pytest.mark.gpu


def _first_step(photos, device, **config):
    solver = STLICSolver(fast_config(**config), device=device, data=[photos])  # seeds: same draws
    return solver, solver.run_step(solver.next_batch())


def test_fp32_step_on_cuda_matches_the_cpu_step(photos):
    _, cpu = _first_step(photos, "cpu")
    solver, cuda = _first_step(photos, "cuda")
    assert next(solver.model.parameters()).is_cuda and solver.channels_last
    assert cuda.lambda_rate == cpu.lambda_rate
    for name in ("l2", "l1", "lpips", "wasserstein", "adversarial"):  # rate: other noise on CUDA
        assert cuda.losses[name] == pytest.approx(cpu.losses[name], rel=1e-3), name


def test_bf16_step_on_cuda_keeps_the_fp32_losses(photos):
    _, fp32 = _first_step(photos, "cuda")
    _, bf16 = _first_step(photos, "cuda", precision="bf16")
    for name in ("l2", "l1", "lpips"):
        assert bf16.losses[name] == pytest.approx(fp32.losses[name], rel=0.05), name


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_unread_steps_never_synchronise_with_the_host(photos, precision):
    solver = STLICSolver(fast_config(precision=precision), device="cuda", data=[photos])
    batches = [solver.next_batch().pin_memory() for _ in range(3)]
    solver.run_step(batches[0])  # warm-up (allocator, lazy initialisation)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches[1:]:
            assert solver.run_step(batch, read=False) is None
    finally:
        torch.cuda.set_sync_debug_mode("default")
    solver.check_finite()


def test_eval_on_cuda_matches_eval_on_cpu(tmp_path, photos):
    from stlic.checkpoints import save_model_checkpoint
    from stlic.evaluation.evaluate import EvalOptions, evaluate
    from stlic.models import STLIC

    torch.manual_seed(0)
    model = STLIC("tiny").eval()
    model.update(force=True)
    checkpoint = save_model_checkpoint(tmp_path / "model.pt", model, model.config)
    results = {device: evaluate(checkpoint, photos, tmp_path / device,
                                EvalOptions(fid=False, progress=False, device=device)) for device in ("cpu", "cuda")}
    for cpu, cuda in zip(results["cpu"].images, results["cuda"].images):
        assert cuda.psnr_refined == pytest.approx(cpu.psnr_refined, abs=0.05)
        assert cuda.bpp == pytest.approx(cpu.bpp, rel=0.05, abs=0.01)
