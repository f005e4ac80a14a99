"""Fuzz of every `stlic` command's file arguments: missing, a directory (or a file where a folder
is expected), unreadable, a read-only destination, the output being an input, an existing output.

Each must end in one line on stderr, ``stlic <command>: error: ...`` (besides warnings and a
progress bar), exit status 2, no traceback, every input byte-identical and no temporary left behind.
"""
from __future__ import annotations

import pytest

from stlic.cli import main

#: command -> (argv template, {slot: kind}); an ``out*`` slot is a fresh path under tmp_path
COMMANDS = {
    "compress": (["compress", "{image}", "{out_file}", "--checkpoint", "{checkpoint}", "--rate-level", "0"],
                 {"image": "file", "checkpoint": "file", "out_file": "out"}),
    "decompress": (["decompress", "{bitstream}", "{out_file}", "--checkpoint", "{checkpoint}"],
                   {"bitstream": "file", "checkpoint": "file", "out_file": "out"}),
    "eval": (["eval", "--checkpoint", "{checkpoint}", "--data", "{image_dir}", "--out", "{out_dir}", "--no-fid",
              "--no-progress"], {"checkpoint": "file", "image_dir": "folder", "out_dir": "out_dir"}),
    "rd": (["rd", "{summary}", "--anchors", "{anchor}", "--out", "{out_dir}"],
           {"summary": "file", "anchor": "file", "out_dir": "out_dir"}),
    "plot-dynamics": (["plot-dynamics", "{log}", "--out", "{out_file}"], {"log": "file", "out_file": "out"}),
    "train": (["train", "--config", "{config}", "--data", "{image_dir}", "--out", "{out_dir}", "--steps", "1"],
              {"config": "file", "image_dir": "folder", "out_dir": "out_dir"}),
}
FAULTS = {
    "file": ("missing", "directory", "unreadable"),
    "folder": ("missing", "a_file"),
    "out": ("directory", "read_only", "same_as_input", "existing"),
    "out_dir": ("a_file", "same_as_input", "read_only"),
}
CASES = [pytest.param(command, slot, fault, id=f"{command}-{slot}-{fault}")
         for command, (_, slots) in COMMANDS.items() for slot, kind in slots.items() for fault in FAULTS[kind]]
SUFFIX = {"compress": ".stlic", "decompress": ".png", "plot-dynamics": ".png"}


def _faulty_path(fault, command, slot, files, tmp_path, request):
    if fault == "missing":
        return tmp_path / "no_such_file"
    if fault == "directory":
        return files.image_dir
    if fault == "a_file":  # train takes single image files too: give it one that is not an image
        return files.config if command == "train" else files.image
    if fault == "unreadable":
        return request.getfixturevalue("unreadable_file")
    if fault == "read_only":
        return request.getfixturevalue("readonly_folder") / f"out{SUFFIX.get(command, '')}"
    if fault == "same_as_input":
        first_input = next(s for s in COMMANDS[command][1] if not s.startswith("out"))
        return getattr(files, first_input)
    if fault == "existing":
        path = tmp_path / f"existing{SUFFIX[command]}"
        path.write_bytes(b"precious")
        return path
    raise AssertionError(fault)


@pytest.mark.parametrize("command, slot, fault", CASES)
def test_a_bad_file_argument_is_one_line_and_exit_2(command, slot, fault, cli_files, inputs_unchanged, tmp_path,
                                                     request, capsys):
    template, _ = COMMANDS[command]
    paths = {"out_file": tmp_path / f"new{SUFFIX.get(command, '')}", "out_dir": tmp_path / "new_dir",
             **{name: getattr(cli_files, name) for name in ("image", "checkpoint", "bitstream", "image_dir",
                                                            "summary", "anchor", "log", "config")}}
    paths[slot] = _faulty_path(fault, command, slot, cli_files, tmp_path, request)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    status = main([part.format(**paths) for part in template])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "warning:" not in line and "it/s]" not in line]
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"stlic {command}: error: "), err
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # "precious" kept
    assert not list(tmp_path.glob(".*.tmp"))


def test_eval_keeps_earlier_results_unless_forced(cli_files, tmp_path, capsys):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "summary.json").write_text('{"method": "earlier"}')
    argv = ["eval", "--checkpoint", str(cli_files.checkpoint), "--data", str(cli_files.image_dir), "--out", str(out),
            "--no-fid", "--no-progress"]
    assert main(argv) == 2
    assert "already exists; use --force" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == '{"method": "earlier"}'
