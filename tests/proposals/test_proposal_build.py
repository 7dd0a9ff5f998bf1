"""get_proposals: cache, staleness, resume after a kill, file method, parallel workers."""

import cv2
import numpy as np
import pytest

from sppdet.config import Config, ProposalConfig
from sppdet.data.dataset import DetectionDataset, ImageRecord
from sppdet.errors import ConfigError, DataError
from sppdet.proposals import build as B
from sppdet.proposals.store import save_proposals


@pytest.fixture
def tiny(tmp_path, demo_dir):
    """Three small real images (crops of the demo photos) as a dataset."""
    recs = []
    for k, (name, x0) in enumerate([("001551", 0), ("001551", 200), ("000004", 100)]):
        img = cv2.imread(str(demo_dir / f"{name}.jpg"))[50:290, x0 : x0 + 300]
        img = cv2.resize(img, (150, 120), interpolation=cv2.INTER_AREA)
        path = tmp_path / "images" / f"im{k}.jpg"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), img)
        recs.append(ImageRecord(f"im{k}", str(path), 150, 120, boxes=[[10, 10, 60, 60]], labels=[1]))
    return DetectionDataset(recs, ["x"], name="tiny/test")


def _cfg(tmp_path, **proposals):
    pcfg = ProposalConfig(**{"method": "edgeboxes", "max_per_image": 100, "workers": 0, **proposals})
    return Config(output_dir=str(tmp_path / "out"), proposals=pcfg)


def _fail(*_a, **_k):
    raise AssertionError("should not compute: the cache is valid")


def test_compute_then_cached_then_stale(tmp_path, tiny, monkeypatch):
    cfg = _cfg(tmp_path)
    store = B.get_proposals(cfg, tiny, "test", progress=False)
    assert store.ids == tiny.ids and store.has_scores
    assert store.path.parent == tmp_path / "out" / "proposals"
    assert all(0 < len(store.boxes(i)) <= 100 for i in tiny.ids)
    assert not list(store.path.parent.glob("*.partial"))
    monkeypatch.setattr(B, "_compute_one", _fail)
    again = B.get_proposals(cfg, tiny, "test", progress=False)
    assert again.path == store.path
    np.testing.assert_array_equal(again.boxes("im1"), store.boxes("im1"))
    # a changed parameter or image list gives another key: recomputed
    monkeypatch.undo()
    other = B.get_proposals(_cfg(tmp_path, max_per_image=50), tiny, "test", progress=False)
    assert other.path != store.path and all(len(other.boxes(i)) <= 50 for i in tiny.ids)
    sub = B.get_proposals(cfg, tiny.subset(["im0", "im2"]), "test", progress=False)
    assert sub.path != store.path and sub.ids == ["im0", "im2"]


def test_corrupt_cache_is_recomputed(tmp_path, tiny):
    cfg = _cfg(tmp_path)
    store = B.get_proposals(cfg, tiny, "test", progress=False)
    want = store.boxes("im2")
    data = store.path.read_bytes()
    store.path.write_bytes(data[: len(data) // 2])
    fresh = B.get_proposals(cfg, tiny, "test", progress=False)
    np.testing.assert_array_equal(fresh.boxes("im2"), want)


def test_resume_uses_finished_chunks(tmp_path, tiny, monkeypatch):
    cfg = _cfg(tmp_path)
    key = B._key({"params": B._method_params("edgeboxes", cfg.proposals), "ids": B.ids_hash(tiny.ids)})
    final = B.cache_folder(cfg) / f"tiny_test-test-edgeboxes-{key}.npz"
    partial = final.parent / (final.name + ".partial")
    marker = np.array([[1, 2, 3, 4]], np.float32)
    # as if a killed run had finished im0 and im1 (and left a half-written temp file)
    save_proposals(
        partial / "chunk-000000-1-1.npz", ["im0", "im1"], [marker, marker], [np.ones(1), np.ones(1)], meta={"key": key}
    )
    (partial / ".chunk-000001.npz.tmp").write_bytes(b"garbage")
    calls = []
    real = B._compute_one
    monkeypatch.setattr(B, "_compute_one", lambda task: calls.append(task[0]) or real(task))
    store = B.get_proposals(cfg, tiny, "test", progress=False)
    assert calls == ["im2"]
    assert store.path == final and not partial.exists()
    np.testing.assert_array_equal(store.boxes("im0"), marker)
    assert len(store.boxes("im2")) > 1


@pytest.mark.slow  # worker processes are spawned: each imports torch first
def test_workers_match_single_process(tmp_path, tiny):
    one = B.get_proposals(_cfg(tmp_path / "a"), tiny, "test", progress=False)
    two = B.get_proposals(_cfg(tmp_path / "b", workers=2), tiny, "test", progress=False)
    for i in tiny.ids:
        np.testing.assert_array_equal(one.boxes(i), two.boxes(i))


def test_file_method(tmp_path, tiny, demo_dir):
    folder = tmp_path / "props"
    folder.mkdir()
    for k in range(3):
        np.save(folder / f"im{k}.npy", np.array([[-10, 5, 40, 50], [0, 0, 20, 20], [0, 0, 20, 20]], np.float32))
    cfg = _cfg(tmp_path, method="file", test_file=str(folder))
    store = B.get_proposals(cfg, tiny, "test")
    np.testing.assert_array_equal(store.boxes("im1"), [[0, 5, 40, 50], [0, 0, 20, 20]])  # clipped, deduped
    assert store.meta["report"]["dropped_duplicate"] == 3
    with pytest.raises(ConfigError, match="proposals.train_file is empty"):
        B.get_proposals(cfg, tiny, "train")
    cfg = _cfg(tmp_path, method="file", test_file=str(demo_dir))  # ids 000004/001551: nothing matches
    with pytest.raises(DataError, match="no proposal image id matches"):
        B.get_proposals(cfg, tiny, "test")
    with pytest.raises(ConfigError, match="proposals.method.*'rpn'"):  # refused when the config is made
        _cfg(tmp_path, method="rpn")
