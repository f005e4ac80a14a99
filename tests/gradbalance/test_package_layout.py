"""gradbalance's rooms: lazy top-level names, old module paths as warning shims, light imports.

Import costs are checked in a fresh interpreter (``subprocess``), where ``sys.modules`` starts empty.
"""
import ast
import configparser
import importlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import gradbalance

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "gradbalance"
HEAVY = ("torch", "pandas", "matplotlib", "numpy")
LIGHT = {"gradbalance", "gradbalance._lazy", "gradbalance.rebalance"}  # the top level and its one eager shim

# old module path -> where its names live now
MOVED = {
    "gradbalance.derive": "gradbalance.functional.derive", "gradbalance.rebalance": "gradbalance.functional.rebalance",
    "gradbalance.table": "gradbalance.report.table", "gradbalance.plots": "gradbalance.report.plots",
    "gradbalance.reference": "gradbalance.report.reference",
    "gradbalance.scale_report": "gradbalance.report.scale_report",
    "gradbalance.run": "gradbalance.io.run", "gradbalance.export": "gradbalance.io.export",
    "gradbalance.record_checks": "gradbalance.io.record_checks",
    "gradbalance.target": "gradbalance.targets.target", "gradbalance.examples": "gradbalance.targets.examples",
    "gradbalance.reprobe": "gradbalance.targets.probe_loop",
    "gradbalance.balance_spec": "gradbalance.balancer.spec", "gradbalance.update_laws": "gradbalance.balancer.update_laws",
    "gradbalance.balance_solve": "gradbalance.functional.balance_solve",
    "gradbalance.target_shares": "gradbalance.functional.target_shares",
    "gradbalance.balance_plots": "gradbalance.report.balance_plots",
    **{f"gradbalance.{name}": f"gradbalance.probe.{name}" for name in (
        "per_loss", "optimizer_window", "preconditioned", "cosines", "distributed", "groups", "stats",
        "reachability", "probe_inputs", "compiled_reach", "loss_weights")},
}


def _fresh_modules(code: str, env: dict | None = None) -> dict:
    """``{"gradbalance": [...], "heavy": [...]}`` loaded by ``code`` in a fresh interpreter."""
    probe = (f"{code}\nimport json, sys\nprint(json.dumps({{'gradbalance': sorted(m for m in sys.modules "
             f"if m.split('.')[0] == 'gradbalance'), 'heavy': sorted(m for m in {HEAVY!r} if m in sys.modules)}}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    return json.loads(out.stdout.splitlines()[-1])


# every name of the public API and the room that holds it now
HOMES = {
    "Balancer": "gradbalance.balancer.online_balancer", "BalancerSpec": "gradbalance.balancer.spec", "ContributionTable": "gradbalance.report.table",
    "DerivedCoefficients": "gradbalance.functional.derive", "GradientProbe": "gradbalance.probe.gradient_probe",
    "GroupSpec": "gradbalance.probe.groups", "ParameterGroups": "gradbalance.probe.groups",
    "ProbeTarget": "gradbalance.targets.target", "Rebalanced": "gradbalance.functional.rebalance",
    "ShareCheck": "gradbalance.functional.rebalance", "StepStats": "gradbalance.probe.stats",
    "compare_shares": "gradbalance.functional.rebalance", "derive_coefficients": "gradbalance.functional.derive",
    "derive_from_norms": "gradbalance.functional.derive", "export_config": "gradbalance.io.export",
    "partition_parameters": "gradbalance.probe.groups", "rebalance": "gradbalance.functional.rebalance",
    "records_frame": "gradbalance.probe.stats", "resolve_target": "gradbalance.targets.target",
}


def test_the_public_api_is_unchanged():
    assert sorted(gradbalance.__all__) == sorted(HOMES)


@pytest.mark.parametrize("name", sorted(HOMES))
def test_every_public_name_still_imports_from_the_top(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = getattr(gradbalance, name)
    assert value is getattr(importlib.import_module(HOMES[name]), name)


def test_a_shim_sharing_a_public_name_leaves_the_name_alone():
    """``gradbalance.rebalance`` is the function even after the old module path is imported."""
    code = ("import warnings\nwarnings.simplefilter('ignore')\nimport gradbalance.rebalance\nimport gradbalance\n"
            "from gradbalance.rebalance import rebalance as old\n"
            "print(gradbalance.rebalance is old, callable(gradbalance.rebalance))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.split() == ["True", "True"]


def test_the_top_level_loads_nothing_until_asked():
    assert _fresh_modules("import gradbalance") == {
        "gradbalance": ["gradbalance", "gradbalance._lazy", "gradbalance.rebalance"], "heavy": []}


@pytest.mark.parametrize("module", ["gradbalance.io.atomic", "gradbalance.io.export", "stlic.output_files"])
def test_an_atomic_write_loads_neither_torch_nor_pandas(module):
    loaded = _fresh_modules(f"import {module}")
    assert loaded["heavy"] == []
    assert all(m in LIGHT or m.startswith("gradbalance.io") for m in loaded["gradbalance"])


def test_io_imports_nothing_else_of_gradbalance():
    loaded = _fresh_modules("import gradbalance.io.run, gradbalance.io.export, gradbalance.io.atomic")
    assert sorted(set(loaded["gradbalance"]) - LIGHT) == [
        "gradbalance.io", "gradbalance.io.atomic", "gradbalance.io.export", "gradbalance.io.record_checks",
        "gradbalance.io.run"]


def test_tables_load_without_matplotlib():
    assert "matplotlib" not in _fresh_modules("import gradbalance.report.table, gradbalance.report.plots")["heavy"]


def test_only_the_report_imports_matplotlib():
    """Static: no module outside gradbalance/report/ imports matplotlib or seaborn."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("report/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{rel}: {n}" for n in names if n.split(".")[0] in ("matplotlib", "seaborn")]
    assert offenders == []


@pytest.mark.parametrize("backend", [None, "svg"])
def test_plots_keep_the_users_backend(backend):
    """A backend the user chose (here ``MPLBACKEND``) is kept; with none, the files are drawn by Agg."""
    code = ("from gradbalance.report.plots import pyplot\nimport matplotlib\npyplot()\n"
            "print(matplotlib.get_backend().lower())")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**env, "PYTHONPATH": str(ROOT), **({"MPLBACKEND": backend} if backend else {})})
    assert out.stdout.split()[-1] == (backend or "agg")


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_old_module_paths_forward_with_a_deprecation_warning(old, new):
    moved, shim = importlib.import_module(new), importlib.import_module(old)
    name = next(n for n, v in vars(moved).items()
                if not n.startswith("_") and getattr(v, "__module__", None) == new)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        value = getattr(shim, name)
    assert value is getattr(moved, name)


def test_atomic_writes_keep_their_old_path():
    from gradbalance.io import atomic
    with pytest.warns(DeprecationWarning, match="gradbalance.export moved to gradbalance.io.atomic"):
        from gradbalance.export import atomic_write  # noqa: F401  (the path stlic used)
    assert atomic_write is atomic.atomic_write


def test_unknown_names_of_a_shim_are_attribute_errors():
    import gradbalance.derive
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gradbalance.derive.nope  # noqa: B018


def test_a_shims_own_attributes_are_not_forwarded():
    """``inspect.getmodule`` (run by torch at import) asks every module for ``__file__``: a shim has none,
    and asking warns nothing."""
    import gradbalance.table
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not hasattr(gradbalance.table, "__file__")
        assert not hasattr(gradbalance.table, "__path__")


def test_rooms_that_took_an_old_name_import_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from gradbalance.probe import GradientProbe
        from gradbalance.targets import make_example_target, resolve_target
    assert GradientProbe is gradbalance.GradientProbe
    assert resolve_target("gradbalance.targets.examples:make_example_target") is make_example_target


def test_setup_cfg_entry_points_resolve():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    for group in ("console_scripts", "gradbalance.targets"):
        for line in filter(None, config["options.entry_points"][group].splitlines()):
            module, _, attr = line.split("=")[1].strip().partition(":")
            if module.startswith("gradbalance"):
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    assert callable(getattr(importlib.import_module(module), attr))
