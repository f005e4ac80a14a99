"""`python -m stlic compress / decompress` end to end on a PNG with a saved tiny checkpoint."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from stlic.checkpoints import save_model_checkpoint
from stlic.codec.bitstream import parse_container
from stlic.codec.image_io import read_image, to_uint8, write_image


def _stlic(*args):
    return subprocess.run(
        [sys.executable, "-m", "stlic", *map(str, args)], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def files(coding_model, photo, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    save_model_checkpoint(root / "tiny.pt", coding_model, coding_model.config)
    write_image(root / "in.png", photo)
    return root


@pytest.mark.slow
def test_compress_decompress_round_trip(coding_model, files):
    done = _stlic("compress", files / "in.png", files / "out.stlic", "--checkpoint", files / "tiny.pt",
                  "--rate-level", "0.75")
    assert done.returncode == 0, done.stderr
    data = (files / "out.stlic").read_bytes()
    assert f"{len(data)} bytes" in done.stdout and "bpp" in done.stdout
    assert parse_container(data).level == 0.75

    for flag, field in (((), "x_refined"), (("--decoder-output",), "x_hat")):
        done = _stlic("decompress", files / "out.stlic", files / f"{field}.png", "--checkpoint",
                      files / "tiny.pt", *flag)
        assert done.returncode == 0, done.stderr
        # independent reference: the in-process deterministic decoder on the same PNG pixels
        expected = getattr(coding_model.reconstruct(read_image(files / "in.png")[None], 0.75), field)
        np.testing.assert_array_equal(np.asarray(Image.open(files / f"{field}.png")), to_uint8(expected))


@pytest.mark.slow
def test_compress_to_a_target_bpp(files):
    done = _stlic("compress", files / "in.png", files / "target.stlic", "--checkpoint", files / "tiny.pt",
                  "--target-bpp", "0.5", "--tolerance", "0.1")
    assert done.returncode == 0, done.stderr
    bpp = 8 * (files / "target.stlic").stat().st_size / (70 * 90)
    assert "rate search" in done.stdout and f"{bpp:.4f} bpp" in done.stdout
    assert bpp == pytest.approx(0.5, rel=0.1)


def test_errors_are_reported_without_traceback(files):
    (files / "garbage.stlic").write_bytes(b"\x89PNG not a bitstream")
    done = _stlic("decompress", files / "garbage.stlic", files / "g.png", "--checkpoint", files / "tiny.pt")
    assert done.returncode == 2
    assert "not an .stlic file" in done.stderr and "Traceback" not in done.stderr
    done = _stlic("compress", files / "in.png", files / "x.stlic", "--checkpoint", files / "missing.pt",
                  "--rate-level", "0")
    assert done.returncode == 2 and "does not exist" in done.stderr
