"""Fixtures for the proposal tests: the real fast-rcnn demo files in ../shared/data."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture
def demo_dir() -> Path:
    """``voc07-demo``: 000004.jpg, 001551.jpg and their real Selective Search ``*_boxes.mat``."""
    p = SHARED_DATA / "voc07-demo"
    if not p.is_dir():
        pytest.skip(f"real data not available: {p} (expected ../shared/data next to the repo)")
    return p
