"""Suite-wide set-up.

One intra-op thread per test process, for the process and the CLIs it starts: ``pytest -n 2`` on
two cores already uses both, and a second thread per worker oversubscribes the CPU so that small
ops stall in the thread pool (measured here: a tiny ST-LIC step 0.7 s with one thread, 4-17 s with
two under load).
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run whenever CUDA is available and are skipped otherwise."""
    import pytest

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none available)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
