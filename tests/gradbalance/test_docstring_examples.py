"""The ``>>>`` examples in gradbalance's docstrings run, and print what they show (doctest).

Every module of the package is collected, so an example added anywhere runs in CI; a module whose
optional dependency is missing (an integration's framework) is skipped, naming it.
"""
import doctest
import importlib
import pkgutil

import pytest

import gradbalance

MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(gradbalance.__path__, "gradbalance.")
                 if name != "gradbalance.__main__")  # runs the CLI on import


def _examples(name: str) -> list[doctest.DocTest]:
    try:
        module = importlib.import_module(name)
    except ImportError as error:  # an integration whose framework is not installed
        pytest.skip(f"{name} needs {error.name}")
    return [test for test in doctest.DocTestFinder().find(module) if test.examples]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in _examples(name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed (see above)"


def test_the_documented_entry_points_have_examples():
    """The probe, the Lightning callback and the scale report carry runnable examples (none lost)."""
    found = {name for name in ("gradbalance.probe.gradient_probe", "gradbalance.report.scale_report",
                               "gradbalance.integrations.lightning") if _examples(name)}
    assert found == {"gradbalance.probe.gradient_probe", "gradbalance.report.scale_report",
                     "gradbalance.integrations.lightning"}
