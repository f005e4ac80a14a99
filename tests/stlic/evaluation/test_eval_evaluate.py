"""`stlic eval` end to end on a tiny untrained checkpoint, and its input errors."""
import csv
import json
import math
from pathlib import Path

import pytest
import torch

from stlic.checkpoints import save_model_checkpoint
from stlic.cli import main as stlic_main
from stlic.codec.image_io import read_image, write_image
from stlic.models.config import preset
from stlic.models.stlic import STLIC
from stlic.paths import default_train_images, shared_data


def _source_images() -> list[Path]:
    kodak = shared_data("kodak")
    if kodak is not None:
        return sorted(kodak.glob("*.png"))[:2]
    images = default_train_images()[:2]
    if len(images) < 2:
        pytest.skip("neither ../shared/data/kodak nor scikit-image's photographs are available")
    return images


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Two 256x256 crops (MS-SSIM needs >= 161 px; one FID/256 patch each) + one broken file."""
    folder = tmp_path_factory.mktemp("images")
    for path in _source_images():
        write_image(folder / f"{path.stem}.png", read_image(path)[:, :256, :256])
    (folder / "broken.png").write_bytes(b"this is not a PNG")
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = STLIC(preset("tiny")).eval()
    model.update(force=True)
    return save_model_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model, preset("tiny"))


@pytest.mark.slow
def test_eval_writes_csv_summary_table_and_figure(image_folder, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["eval", "--checkpoint", str(checkpoint), "--data", str(image_folder), "--out", str(out),
            "--rate-level", "1", "--figures", "1", "--fid-min-patches", "2", "--name", "tiny", "--no-progress"]
    with pytest.warns(UserWarning):  # broken.png skipped; FID over 2 patches is rank-deficient
        assert stlic_main(argv) == 0
    printed = capsys.readouterr().out
    assert "| tiny refined |" in printed and "| tiny decoder |" in printed

    with open(out / "per_image.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == sorted(p.name for p in image_folder.glob("kodim*.png")) or len(rows) == 2
    for row in rows:
        assert float(row["bpp"]) == pytest.approx(8 * int(row["bytes"]) / (256 * 256))
        assert float(row["level"]) == 1.0
        for key in ("psnr_refined", "ms_ssim_refined", "lpips_refined", "psnr_decoder"):
            assert math.isfinite(float(row[key]))

    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == 2 and summary["lpips_name"] == "ST-LPIPS(vgg)"
    refined = summary["outputs"]["refined"]
    assert refined["psnr"] == pytest.approx(sum(float(r["psnr_refined"]) for r in rows) / 2)
    assert refined["fid_patches"] == 2 and refined["fid"] >= 0
    assert any("broken.png" in note for note in summary["notes"])
    table = (out / "table3.md").read_text()
    assert "| Method | bpp | PSNR (dB) ↑ | MS-SSIM ↑ | ST-LPIPS(vgg) ↓ | FID/256 ↓ |" in table
    assert len(list((out / "figures").glob("*.png"))) == 1


def _eval(tmp_path, *args: str) -> int:
    return stlic_main(["eval", "--out", str(tmp_path / "out"), "--no-progress", *args])


def test_fid_on_too_few_patches_is_refused_before_coding(image_folder, tmp_path, capsys):
    with pytest.warns(UserWarning, match="broken.png"):
        code = _eval(tmp_path, "--checkpoint", str(tmp_path / "never_loaded.pt"), "--data", str(image_folder))
    assert code == 2
    assert "FID refused: 2 patches, fewer than the minimum of 100" in capsys.readouterr().err


def test_missing_and_empty_folders_are_clear_errors(tmp_path, capsys):
    assert _eval(tmp_path, "--checkpoint", "c.pt", "--data", str(tmp_path / "nowhere")) == 2
    assert "nowhere' does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert _eval(tmp_path, "--checkpoint", "c.pt", "--data", str(tmp_path / "empty"), "--no-fid") == 2
    assert "no readable images" in capsys.readouterr().err


def test_a_file_that_is_not_a_model_checkpoint_is_rejected(image_folder, tmp_path, capsys):
    other = tmp_path / "other_model.pt"
    torch.save({"format": "some-other-model", "state_dict": {}}, other)
    with pytest.warns(UserWarning, match="broken.png"):
        code = _eval(tmp_path, "--checkpoint", str(other), "--data", str(image_folder), "--no-fid")
    assert code == 2
    assert "is not an stlic-model checkpoint" in capsys.readouterr().err


def test_rate_level_and_target_bpp_are_exclusive(image_folder, tmp_path):
    with pytest.raises(SystemExit):
        _eval(tmp_path, "--checkpoint", "c.pt", "--data", str(image_folder), "--rate-level", "1", "--target-bpp", "0.2")


@pytest.mark.slow
def test_eval_target_bpp_on_a_small_image_notes_the_ms_ssim_fallback(checkpoint, tmp_path):
    from stlic.evaluation.evaluate import EvalOptions, evaluate

    folder = tmp_path / "small"
    folder.mkdir()
    write_image(folder / "small.png", read_image(_source_images()[0])[:, :64, :96])
    result = evaluate(checkpoint, folder, tmp_path / "out", EvalOptions(target_bpp=0.05, fid=False, progress=False))
    (image,) = result.images
    assert image.bpp == pytest.approx(8 * image.bytes / (64 * 96))
    assert 0.0 <= image.level <= STLIC(preset("tiny")).n_levels - 1
    assert math.isnan(image.ms_ssim_refined) and result.summary.outputs["refined"].ms_ssim is None
    assert result.summary.rate_level is None and result.summary.target_bpp == 0.05
    assert any("MS-SSIM skipped" in note for note in result.summary.notes)
    assert any("FID disabled" in note for note in result.summary.notes)


def test_eval_reports_each_image_and_keeps_the_partial_results_of_a_run_that_stops(
        image_folder, checkpoint, tmp_path, capsys, monkeypatch):
    import stlic.codec.codec as codec

    original, calls = codec.decompress_image, []

    def failing_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash on image 2")
        return original(*args, **kwargs)

    monkeypatch.setattr(codec, "decompress_image", failing_on_the_second)
    out = tmp_path / "out"
    with pytest.warns(UserWarning):  # broken.png skipped
        status = stlic_main(["eval", "--checkpoint", str(checkpoint), "--data", str(image_folder), "--out", str(out),
                             "--no-fid"])
    assert status == 2
    error = capsys.readouterr().err
    assert "[1/2] " in error and " bpp, PSNR " in error and "simulated crash" in error
    with open(out / "per_image.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and not (out / "summary.json").exists()  # the image done, and no summary


def test_eval_of_a_training_checkpoint_warns_and_scores_like_the_model_file_beside_it(image_folder, tmp_path):
    from stlic.training.config import TrainConfig, load_config
    from stlic.training.solver import STLICSolver

    data = load_config("stlic_tiny").to_dict()
    data.update(batch_size=1, schedule={"stages": [{"patch_size": 64, "steps": 1}]})
    data["perceptual"]["wasserstein_num_scales"] = 1
    run = tmp_path / "run"
    STLICSolver(TrainConfig.from_dict(data), out_dir=run, data=[image_folder]).fit(1)
    rows = {}
    for name in ("checkpoint.pt", "model.pt"):
        argv = ["eval", "--checkpoint", str(run / name), "--data", str(image_folder), "--out", str(tmp_path / name),
                "--no-fid", "--no-progress", "--limit", "1"]
        with pytest.warns(UserWarning) as caught:
            assert stlic_main(argv) == 0
        training = [str(w.message) for w in caught if "is a training checkpoint" in str(w.message)]
        assert (name == "checkpoint.pt") == bool(training)
        if training:
            assert "at step 1" in training[0] and "model.pt" in training[0]
        with open(tmp_path / name / "per_image.csv") as handle:
            rows[name] = list(csv.DictReader(handle))
    assert rows["checkpoint.pt"] == rows["model.pt"]  # the same model, the same bits and scores
