"""Fuzz of every `gradbalance` command's file arguments and counts (gradbalance/cli.py).

A missing run, a file where a run folder is expected, a missing / directory / unreadable / invalid
YAML target or base, an output that is an input, in a read-only folder or already existing, and a
count of 0: one line ``gradbalance <command>: error: ...`` (or argparse's usage error), exit
status 2, no traceback, inputs unchanged.
"""
from __future__ import annotations

import pytest
import yaml

from gradbalance.cli import main
from probe_run_files import write_probe_run


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gb_inputs")
    write_probe_run(root / "run")
    (root / "base.yaml").write_text(yaml.safe_dump({"loss_weights": {"rate": [0.002, 0.02], "l2": 1.0, "l1": 0.1}}))
    (root / "broken.yaml").write_text("loss_weights: {rate: [0.1, \n  l2: 1\n")
    return root


def _snapshot(root):
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _faulty(fault, probe_dir, tmp_path, request):
    return {
        "missing": lambda: tmp_path / "no_such",
        "directory": lambda: probe_dir / "run",
        "a_file": lambda: probe_dir / "base.yaml",
        "unreadable": lambda: request.getfixturevalue("unreadable_file"),
        "invalid_yaml": lambda: probe_dir / "broken.yaml",
        "read_only": lambda: request.getfixturevalue("readonly_folder") / "x.yaml",
        "same_as_base": lambda: probe_dir / "base.yaml",
        "same_as_records": lambda: probe_dir / "run" / "records.csv",
    }[fault]()


CASES = [("table", "run", f) for f in ("missing", "a_file")] + [("plot", "run", f) for f in ("missing", "a_file")]
CASES += [("derive", "run", f) for f in ("missing", "a_file")]
CASES += [("derive", slot, f) for slot in ("target", "base")
          for f in ("missing", "directory", "unreadable", "invalid_yaml")]
CASES += [("derive", "out", f) for f in ("directory", "read_only", "same_as_base", "same_as_records")]
CASES += [("probe", "out", f) for f in ("a_file", "directory")]  # the run folder exists: --force needed


def _argv(command, paths):
    if command == "derive":
        return ["derive", paths["run"], "--target", paths["target"], "--base", paths["base"], "--out", paths["out"]]
    if command == "probe":
        return ["probe", "--model", "example", "--steps", "2", "--patch-size", "16", "--out", paths["out"]]
    return [command, paths["run"]]


@pytest.mark.parametrize("command, slot, fault", CASES, ids=lambda v: str(v))
def test_a_bad_file_argument_is_one_line_and_exit_2(command, slot, fault, probe_dir, tmp_path, request, capsys):
    targets = tmp_path / "targets.yaml"
    targets.write_text(yaml.safe_dump({"decoder": {"l2": 60.0, "l1": 40.0}}))
    paths = {"run": probe_dir / "run", "target": targets, "base": probe_dir / "base.yaml", "out": tmp_path / "o.yaml"}
    paths[slot] = _faulty(fault, probe_dir, tmp_path, request)
    before = _snapshot(probe_dir)
    status = main([str(part) for part in _argv(command, paths)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "warning:" not in line and "it/s]" not in line]
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"gradbalance {command}: error: "), err
    assert "Traceback" not in err
    assert _snapshot(probe_dir) == before
    assert not (tmp_path / "o.yaml").exists() and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("argv", [
    ["table", "RUN", "--window", "0"], ["plot", "RUN", "--window", "-1"],
    ["probe", "--model", "example", "--steps", "2", "--every", "0"],
    ["probe", "--model", "example", "--steps", "2", "--batch-size", "0"],
    ["probe", "--model", "example", "--steps", "0"],
], ids=lambda v: " ".join(v[:1] + v[-2:]))
def test_a_zero_count_is_refused_not_read_as_the_default(argv, probe_dir, capsys):
    """`--every 0`, `--batch-size 0`, `--window 0` used to fall back to the defaults silently."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(probe_dir / "run") if part == "RUN" else part for part in argv])
    assert exit_info.value.code == 2
    assert "must be >= 1" in capsys.readouterr().err


def test_derive_refuses_an_existing_output_without_force(probe_dir, tmp_path, capsys):
    out = tmp_path / "derived.yaml"
    out.write_text("precious: true\n")
    argv = ["derive", str(probe_dir / "run"), "--target", "equal", "--base", str(probe_dir / "base.yaml"),
            "--out", str(out)]
    assert main(argv) == 2 and "already exists; use --force" in capsys.readouterr().err
    assert out.read_text() == "precious: true\n"
    assert main([*argv, "--force"]) == 0
    assert yaml.safe_load(out.read_text())["loss_weights"]["l2"] > 0
