"""Size and memory limits are checked before coding (stlic/codec/codec.py, stlic/codec/memory.py).

An image ``compress`` accepts is one ``decompress`` accepts (random sizes around a pixel limit),
an image over the decoder's limit is refused before encoding, and under a real ``ulimit -v`` a
call whose estimate does not fit is one line naming the image size and the remedy, before the
networks run; an allocation that fails anyway is the same kind of line.
"""
from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from stlic.codec.codec import compress_image, decompress_image
from stlic.codec.memory import coding_memory
from stlic.models import PRESETS

ROOT = Path(__file__).resolve().parents[3]


def test_compress_accepts_exactly_what_decompress_accepts(coding_model):
    rng = random.Random(0)
    limit = 40 * 40
    for _ in range(12):
        height, width = rng.randrange(1, 80), rng.randrange(1, 80)
        image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(height * 100 + width))
        try:
            data = compress_image(coding_model, image, 1.0, max_pixels=limit)
        except ValueError as error:
            assert height * width > limit
            assert f"image of {width}x{height} = {height * width} pixels exceeds the decoder's limit of {limit}" \
                in str(error)
            continue
        assert height * width <= limit
        assert decompress_image(coding_model, data, max_pixels=limit).x_hat.shape[-2:] == (height, width)


def test_the_default_limit_is_the_decoders():
    """A 6000x5700 photo (the issue's) is over 2^25 pixels: refused before any network runs."""
    model = torch.nn.Linear(1, 1)  # never called: the size check comes first
    model.rate_lambdas = (1.0, 2.0)
    with pytest.raises(ValueError, match="6000x5700 = 34200000 pixels exceeds the decoder's limit of 33554432"):
        compress_image(model, torch.zeros(3, 1, 1).expand(3, 5700, 6000), 0.0)  # a view: no 410 MB


def test_the_estimate_grows_with_pixels_and_widths():
    tiny, full = PRESETS["tiny"], PRESETS["full"]
    assert coding_memory(tiny, 64, 64) == coding_memory(tiny, 1, 1)  # padded to 64 x 64
    assert coding_memory(tiny, 128, 128) == pytest.approx(4 * coding_memory(tiny, 64, 64), abs=4)
    assert coding_memory(full, 512, 512) > coding_memory(tiny, 512, 512)
    assert coding_memory(full, 512, 512, decode=True) > coding_memory(full, 512, 512)
    assert coding_memory(full, 512, 512, decode=True, refine=False) == coding_memory(full, 512, 512)


CHILD = textwrap.dedent("""
    import resource, sys, torch
    from stlic.cli import main
    from stlic.codec.memory import _status_bytes
    headroom = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (_status_bytes("VmSize") + headroom, resource.RLIM_INFINITY))
    if sys.argv[2] == "allocate":  # a failure the estimate did not foresee: the guard's second line of defence
        from stlic.codec.memory import memory_guard
        from stlic.models import PRESETS
        with memory_guard("compress", PRESETS["tiny"], 70, 90, torch.device("cpu")):
            torch.empty(8 * headroom, dtype=torch.uint8)
    sys.exit(main(sys.argv[2:]))
""")


def _run_limited(headroom: int, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, str(headroom), *argv], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def large_image(tmp_path_factory, coding_model):
    """A 2000x1500 image (its tiny-model encode needs about 1 GB) and the checkpoint to code it."""
    from stlic.checkpoints import save_model_checkpoint
    from stlic.codec.image_io import write_image

    folder = tmp_path_factory.mktemp("limits")
    write_image(folder / "big.png", torch.rand(3, 1500, 2000, generator=torch.Generator().manual_seed(0)))
    save_model_checkpoint(folder / "model.pt", coding_model, coding_model.config)
    return folder


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ulimit -v and /proc are Linux's")
def test_an_image_that_does_not_fit_is_refused_before_the_work(large_image, coding_model):
    needed = coding_memory(coding_model.config, 1500, 2000)
    headroom = needed // 3  # loading the model and reading the image fit; encoding does not
    out = large_image / "big.stlic"
    result = _run_limited(headroom, "compress", str(large_image / "big.png"), str(out),
                          "--checkpoint", str(large_image / "model.pt"), "--rate-level", "0")
    lines = [line for line in result.stderr.splitlines() if line.startswith("stlic compress:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("stlic compress: error: not enough memory to compress a "
                                                   "2000x1500 image on cpu: it needs about "), result.stderr
    assert "available; free memory" in lines[0] and "downscaled or cropped copy" in lines[0]
    assert not out.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ulimit -v and /proc are Linux's")
def test_an_allocation_failure_is_one_line_naming_the_image():
    result = _run_limited(200_000_000, "allocate")
    assert result.returncode != 0
    assert "NotEnoughMemoryError: ran out of memory to compress a 90x70 image on cpu (estimated need about" \
        in result.stderr, result.stderr
