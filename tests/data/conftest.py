"""Fixtures for the dataset tests: the real sets in ../shared/data (skipped when absent)."""
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _shared(*parts: str) -> Path:
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} (expected ../shared/data next to the repo)")
    return p


@pytest.fixture
def bccd_root() -> Path:
    return _shared("bccd", "VOC")


@pytest.fixture
def coco_mini() -> Path:
    return _shared("coco-mini")
