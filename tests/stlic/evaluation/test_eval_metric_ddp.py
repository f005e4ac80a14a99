"""Metric states reduced across two gloo ranks equal the single-process result on all data."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from stlic.evaluation.functional import fid_from_features
from stlic.evaluation.metrics import FIDMetric, PSNRMetric

DIM = 6


def _data():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(40, DIM, generator=g, dtype=torch.float64)
    fake = torch.randn(30, DIM, generator=g, dtype=torch.float64) * 1.3 + 0.2
    x = torch.rand(4, 3, 8, 8, generator=g)
    return real, fake, x, (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def _worker(rank: int, store: str, result_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    real, fake, x, y = _data()
    fid, psnr = FIDMetric(feature_dim=DIM, min_patches=2), PSNRMetric()
    fid.update_features(real[rank::2], real=True)  # uneven split of the fake set below
    fid.update_features(fake[:7] if rank == 0 else fake[7:], real=False)
    psnr.update(x[rank:rank + 1] if rank == 0 else x[1:], y[rank:rank + 1] if rank == 0 else y[1:])
    values = torch.tensor([fid.reduce().compute().fid, *psnr.reduce().compute()[:2]], dtype=torch.float64)
    if rank == 0:
        torch.save(values, result_file)
    dist.barrier()  # no rank tears gloo down while another is still in a collective
    dist.destroy_process_group()


def test_two_rank_reduce_equals_single_process(tmp_path):
    result_file = tmp_path / "result.pt"
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(result_file)), nprocs=2, join=True)
    fid, mean_psnr, pooled_psnr = torch.load(result_file, weights_only=True).tolist()
    real, fake, x, y = _data()
    reference = PSNRMetric()
    reference.update(x, y)
    assert fid == pytest.approx(fid_from_features(real, fake), rel=1e-9)
    assert mean_psnr == pytest.approx(reference.compute().mean_psnr, rel=1e-12)
    assert pooled_psnr == pytest.approx(reference.compute().pooled_psnr, rel=1e-12)
