"""Native proposal store: round trip, lazy reads, corruption and truncation detection."""

import pickle
import zipfile

import numpy as np
import pytest

from sppdet.errors import DataError
from sppdet.proposals.store import ProposalStore, save_proposals


def _data(seed=0, n_images=5):
    rng = np.random.default_rng(seed)
    ids = [f"img{i:03d}" for i in range(n_images)]
    boxes, scores = [], []
    for i in range(n_images):
        n = 0 if i == 2 else 10 + 7 * i  # one image with no proposals
        xy = rng.uniform(0, 100, (n, 2)).astype(np.float32)
        boxes.append(np.concatenate([xy, xy + rng.uniform(1, 50, (n, 2)).astype(np.float32)], axis=1))
        scores.append(rng.uniform(size=n).astype(np.float32))
    return ids, boxes, scores


def test_round_trip_with_and_without_scores(tmp_path):
    ids, boxes, scores = _data()
    save_proposals(tmp_path / "a.npz", ids, boxes, scores, meta={"method": "test"})
    save_proposals(tmp_path / "b.npz", ids, boxes)
    a, b = ProposalStore(tmp_path / "a.npz"), ProposalStore(tmp_path / "b.npz")
    assert a.ids == ids and len(a) == 5 and "img001" in a and "nope" not in a
    assert a.meta["method"] == "test" and a.has_scores and not b.has_scores
    assert a.num_boxes == sum(len(x) for x in boxes)
    for i, bx, sc in zip(ids, boxes, scores):
        got_b, got_s = a.get(i)
        assert got_b.dtype == np.float32 and got_b.shape == (len(bx), 4)
        np.testing.assert_array_equal(got_b, bx)
        np.testing.assert_array_equal(got_s, sc)
        np.testing.assert_array_equal(b.boxes(i), bx)
        assert b.get(i)[1] is None
    with pytest.raises(KeyError, match="nope"):
        a.get("nope")


def test_reading_one_image_does_not_load_everything(tmp_path):
    ids, boxes, scores = _data(n_images=5)
    path = tmp_path / "p.npz"
    save_proposals(path, ids, boxes, scores)
    store = ProposalStore(path)
    assert isinstance(store._boxes, np.memmap)  # mapped, not read
    # Corrupt the bytes of image 4's boxes only: image 0 still reads fine (no full read, no
    # CRC over the member), while verify(), which reads everything, notices.
    raw = bytearray(path.read_bytes())
    target = boxes[4][0].tobytes()
    pos = raw.find(target)
    assert pos > 0
    raw[pos : pos + 16] = b"\xff" * 16
    path.write_bytes(bytes(raw))
    fresh = ProposalStore(path)
    np.testing.assert_array_equal(fresh.boxes(ids[0]), boxes[0])
    assert not np.array_equal(fresh.boxes(ids[4]), boxes[4])
    with pytest.raises(DataError, match="checksum|corrupt"):
        fresh.verify()


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_file_is_a_clear_error(tmp_path, cut):
    ids, boxes, scores = _data()
    path = tmp_path / "p.npz"
    save_proposals(path, ids, boxes, scores)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(DataError, match="p.npz.*(truncated|corrupt)"):
        ProposalStore(path)


def test_not_a_store_and_missing_file(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"hello world" * 10)
    with pytest.raises(DataError, match="not a valid sppdet proposal store"):
        ProposalStore(bad)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(DataError, match="missing member"):
        ProposalStore(tmp_path / "other.npz")
    with pytest.raises(DataError, match="not found"):
        ProposalStore(tmp_path / "missing.npz")


def test_compressed_copy_still_reads(tmp_path):
    ids, boxes, scores = _data()
    save_proposals(tmp_path / "p.npz", ids, boxes, scores)
    with (
        zipfile.ZipFile(tmp_path / "p.npz") as zin,
        zipfile.ZipFile(tmp_path / "c.npz", "w", zipfile.ZIP_DEFLATED) as zout,
    ):
        for name in zin.namelist():
            zout.writestr(name, zin.read(name))
    store = ProposalStore(tmp_path / "c.npz")
    np.testing.assert_array_equal(store.boxes(ids[3]), boxes[3])


def test_pickles_by_path_and_rejects_bad_input(tmp_path):
    ids, boxes, _ = _data()
    save_proposals(tmp_path / "p.npz", ids, boxes)
    clone = pickle.loads(pickle.dumps(ProposalStore(tmp_path / "p.npz")))
    np.testing.assert_array_equal(clone.boxes(ids[1]), boxes[1])
    with pytest.raises(DataError, match="duplicate"):
        save_proposals(tmp_path / "d.npz", ["a", "a"], [boxes[0], boxes[1]])
    with pytest.raises(DataError, match="image 'a'.*shape"):
        save_proposals(tmp_path / "d.npz", ["a"], [np.zeros((3, 5))])
    with pytest.raises(DataError, match="scores for every image"):
        save_proposals(tmp_path / "d.npz", ["a", "b"], boxes[:2], [np.zeros(len(boxes[0])), None])
