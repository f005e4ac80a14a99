"""`stlic eval` evaluates every image it can (stlic/evaluation/evaluate.py, LPIPSMetric padding).

A folder of hostile sizes (1x1, 3x500, 500x3, 2x2, sides just under and over the LPIPS network's
smallest, random small sizes), a broken file and an image over the decoder's pixel limit: every
image ``compress`` accepts gets a row with finite PSNR and LPIPS, the others are skipped with a
warning naming them, and the summary says how many were evaluated and skipped. The LPIPS of the
1x1 image is checked against the distance of two constant images (independent of the padding code).
"""
from __future__ import annotations

import csv
import json
import math
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

from stlic.checkpoints import save_model_checkpoint
from stlic.cli import main
from stlic.codec.codec import compress_image, decompress_image
from stlic.codec.image_io import read_image, write_image
from stlic.evaluation.lpips_metric import make_lpips_metric
from stlic.models import STLIC

ROOT = Path(__file__).resolve().parents[3]


def _sizes(seed: int = 0):
    rng = random.Random(seed)
    fixed = [(1, 1), (3, 500), (500, 3), (2, 2), (17, 40), (18, 18), (21, 70), (64, 64)]
    return fixed + [(rng.randrange(1, 40), rng.randrange(1, 40)) for _ in range(3)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_small")
    torch.manual_seed(0)
    model = STLIC("tiny").eval()
    model.update(force=True)
    save_model_checkpoint(root / "tiny.pt", model, model.config)
    folder = root / "images"
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    for height, width in _sizes():
        write_image(folder / f"img_{height}x{width}.png", torch.rand(3, height, width, generator=generator))
    (folder / "broken.png").write_bytes(b"not a PNG")
    Image.new("L", (5800, 5800)).save(folder / "huge.png")  # 33.6 MP: over the decoder's 2^25 pixels
    return root, folder, model


def test_every_image_compress_accepts_is_evaluated(setup, tmp_path, capsys):
    root, folder, model = setup
    out = tmp_path / "out"
    with pytest.warns(UserWarning) as caught:
        status = main(["eval", "--checkpoint", str(root / "tiny.pt"), "--data", str(folder), "--out", str(out),
                       "--no-fid", "--no-progress", "--rate-level", "1"])
    assert status == 0, capsys.readouterr().err
    with open(out / "per_image.csv") as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    for path in sorted(folder.iterdir()):
        try:
            compress_image(model, read_image(path), 1.0)
            accepted = True
        except ValueError:
            accepted = False
        assert (path.name in rows) == accepted, path.name
    assert len(rows) == len(_sizes())
    for row in rows.values():
        for key in ("psnr_refined", "psnr_decoder", "lpips_refined", "lpips_decoder"):
            assert math.isfinite(float(row[key])), (row["name"], key)
    warned = [str(w.message) for w in caught]
    assert any(m.startswith("skipped huge.png (5800x5800): image of 5800x5800 = 33640000 pixels exceeds") for m in warned)
    assert any("broken.png" in m for m in warned)
    summary = json.loads((out / "summary.json").read_text())
    total = len(_sizes()) + 2
    assert summary["num_images"] == len(_sizes()) and summary["num_skipped"] == 2
    assert f"({len(_sizes())} images, 2 skipped)" in (out / "table3.md").read_text()
    assert summary["notes"][0] == f"evaluated {len(_sizes())} of {total} image(s), skipped 2"
    assert any("computed on edge-padded copies" in note for note in summary["notes"])
    assert f"note: evaluated {len(_sizes())} of {total} image(s), skipped 2" in capsys.readouterr().out

    # LPIPS of the 1x1 image: the distance of two constant images at the network's smallest size
    metric = make_lpips_metric()
    side = metric.min_side()
    x = read_image(folder / "img_1x1.png")
    refined = decompress_image(model, compress_image(model, x, 1.0)).x_refined.clamp(0, 1)
    reference = metric.distance(x.reshape(1, 3, 1, 1).expand(1, 3, side, side).contiguous(),
                                refined.reshape(1, 3, 1, 1).expand(1, 3, side, side).contiguous())
    assert float(rows["img_1x1.png"]["lpips_refined"]) == pytest.approx(float(reference.mean()), rel=1e-5)


def test_min_side_is_the_smallest_size_the_network_takes():
    metric = make_lpips_metric()
    side = metric.min_side()
    metric.distance(torch.zeros(1, 3, side, side), torch.zeros(1, 3, side, side))
    with pytest.raises((RuntimeError, ValueError)):
        metric.distance(torch.zeros(1, 3, side - 1, side - 1), torch.zeros(1, 3, side - 1, side - 1))


def test_a_folder_of_images_none_can_code_is_one_line(setup, tmp_path, capsys):
    root, _, _ = setup
    folder = tmp_path / "huge_only"
    folder.mkdir()
    Image.new("L", (5800, 5800)).save(folder / "huge.png")
    with pytest.warns(UserWarning, match="skipped huge.png"):
        status = main(["eval", "--checkpoint", str(root / "tiny.pt"), "--data", str(folder), "--out",
                       str(tmp_path / "out"), "--no-fid", "--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("stlic eval: error:")]
    assert status == 2 and len(err) == 1 and "can be coded; the last skipped huge.png" in err[0]
    assert not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ulimit -v and /proc are Linux's")
def test_an_image_that_does_not_fit_in_memory_is_skipped_not_fatal(setup, tmp_path):
    """Under a real ``ulimit -v``: the 2400x2400 image (about 1.9 GB to encode with the tiny model)
    is skipped with a warning naming it; the small one is evaluated."""
    root, _, _ = setup
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_image(folder / "big.png", torch.rand(3, 2400, 2400, generator=torch.Generator().manual_seed(0)))
    write_image(folder / "small.png", torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(1)))
    child = textwrap.dedent("""
        import resource, sys
        from stlic.cli import main
        from stlic.codec.memory import _status_bytes
        resource.setrlimit(resource.RLIMIT_AS, (_status_bytes("VmSize") + 1_000_000_000, resource.RLIM_INFINITY))
        sys.exit(main(sys.argv[1:]))
    """)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-c", child, "eval", "--checkpoint", str(root / "tiny.pt"), "--data",
                             str(folder), "--out", str(out), "--no-fid", "--no-progress"], capture_output=True,
                            text=True, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "stlic eval: warning: skipped big.png (2400x2400): not enough memory to compress a 2400x2400 image" \
        in result.stderr
    with open(out / "per_image.csv") as handle:
        assert [row["name"] for row in csv.DictReader(handle)] == ["small.png"]
    assert json.loads((out / "summary.json").read_text())["notes"][0] == "evaluated 1 of 2 image(s), skipped 1"
