"""Shared test fixtures: paths to the real data in ../shared/data and small helpers."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with a clear reason when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} (expected ../shared/data next to the repo)")
    return p


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
