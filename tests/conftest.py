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


import pytest  # noqa: E402
from pathlib import Path  # noqa: E402


@pytest.fixture
def unreadable_file(tmp_path) -> Path:
    """A file that cannot be read: mode 000, or for root (who reads anything) /proc/self/mem,
    whose first bytes fail to read (EIO) for every user."""
    path = tmp_path / "unreadable.bin"
    path.write_bytes(b"\x00" * 64)
    path.chmod(0)
    if not os.access(path, os.R_OK):
        return path
    try:
        with open("/proc/self/mem", "rb") as handle:
            handle.read(16)
    except OSError:
        return Path("/proc/self/mem")
    pytest.skip("no unreadable file can be made here")


@pytest.fixture
def readonly_folder(tmp_path) -> Path:
    """A folder no file can be created in: mode 555, or for root /sys (sysfs refuses new files)."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        return folder
    try:
        open("/sys/.stlic-write-probe", "wb").close()
    except OSError:
        return Path("/sys")
    Path("/sys/.stlic-write-probe").unlink()
    pytest.skip("no read-only folder can be made here")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run whenever CUDA is available and are skipped otherwise."""
    import pytest

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none available)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
