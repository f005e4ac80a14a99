"""Fixtures of the gradbalance tests (models in :mod:`gradbalance_cases`)."""
from __future__ import annotations

import pytest

from gradbalance_cases import CASES, Case, make_mlp_case


@pytest.fixture(params=sorted(CASES))
def case(request) -> Case:
    return CASES[request.param]()


@pytest.fixture
def mlp_case() -> Case:
    return make_mlp_case()
