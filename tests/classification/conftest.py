"""Fixtures for the dataset tests: the real sets in ../shared/data (skipped when absent)."""

from pathlib import Path

import pytest


@pytest.fixture
def bccd_root(shared_data) -> Path:
    return shared_data("bccd", "VOC")


@pytest.fixture
def coco_mini(shared_data) -> Path:
    return shared_data("coco-mini")
