"""The coders behind `stlic eval`: JPEG at a target bpp, and the shared-reference LPIPS pass."""
import json

import pytest
import torch

from stlic.cli import main as stlic_main
from stlic.codec.image_io import read_image, write_image
from stlic.evaluation.coders import JPEG_QUALITIES, JpegCoder, jpeg_bytes
from stlic.evaluation.lpips_metric import make_lpips_metric
from stlic.paths import default_train_images, shared_data


def _photo() -> torch.Tensor:
    kodak = shared_data("kodak")
    paths = sorted(kodak.glob("*.png"))[:1] if kodak is not None else default_train_images()[:1]
    if not paths:
        pytest.skip("neither ../shared/data/kodak nor scikit-image's photographs are available")
    return read_image(paths[0])[:, :192, :256]


def _bpp(data: bytes, x: torch.Tensor) -> float:
    return 8 * len(data) / (x.shape[-2] * x.shape[-1])


@pytest.mark.parametrize("target", [0.4, 0.9, 2.0])
def test_jpeg_at_a_target_bpp_is_the_closest_quality_of_a_full_sweep(target):
    x = _photo()
    coded = JpegCoder(target_bpp=target).encode(x)
    sweep = {q: _bpp(jpeg_bytes(x, q), x) for q in range(JPEG_QUALITIES[0], JPEG_QUALITIES[1] + 1)}
    best = min(abs(rate - target) for rate in sweep.values())
    assert abs(_bpp(coded.data, x) - target) == pytest.approx(best)
    assert coded.data == jpeg_bytes(x, int(coded.level))
    assert coded.feasible == (best <= 0.02 * target)


def test_jpeg_under_its_lowest_rate_is_quality_one_and_off_target():
    x = _photo()
    coded = JpegCoder(target_bpp=0.001).encode(x)
    assert coded.level == 1.0 and not coded.feasible


@pytest.mark.parametrize("quality", [0, 96, 2.5, None])
def test_a_jpeg_quality_outside_pillow_s_range_is_refused(quality):
    with pytest.raises(ValueError, match="JPEG needs a target bpp or a quality"):
        JpegCoder(quality=quality)


def test_jpeg_decodes_to_both_outputs_the_same_image():
    x = _photo()
    coder = JpegCoder(quality=50)
    decoder, refined = coder.decode(coder.encode(x).data)
    assert decoder.shape == (1, *x.shape) and refined is decoder
    assert (decoder - x).abs().mean() < 0.05


def test_lpips_against_a_precomputed_reference_equals_the_full_pass():
    x = _photo().unsqueeze(0)
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    metric = make_lpips_metric("alex")
    full = metric.distance(y, x)
    shared = metric.update(y, x, metric.reference(x))
    assert torch.equal(shared.float(), full.float())
    tiny = torch.rand(1, 3, 8, 8)
    assert metric.reference(tiny) is None  # padding needed: update computes it all


def test_eval_jpeg_scores_both_outputs_alike_and_notes_an_unreached_target(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    write_image(folder / "a.png", _photo())
    out = tmp_path / "out"
    argv = ["eval", "--jpeg", "--target-bpp", "0.01", "--data", str(folder), "--out", str(out), "--no-fid",
            "--lpips-net", "alex", "--no-progress"]
    assert stlic_main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "JPEG (Pillow 4:2:0)"
    assert summary["outputs"]["decoder"] == summary["outputs"]["refined"]
    assert any("could not reach 0.01 bpp" in note for note in summary["notes"])
    capsys.readouterr()


def test_eval_needs_a_checkpoint_or_jpeg_and_jpeg_a_rate(tmp_path, capsys):
    with pytest.raises(SystemExit):
        stlic_main(["eval", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    folder = tmp_path / "images"
    folder.mkdir()
    write_image(folder / "a.png", _photo())
    assert stlic_main(["eval", "--jpeg", "--data", str(folder), "--out", str(tmp_path / "o"), "--no-fid"]) != 0
    assert "JPEG needs a target bpp or a quality" in capsys.readouterr().err
