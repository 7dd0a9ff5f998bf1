"""Foreign proposal formats, each written with its own writer and read back box by box."""

import json
import pickle

import h5py
import numpy as np
import pytest
import scipy.io

from sppdet.data.dataset import DetectionDataset, ImageRecord
from sppdet.errors import DataError
from sppdet.proposals.io import convert_to_store, load_proposals, sanitize_proposals
from sppdet.proposals.store import ProposalStore

# Two images; R-CNN .mat boxes are 1-based inclusive [y1 x1 y2 x2].
RCNN_BOXES = {
    "000005": np.array([[1, 1, 10, 20], [5, 7, 100, 300]], dtype=np.float64),
    "000007": np.array([[11, 21, 31, 41]], dtype=np.float64),
}
# ... hand-converted to ours: x1 = x1' - 1, y1 = y1' - 1, x2 = x2', y2 = y2'
RCNN_OURS = {
    "000005": np.array([[0, 0, 20, 10], [6, 4, 300, 100]], dtype=np.float32),
    "000007": np.array([[20, 10, 41, 31]], dtype=np.float32),
}


def _dataset(ids=("000005", "000007"), size=(500, 400), coco_ids=None):
    recs = [
        ImageRecord(i, f"{i}.jpg", size[0], size[1], coco_id=None if coco_ids is None else coco_ids[k])
        for k, i in enumerate(ids)
    ]
    return DetectionDataset(recs, ["a"], name="t")


def _cell(items):
    arr = np.empty((1, len(items)), dtype=object)
    for k, x in enumerate(items):
        arr[0, k] = x
    return arr


def test_rcnn_mat_v5(tmp_path):
    path = tmp_path / "voc_2007_test.mat"
    ids = list(RCNN_BOXES) + ["000009"]
    boxes = list(RCNN_BOXES.values()) + [np.zeros((0, 4))]
    scipy.io.savemat(str(path), {"images": _cell(ids), "boxes": _cell(boxes)})
    got = load_proposals(path)
    assert list(got) == ids
    for i, want in RCNN_OURS.items():
        np.testing.assert_array_equal(got[i][0], want)
        assert got[i][1] is None
    assert got["000009"][0].shape == (0, 4)


def _write_mat73(path, variables):
    """Write cell arrays the way MATLAB -v7.3 does: HDF5 after a 512-byte user block,
    cells as object references into '#refs#', matrices transposed, chars as uint16."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        counter = [0]

        def put(value):
            name = f"r{counter[0]}"
            counter[0] += 1
            if isinstance(value, str):
                ds = refs.create_dataset(name, data=np.array([[ord(c)] for c in value], dtype=np.uint16))
                ds.attrs["MATLAB_class"] = np.bytes_("char")
                ds.attrs["MATLAB_int_decode"] = np.int32(2)
            elif value.size == 0:
                ds = refs.create_dataset(name, data=np.array(value.shape[::-1], dtype=np.uint64))
                ds.attrs["MATLAB_class"] = np.bytes_("double")
                ds.attrs["MATLAB_empty"] = np.uint8(1)
            else:
                ds = refs.create_dataset(name, data=np.ascontiguousarray(value.T))
                ds.attrs["MATLAB_class"] = np.bytes_("double")
            return ds.ref

        for var, items in variables.items():
            cell = f.create_dataset(var, shape=(len(items), 1), dtype=h5py.ref_dtype)
            for k, x in enumerate(items):
                cell[k, 0] = put(x)
            cell.attrs["MATLAB_class"] = np.bytes_("cell")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM")


def test_rcnn_mat_v73_hdf5(tmp_path):
    path = tmp_path / "voc_2007_trainval.mat"
    ids = list(RCNN_BOXES) + ["000009"]
    _write_mat73(path, {"images": ids, "boxes": list(RCNN_BOXES.values()) + [np.zeros((0, 4))]})
    assert h5py.is_hdf5(str(path))
    with open(path, "rb") as f:
        assert f.read(10) == b"MATLAB 7.3"
    got = load_proposals(path)
    assert list(got) == ids
    for i, want in RCNN_OURS.items():
        np.testing.assert_array_equal(got[i][0], want)
    assert got["000009"][0].shape == (0, 4)


def test_real_fast_rcnn_demo_files(demo_dir):
    folder = demo_dir
    got = load_proposals(folder)
    assert sorted(got) == ["000004", "001551"]
    for image_id, n in (("000004", 2888), ("001551", 2057)):
        raw = scipy.io.loadmat(str(folder / f"{image_id}_boxes.mat"))["boxes"].astype(np.float32)
        boxes, scores = got[image_id]
        assert boxes.shape == (n, 4) and scores is None
        # 0-based inclusive [x1 y1 x2 y2] -> ours: x2 + 1, y2 + 1
        np.testing.assert_array_equal(boxes[:, :2], raw[:, :2])
        np.testing.assert_array_equal(boxes[:, 2:], raw[:, 2:] + 1)
    single = load_proposals(folder / "001551_boxes.mat")
    np.testing.assert_array_equal(single["001551"][0], got["001551"][0])
    # the demo images are 500 wide: every converted box fits the image
    assert got["001551"][0][:, 2].max() <= 500 and got["001551"][0][:, 3].max() <= 375


def test_per_image_npy_and_txt(tmp_path):
    a = np.array([[1.5, 2, 30, 40], [0, 0, 10, 10]], dtype=np.float32)
    np.save(tmp_path / "000005.npy", a)
    (tmp_path / "000007.txt").write_text("# x1 y1 x2 y2 score\n5 6 50 60 0.9\n1 1 20 20 0.5\n")
    got = load_proposals(tmp_path)
    np.testing.assert_array_equal(got["000005"][0], a)
    assert got["000005"][1] is None
    np.testing.assert_array_equal(got["000007"][0], [[5, 6, 50, 60], [1, 1, 20, 20]])
    np.testing.assert_allclose(got["000007"][1], [0.9, 0.5])
    (tmp_path / "000009.txt").write_text("1 2 3\n")
    with pytest.raises(DataError, match="000009.txt.*'000009'.*shape"):
        load_proposals(tmp_path)


def test_pickles_refused_without_opt_in(tmp_path):
    path = tmp_path / "props.pkl"
    with open(path, "wb") as f:
        pickle.dump({"boxes": [], "scores": [], "indexes": []}, f)
    with pytest.raises(DataError, match="props.pkl.*pickle.*allow_pickle=True"):
        load_proposals(path)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo hacked",))


def test_pickle_with_code_refused_even_when_allowed(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"ids": [1], "boxes": [_Evil()]}))
    with pytest.raises(DataError, match="refusing to unpickle 'posix.system'|refusing to unpickle 'os.system'"):
        load_proposals(path, allow_pickle=True)


def test_detectron_pkl(tmp_path):
    # Detectron (v1) writes dict(boxes, scores, indexes[, cfg]) with 0-based inclusive boxes.
    boxes = [np.array([[0, 0, 9, 19], [10, 20, 29, 49]], np.float32), np.array([[5, 5, 14, 14]], np.float32)]
    scores = [np.array([0.2, 0.9], np.float32), np.array([0.5], np.float32)]
    path = tmp_path / "detectron.pkl"
    with open(path, "wb") as f:
        pickle.dump(dict(boxes=boxes, scores=scores, indexes=[42, 7], cfg="MODEL: {}"), f, protocol=2)
    got = load_proposals(path, allow_pickle=True)
    assert list(got) == ["42", "7"]
    np.testing.assert_array_equal(got["42"][0], [[0, 0, 10, 20], [10, 20, 30, 50]])
    np.testing.assert_array_equal(got["42"][1], scores[0])
    # with a COCO dataset, integer ids map through the records' coco_id
    ds = _dataset(ids=("a.jpg", "b.jpg"), coco_ids=(42, 7))
    assert list(load_proposals(path, dataset=ds, allow_pickle=True)) == ["a.jpg", "b.jpg"]


@pytest.mark.parametrize("mode", [None, 0, 1])
def test_detectron2_pkl(tmp_path, mode):
    xyxy = np.array([[10, 20, 110, 220], [0, 0, 5, 5]], np.float32)
    stored = xyxy if mode in (None, 0) else np.array([[10, 20, 100, 200], [0, 0, 5, 5]], np.float32)
    obj = {"ids": ["000005"], "boxes": [stored], "objectness_logits": [np.array([3.0, -1.0], np.float32)]}
    if mode is not None:
        obj["bbox_mode"] = mode
    path = tmp_path / "d2.pkl"
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    got = load_proposals(path, allow_pickle=True)
    np.testing.assert_array_equal(got["000005"][0], xyxy)
    np.testing.assert_array_equal(got["000005"][1], [3.0, -1.0])


def test_detectron2_unsupported_mode(tmp_path):
    path = tmp_path / "d2.pkl"
    with open(path, "wb") as f:
        pickle.dump({"ids": ["a"], "boxes": [np.zeros((1, 4))], "bbox_mode": 2}, f)
    with pytest.raises(DataError, match="bbox_mode 2"):
        load_proposals(path, allow_pickle=True)


def test_mmdet_pkl_needs_dataset_order(tmp_path):
    arrs = [np.array([[1, 2, 30, 40, 0.7]], np.float32), np.zeros((0, 5), np.float32)]
    path = tmp_path / "mm.pkl"
    with open(path, "wb") as f:
        pickle.dump(arrs, f)
    with pytest.raises(DataError, match="dataset order"):
        load_proposals(path, allow_pickle=True)
    got = load_proposals(path, dataset=_dataset(), allow_pickle=True)
    np.testing.assert_array_equal(got["000005"][0], [[1, 2, 30, 40]])
    np.testing.assert_allclose(got["000005"][1], [0.7])
    assert got["000007"][0].shape == (0, 4)
    with pytest.raises(DataError, match="3 images"):
        load_proposals(path, dataset=_dataset(ids=("a", "b", "c")), allow_pickle=True)


def test_coco_json(tmp_path):
    path = tmp_path / "props.json"
    path.write_text(
        json.dumps(
            [
                {"image_id": 42, "bbox": [10, 20, 30, 40], "score": 0.5},
                {"image_id": 42, "bbox": [0, 0, 5, 5], "score": 0.9},
                {"image_id": 7, "bbox": [1, 2, 3, 4], "score": 0.1},
            ]
        )
    )
    got = load_proposals(path)
    np.testing.assert_array_equal(got["42"][0], [[10, 20, 40, 60], [0, 0, 5, 5]])
    np.testing.assert_allclose(got["42"][1], [0.5, 0.9])
    ds = _dataset(ids=("x", "y"), coco_ids=(7, 42))
    assert set(load_proposals(path, dataset=ds)) == {"x", "y"}


def test_sanitize_checks_and_counts():
    ds = _dataset(size=(100, 80))
    raw = {
        "000005": (
            np.array(
                [
                    [10, 10, 50, 50],  # kept
                    [10, 10, 50, 50],  # exact duplicate
                    [-5, -5, 120, 90],  # clipped to the image
                    [np.nan, 0, 10, 10],  # NaN
                    [0, 0, np.inf, 10],  # inf
                    [30, 30, 20, 40],  # x2 < x1
                    [0, 0, 1, 40],  # width 1 < min_size 2
                    [60, 10, 90, 70],  # kept
                ],
                np.float32,
            ),
            np.array([0.1, 0.1, 0.5, 0.9, 0.9, 0.9, 0.9, 0.8], np.float32),
        ),
        "000007": (np.array([[200, 200, 300, 300]], np.float32), None),  # fully outside -> empty
        "extra": (np.array([[0, 0, 5, 5]], np.float32), None),
    }
    clean, report = sanitize_proposals(raw, ds, max_per_image=2, min_size=2.0)
    assert list(clean) == ["000005", "000007"]
    boxes, scores = clean["000005"]
    # survivors by score: [60 10 90 70] (0.8), the clipped box (0.5), [10 10 50 50] (0.1); top-2
    np.testing.assert_array_equal(boxes, [[60, 10, 90, 70], [0, 0, 100, 80]])
    np.testing.assert_allclose(scores, [0.8, 0.5])
    assert clean["000007"][0].shape == (0, 4)
    assert report["extra_ids"] == 1 and report["empty_images"] == 1
    assert report["dropped_invalid"] == 3  # NaN, inf, x2 < x1
    assert report["dropped_small"] == 2  # width 1, and 000007's box clipped to nothing
    assert report["dropped_duplicate"] == 1 and report["dropped_topk"] == 1
    assert report["clipped"] == 2


def test_sanitize_file_order_without_scores_and_id_errors():
    ds = _dataset()
    raw = {
        "000005": (np.array([[5, 5, 9, 9], [0, 0, 4, 4], [1, 1, 3, 3]], np.float32), None),
        "000007": (np.zeros((0, 4), np.float32), None),
    }
    clean, _ = sanitize_proposals(raw, ds, max_per_image=2, min_size=0)
    np.testing.assert_array_equal(clean["000005"][0], [[5, 5, 9, 9], [0, 0, 4, 4]])
    with pytest.raises(DataError, match="no proposal image id matches.*'5'.*'000005'"):
        sanitize_proposals({"5": raw["000005"]}, ds)
    with pytest.raises(DataError, match="1 dataset images have no entry.*'000007'"):
        sanitize_proposals({"000005": raw["000005"]}, ds)
    clean, rep = sanitize_proposals({"000005": raw["000005"]}, ds, allow_missing=True)
    assert rep["missing_ids"] == 1 and clean["000007"][0].shape == (0, 4)
    with pytest.raises(DataError, match="f.mat: image '000005'.*\\(3, 3\\)"):
        sanitize_proposals({"000005": (np.zeros((3, 3)), None), "000007": raw["000007"]}, ds, source="f.mat")


def test_convert_to_store(tmp_path):
    src = tmp_path / "rcnn.mat"
    scipy.io.savemat(str(src), {"images": _cell(list(RCNN_BOXES)), "boxes": _cell(list(RCNN_BOXES.values()))})
    report = convert_to_store(src, tmp_path / "out.npz", dataset=_dataset())
    store = ProposalStore(tmp_path / "out.npz")
    assert store.ids == ["000005", "000007"] and report["boxes_out"] == 3
    for i, want in RCNN_OURS.items():
        np.testing.assert_array_equal(store.boxes(i), want)
    assert store.meta["source_format"] == "mat"


def test_detectron2_boxmode_enum_without_detectron2(tmp_path, monkeypatch):
    """bbox_mode pickled as detectron2's BoxMode enum loads without importing detectron2."""
    import enum
    import sys
    import types

    class BoxMode(enum.IntEnum):
        XYXY_ABS = 0
        XYWH_ABS = 1

    BoxMode.__module__ = "detectron2.structures.boxes"
    BoxMode.__qualname__ = "BoxMode"
    fake = types.ModuleType("detectron2.structures.boxes")
    fake.BoxMode = BoxMode
    for name in ("detectron2", "detectron2.structures"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "detectron2.structures.boxes", fake)
    data = pickle.dumps(
        {
            "ids": [5],
            "boxes": [np.array([[1, 2, 3, 4]], np.float32)],
            "objectness_logits": [np.zeros(1, np.float32)],
            "bbox_mode": BoxMode.XYWH_ABS,
        }
    )
    monkeypatch.delitem(sys.modules, "detectron2.structures.boxes")
    path = tmp_path / "d2.pkl"
    path.write_bytes(data)
    got = load_proposals(path, allow_pickle=True)
    np.testing.assert_array_equal(got["5"][0], [[1, 2, 4, 6]])  # XYWH -> XYXY
