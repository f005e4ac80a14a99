"""Shared set-up for the loss tests."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def single_torch_thread():
    """One intra-op thread per test process: under ``pytest -n 2`` on two cores, two threads per
    worker oversubscribe the CPU and small ops stall in the thread pool (seen: 10x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
