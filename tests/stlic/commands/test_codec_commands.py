"""`stlic compress` / `decompress` never lose a file: output == input refused (links too), an
existing output needs --force and is replaced atomically (a new inode), leftover temporaries are
never written through; user mistakes are one line with exit status 2."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from stlic.cli import main


def _compress(files, image, out, *extra):
    return main(["compress", str(image), str(out), "--checkpoint", str(files.checkpoint), "--rate-level", "0", *extra])


def test_compress_refuses_to_write_over_its_input_also_through_a_link(cli_files, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    photo.write_bytes(cli_files.image.read_bytes())
    (tmp_path / "link.png").symlink_to(photo)
    for output in (photo, tmp_path / "link.png"):
        assert _compress(cli_files, photo, output, "--force") == 2
        assert "is the input file" in capsys.readouterr().err
    assert photo.read_bytes() == cli_files.image.read_bytes()


def test_a_leftover_tmp_symlink_is_not_written_through(cli_files, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (tmp_path / "out.stlic.tmp").symlink_to(victim)
    assert _compress(cli_files, cli_files.image, tmp_path / "out.stlic") == 0
    assert victim.read_bytes() == b"precious"
    assert not (tmp_path / "out.stlic").is_symlink() and (tmp_path / "out.stlic").read_bytes()[:2] != b"pr"


def test_a_stale_tmp_directory_is_no_obstacle(cli_files, tmp_path, capsys):
    (tmp_path / "out.stlic.tmp").mkdir()
    assert _compress(cli_files, cli_files.image, tmp_path / "out.stlic") == 0, capsys.readouterr().err
    assert (tmp_path / "out.stlic").is_file()


def test_decompress_refuses_an_existing_output_and_replaces_it_atomically_with_force(cli_files, tmp_path, capsys):
    out = tmp_path / "out.png"
    out.write_bytes(b"earlier result")
    argv = ["decompress", str(cli_files.bitstream), str(out), "--checkpoint", str(cli_files.checkpoint)]
    assert main(argv) == 2
    assert "already exists; use --force" in capsys.readouterr().err and out.read_bytes() == b"earlier result"
    inode = out.stat().st_ino
    held = open(out, "rb")  # a reader of the old file keeps reading the old bytes
    assert main([*argv, "--force"]) == 0
    assert held.read() == b"earlier result"
    held.close()
    assert out.stat().st_ino != inode  # a new file moved in place, not the old one rewritten
    assert Image.open(out).size == (48, 40)
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_image_above_the_decompression_bomb_limit_is_one_line(cli_files, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 48 // 4)  # Pillow's documented knob; 2x over it raises
    assert _compress(cli_files, cli_files.image, tmp_path / "out.stlic") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stlic compress: error: image") and "too large to decode safely" in err
    assert "\n" not in err and not (tmp_path / "out.stlic").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_says_so(cli_files, tmp_path, capsys):
    assert _compress(cli_files, cli_files.image, tmp_path / "out.stlic", "--device", "cuda") == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "not a model checkpoint" not in err


def test_a_directory_is_not_reported_as_missing(cli_files, tmp_path, capsys):
    assert _compress(cli_files, cli_files.image_dir, tmp_path / "o.stlic") == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["compress", str(cli_files.image), str(tmp_path / "o.stlic"), "--checkpoint",
                 str(cli_files.image_dir), "--rate-level", "0"]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and "does not exist" not in err
