"""Fixtures of the trainer tests (helpers live in stlic_training_helpers.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from stlic_training_helpers import write_photos


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Three smooth 80 x 96 RGB PNGs."""
    return write_photos(tmp_path / "photos")
