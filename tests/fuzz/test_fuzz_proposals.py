"""Fuzz every proposal format: mutated real Selective Search boxes in each format sppdet reads.

The boxes are the real fast-rcnn demo boxes (``voc07-demo/*_boxes.mat``), written in each
format, mutated, then read with :func:`load_proposals` and cleaned with
:func:`sanitize_proposals` against a dataset of the two demo images, as
``tools/proposals.py convert`` does.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from fuzz_kit import TIERS, dump_json, expect_clean, file_mutations, mutated_tree, run_fuzz, shared
from hypothesis import strategies as st

from sppdet.data.dataset import DetectionDataset, ImageRecord
from sppdet.errors import DataError
from sppdet.proposals.io import load_proposals, sanitize_proposals
from sppdet.proposals.store import ProposalStore, save_proposals

IDS = ["000004", "001551"]
SIZES = {"000004": (500, 406), "001551": (500, 375)}
N = 40  # boxes per image kept from the real files: small files, mutations hit the structure


def _demo_boxes():
    """Real boxes (0-based inclusive x1 y1 x2 y2, uint16) of both demo images, first N each."""
    return {i: scipy.io.loadmat(str(shared("voc07-demo", f"{i}_boxes.mat")))["boxes"][:N] for i in IDS}


def _dataset() -> DetectionDataset:
    recs = [ImageRecord(i, f"{i}.jpg", *SIZES[i], coco_id=k + 1) for k, i in enumerate(IDS)]
    return DetectionDataset(recs, ["a"], name="demo")


def _cell(items):
    arr = np.empty((1, len(items)), dtype=object)
    for k, x in enumerate(items):
        arr[0, k] = x
    return arr


def _write_mat73(path: Path, ids, boxes) -> None:
    """R-CNN cell arrays as MATLAB -v7.3 writes them (HDF5, references, transposed, uint16 chars)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        for var, items in (("images", ids), ("boxes", boxes)):
            cell = f.create_dataset(var, shape=(len(items), 1), dtype=h5py.ref_dtype)
            for k, x in enumerate(items):
                if isinstance(x, str):
                    ds = refs.create_dataset(f"{var}{k}", data=np.array([[ord(c)] for c in x], dtype=np.uint16))
                    ds.attrs["MATLAB_class"] = np.bytes_("char")
                else:
                    ds = refs.create_dataset(f"{var}{k}", data=np.ascontiguousarray(x.T))
                    ds.attrs["MATLAB_class"] = np.bytes_("double")
                cell[k, 0] = ds.ref
            cell.attrs["MATLAB_class"] = np.bytes_("cell")
    with open(path, "r+b") as f:
        f.write(
            b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116, b" ") + bytes(8) + b"\x00\x02IM"
        )


def _rcnn(boxes):
    """R-CNN's 1-based ``[y1 x1 y2 x2]`` from 0-based inclusive ``[x1 y1 x2 y2]``."""
    b = boxes.astype(np.float64) + 1
    return b[:, [1, 0, 3, 2]]


def _pickled(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)


def source_files():
    """{name: (file name, bytes, is_text, tree or None, tree -> bytes)} of every format."""
    demo = _demo_boxes()
    xyxy = {i: b.astype(np.float32) + np.float32([0, 0, 1, 1]) for i, b in demo.items()}
    scores = {i: np.linspace(1, 0, len(b), dtype=np.float32) for i, b in xyxy.items()}
    out = {}
    out["mat-per-image"] = ("000004_boxes.mat", shared("voc07-demo", "000004_boxes.mat").read_bytes(), None)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"images": _cell(IDS), "boxes": _cell([_rcnn(demo[i]) for i in IDS])})
    out["rcnn-mat-v5"] = ("rcnn.mat", buf.getvalue(), None)
    buf = io.BytesIO()
    np.save(buf, xyxy[IDS[0]])
    out["npy"] = (f"{IDS[0]}.npy", buf.getvalue(), None)
    txt = "# x1 y1 x2 y2 score\n" + "".join(
        " ".join(f"{v:g}" for v in row) + f" {s:.3f}\n" for row, s in zip(xyxy[IDS[0]][:10], scores[IDS[0]])
    )
    out["txt"] = (f"{IDS[0]}.txt", txt.encode(), None)
    coco = [
        {"image_id": k + 1, "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "score": float(s)}
        for k, i in enumerate(IDS)
        for (x1, y1, x2, y2), s in zip(xyxy[i][:4], scores[i])
    ]
    out["coco-json"] = ("proposals.json", json.dumps(coco).encode(), (coco, dump_json))
    detectron = {"boxes": [demo[i][:5].astype(np.float32) for i in IDS], "scores": [scores[i][:5] for i in IDS]}
    detectron["indexes"] = [1, 2]
    out["detectron-pkl"] = ("detectron.pkl", _pickled(detectron), (detectron, _pickled))
    d2 = {"ids": IDS, "boxes": [xyxy[i][:5] for i in IDS], "objectness_logits": [scores[i][:5] for i in IDS]}
    d2["bbox_mode"] = 0
    out["detectron2-pkl"] = ("d2.pkl", _pickled(d2), (d2, _pickled))
    mmdet = [np.hstack([xyxy[i][:5], scores[i][:5, None]]) for i in IDS]
    out["mmdet-pkl"] = ("mmdet.pkl", _pickled(mmdet), (mmdet, _pickled))
    return out


FORMATS = ["mat-per-image", "rcnn-mat-v5", "npy", "txt", "coco-json", "detectron-pkl", "detectron2-pkl", "mmdet-pkl"]
BINARY_FORMATS = {"mat-per-image", "rcnn-mat-v5", "npy", "detectron-pkl", "detectron2-pkl", "mmdet-pkl"}


def check_proposals(raw, ds) -> None:
    """Reader output is what sanitize expects; sanitize's output is clean (or a user error)."""
    clean = expect_clean(lambda: sanitize_proposals(raw, ds, allow_missing=True, source="fuzz")[0], ["fuzz"])
    if clean is None:
        return
    for image_id, (boxes, scores) in clean.items():
        assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
        assert np.isfinite(boxes).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert scores is None or (len(scores) == len(boxes) and np.isfinite(scores).all())


def _read(path: Path, ds, names) -> None:
    raw = expect_clean(lambda: load_proposals(path, dataset=ds, allow_pickle=True), names)
    if raw is not None:
        check_proposals(raw, ds)


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_proposal_file_mutations(tier, fmt, tmp_path):
    name, original, tree = source_files()[fmt]
    path = tmp_path / name
    ds = _dataset()
    strategies = [file_mutations(original, text=fmt not in BINARY_FORMATS)]
    if tree is not None:
        doc, dump = tree
        strategies.append(mutated_tree(doc).map(dump))

    def check(data: bytes) -> None:
        path.write_bytes(data)
        _read(path, ds, [path.name])

    run_fuzz(tier, 20, st.one_of(strategies), check)


@pytest.mark.parametrize("tier", TIERS)
def test_rcnn_mat_v73_mutations(tier, tmp_path):
    demo = _demo_boxes()
    src = tmp_path / "src.mat"
    _write_mat73(src, IDS, [_rcnn(demo[i][:5]) for i in IDS])
    path = tmp_path / "rcnn73.mat"
    ds = _dataset()

    def check(data: bytes) -> None:
        path.write_bytes(data)
        _read(path, ds, [path.name])

    run_fuzz(tier, 15, file_mutations(src.read_bytes(), text=False), check)


@pytest.mark.parametrize("tier", TIERS)
def test_native_store_mutations(tier, tmp_path):
    demo = _demo_boxes()
    src = tmp_path / "src.npz"
    xyxy = [demo[i][:10].astype(np.float32) + 1 for i in IDS]
    save_proposals(src, IDS, xyxy, [np.linspace(1, 0, 10) for _ in IDS], meta={"method": "selective_search"})
    path = tmp_path / "store.npz"
    ds = _dataset()

    def check(data: bytes) -> None:
        path.write_bytes(data)
        _read(path, ds, [path.name])
        store = expect_clean(lambda: ProposalStore(path), [path.name])
        if store is not None:
            expect_clean(store.verify, [path.name])

    run_fuzz(tier, 20, file_mutations(src.read_bytes(), text=False), check)


@pytest.mark.parametrize("tier", TIERS)
def test_proposal_folder_mutations(tier, tmp_path):
    folder = tmp_path / "per_image"
    folder.mkdir()
    for i in IDS:
        shutil.copy(shared("voc07-demo", f"{i}_boxes.mat"), folder)
    target = folder / f"{IDS[1]}_boxes.mat"
    original = target.read_bytes()
    ds = _dataset()

    def check(data: bytes) -> None:
        target.write_bytes(data)
        _read(folder, ds, [target.name, folder.name])

    run_fuzz(tier, 10, file_mutations(original, text=False), check)


# Regression cases found by the fuzzer (kept explicit so they run on every change).
def _regressions():
    demo = _demo_boxes()
    boxes = [demo[i][:5].astype(np.float32) for i in IDS]
    mat = bytearray(shared("voc07-demo", "000004_boxes.mat").read_bytes())
    mat[132:136] = (0x7FFFFFF0).to_bytes(4, "little")  # element size: 2 GB for a 23 kB file
    npy = io.BytesIO()
    np.save(npy, boxes[0])
    return [
        ("000004_boxes.mat", bytes(mat)),
        ("000004.npy", npy.getvalue().replace(b"(5, 4)", b"(5,\x00)")),  # NUL in the header
        ("000004.npy", npy.getvalue().replace(b"(5, 4)", b"[5, 4)")),  # unbalanced header
        ("d.pkl", _pickled({"boxes": None, "scores": [np.ones(5)] * 2, "indexes": [1, 2]})),
        ("d2.pkl", _pickled({"ids": IDS, "boxes": boxes, "bbox_mode": None})),
        ("d2.pkl", _pickled({"ids": IDS, "boxes": boxes, "bbox_mode": float("inf")})),  # found in CI: OverflowError
        ("d2.pkl", _pickled({"ids": None, "boxes": boxes, "objectness_logits": None})),
        ("mm.pkl", _pickled([None, {"a": 1}])),
        ("p.json", json.dumps([{"image_id": [1], "bbox": [1, 2, 3, 4]}]).encode()),
        ("p.json", json.dumps([{"image_id": 1, "bbox": ["a", 2, 3, 4], "score": 1}]).encode("utf-16")),
    ]


@pytest.mark.parametrize("name,data", _regressions() if (Path(__file__).parents[2].parent / "shared").exists() else [])
def test_proposal_regressions(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    _read(path, _dataset(), [path.name])


def test_pickle_error_is_one_line(tmp_path):
    """Found by the long run: a persistent-id opcode gives a two-line UnpicklingError text."""
    path = tmp_path / "mmdet.pkl"
    path.write_bytes(b"\x80\x02P0\n.")  # PERSID opcode, then STOP
    _read(path, _dataset(), [path.name])


def _rcnn_v5_bytes() -> bytes:
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"images": _cell(IDS), "boxes": _cell([np.ones((5, 4)), np.zeros((0, 4))])})
    return buf.getvalue()


@pytest.mark.parametrize(
    "offset,value",
    [
        pytest.param(0xD2, 0x03, id="dims-element-of-3-bytes"),
        pytest.param(0x1A0, 0x3E, id="unknown-data-type-62"),
    ],
)
def test_mat5_inputs_that_crashed_scipy(tmp_path, offset, value):
    """Found by the long run: scipy.io.loadmat died with a segmentation fault on these one-byte
    edits of an R-CNN file; sppdet.proposals.mat5_check now refuses them before scipy reads them."""
    data = bytearray(_rcnn_v5_bytes())
    assert data[offset] != value
    data[offset] = value
    path = tmp_path / "rcnn.mat"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="not a valid MATLAB v5 file"):
        load_proposals(path)
