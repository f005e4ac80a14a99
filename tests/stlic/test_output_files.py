"""stlic.output_files: output == input (through links), existing outputs, atomic unique temporaries."""
import os
import stat

import pytest

from stlic.output_files import atomic_write_bytes, check_output, same_file, temporary_files


def test_an_input_is_refused_also_through_symbolic_and_hard_links(tmp_path):
    source = tmp_path / "photo.png"
    source.write_bytes(b"pixels")
    (tmp_path / "soft.png").symlink_to(source)
    os.link(source, tmp_path / "hard.png")
    for output in (source, tmp_path / "soft.png", tmp_path / "hard.png", tmp_path / "sub" / ".." / "photo.png"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(ValueError, match="is the input file"):
            check_output(output, [source], force=True)
    assert source.read_bytes() == b"pixels"
    assert not same_file(tmp_path / "absent", source)


def test_existing_output_needs_force_and_a_directory_is_refused(tmp_path):
    (tmp_path / "out.stlic").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="--force"):
        check_output(tmp_path / "out.stlic")
    assert check_output(tmp_path / "out.stlic", force=True) == tmp_path / "out.stlic"
    with pytest.raises(ValueError, match="is a directory"):
        check_output(tmp_path, force=True)
    with pytest.raises(ValueError, match="not a directory"):
        check_output(tmp_path / "out.stlic" / "x.png")


def test_a_leftover_tmp_symlink_is_not_followed_and_a_symlinked_output_is_replaced(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep me")
    out = tmp_path / "out.stlic"
    (tmp_path / "out.stlic.tmp").symlink_to(victim)  # the fixed temporary name of the old writer
    (tmp_path / ".out.stlic.tmp").mkdir()  # a stale directory in the way
    atomic_write_bytes(out, b"new")
    assert out.read_bytes() == b"new" and not out.is_symlink()
    assert victim.read_bytes() == b"keep me"
    link = tmp_path / "link.stlic"
    link.symlink_to(victim)
    atomic_write_bytes(link, b"through?")
    assert victim.read_bytes() == b"keep me" and not link.is_symlink() and link.read_bytes() == b"through?"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "model.pt"
    out.write_bytes(b"old")

    def explode(handle):
        handle.write(b"half")
        raise OSError("disk full")

    from stlic.output_files import atomic_write
    with pytest.raises(OSError, match="disk full"):
        atomic_write(out, explode)
    assert out.read_bytes() == b"old" and temporary_files(tmp_path, "model.pt") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_written_files_get_the_umask_permissions_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "a.png", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
