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
def shared_data():
    """:func:`shared_path` as a fixture: test modules cannot import this conftest reliably."""
    return shared_path


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests with one torch thread (subprocess-heavy modules on a 2-core machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def bccd_root(shared_data) -> Path:
    """The real BCCD VOC folder in ../shared/data (dataset and classifier tests)."""
    return shared_data("bccd", "VOC")


@pytest.fixture
def coco_mini(shared_data) -> Path:
    """The real coco-mini folder in ../shared/data (tests/evaluation has its own, other fixture)."""
    return shared_data("coco-mini")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny detector trained for 2 iterations on a generated sample set (one thread), shared by
    the API, detect and video tests: they check plumbing and equalities, not accuracy."""
    import torch
    from reliability_kit import make_sample, tiny_config

    from sppdet.config import config_from_dict
    from sppdet.engine.train import train

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("tiny_model")
    voc = make_sample(base / "sample", num_train=4, num_test=1)
    train(config_from_dict(tiny_config(voc, base / "model", **{"train.max_iter": 2})), str(base / "model"))
    torch.set_num_threads(n)
    return base / "model" / "model_final.pth"
