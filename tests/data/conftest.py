"""Fixtures of the data tests (the hand-made dataset lives in ``ytvis_samples``)."""

from pathlib import Path

import pytest
from ytvis_samples import make_raw, write_dataset


@pytest.fixture
def tiny_raw() -> dict:
    return make_raw()


@pytest.fixture
def tiny_dataset(tmp_path) -> tuple[Path, Path]:
    """(frames root, annotation json) of ``make_raw()`` with real JPEG frames."""
    ann = write_dataset(tmp_path, make_raw())
    return tmp_path / "JPEGImages", ann
