"""Detections files: round trips of the three formats, auto-detection and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sppdet.data.dataset import DetectionDataset, ImageRecord
from sppdet.errors import DataError
from sppdet.evaluation.detections import (
    ImageDetections,
    load_coco_results,
    load_comp4,
    load_detections,
    load_sppdet_detections,
    save_coco_results,
    save_comp4,
    save_detections,
)

CLASSES = ["RBC", "WBC", "Platelets", "white_cell"]  # one name with '_' for the comp4 file names


def _dataset(coco=False):
    recs = [ImageRecord(f"img_{i}", f"/x/img_{i}.jpg", 640, 480, coco_id=(100 + i) if coco else None) for i in range(4)]
    return DetectionDataset(recs, CLASSES, "toy", category_ids=[3, 7, 11, 90] if coco else None, meta={"split": "val"})


def _random_dets(ds, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for rec in ds.records[:3]:  # the last image has no detections
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 500, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(1, 100, (n, 2))], 1)
        out[rec.image_id] = ImageDetections(
            np.round(boxes, 2), np.round(rng.random(n), 6), rng.integers(1, len(CLASSES) + 1, n)
        )
    return out


def _same(a, b, atol=1e-3):
    ids = {i for i, d in a.items() if len(d)} | {i for i, d in b.items() if len(d)}
    for i in ids:
        da, db = a.get(i, ImageDetections()), b.get(i, ImageDetections())
        oa, ob = np.lexsort(da.boxes.T), np.lexsort(db.boxes.T)
        np.testing.assert_allclose(da.boxes[oa], db.boxes[ob], atol=atol)
        np.testing.assert_allclose(da.scores[oa], db.scores[ob], atol=1e-5)
        np.testing.assert_array_equal(da.labels[oa], db.labels[ob])


def test_sppdet_json_round_trip_and_format(tmp_path):
    ds, dets = _dataset(), _random_dets(_dataset())
    p = tmp_path / "d.json"
    save_detections(dets, p, ds)
    data = json.loads(p.read_text())
    assert data["format"] == "sppdet-detections" and data["version"] == 1
    assert data["classes"] == CLASSES and [im["image_id"] for im in data["images"]] == ds.ids
    first = next(d for im in data["images"] for d in im["detections"])
    assert set(first) == {"class", "label", "score", "box"} and first["class"] == CLASSES[first["label"] - 1]
    _same(load_sppdet_detections(p, ds), dets)
    _same(load_detections(p, ds), dets)


def test_sppdet_json_classes_matched_by_name(tmp_path):
    ds = _dataset()
    p = tmp_path / "d.json"
    p.write_text(
        json.dumps(
            {
                "format": "sppdet-detections",
                "version": 1,
                "classes": ["WBC", "RBC"],
                "images": [
                    {
                        "image_id": "img_0",
                        "detections": [
                            {"label": 1, "score": 0.5, "box": [0, 0, 5, 5]},
                            {"class": "Platelets", "score": 0.4, "box": [1, 1, 5, 5]},
                        ],
                    }
                ],
            }
        )
    )
    assert load_detections(p, ds)["img_0"].labels.tolist() == [2, 3]


def test_comp4_round_trip_one_based(tmp_path):
    ds, dets = _dataset(), _random_dets(_dataset(), 1)
    paths = save_comp4(dets, tmp_path / "comp4", ds, split="val")
    assert sorted(p.name for p in paths) == sorted(f"comp4_det_val_{c}.txt" for c in CLASSES)
    _same(load_comp4(tmp_path / "comp4", ds), dets, atol=0.006)
    _same(load_detections(tmp_path / "comp4", ds), dets, atol=0.006)
    # the devkit's 1-based pixels: xmin = x1 + 1, ymin = y1 + 1, xmax = x2, ymax = y2
    one = {"img_0": ImageDetections([[0, 9, 10, 20]], [0.5], [4])}
    save_comp4(one, tmp_path / "one", ds, split="val")
    assert (tmp_path / "one" / "comp4_det_val_white_cell.txt").read_text() == "img_0 0.5 1 10 10 20\n"
    assert (tmp_path / "one" / "comp4_det_val_RBC.txt").read_text() == ""


def test_coco_results_round_trip(tmp_path):
    ds = _dataset(coco=True)
    dets = _random_dets(ds, 2)
    p = tmp_path / "res.json"
    save_coco_results(dets, p, ds)
    rows = json.loads(p.read_text())
    assert {r["image_id"] for r in rows} <= {100, 101, 102} and {r["category_id"] for r in rows} <= {3, 7, 11, 90}
    save_coco_results({"img_1": ImageDetections([[10, 20, 30, 60]], [0.25], [4])}, p, ds)
    assert json.loads(p.read_text()) == [{"image_id": 101, "category_id": 90, "bbox": [10, 20, 20, 40], "score": 0.25}]
    save_coco_results(dets, p, ds)
    _same(load_coco_results(p, ds), dets)
    _same(load_detections(p, ds), dets)


def test_empty_detections_are_fine(tmp_path):
    ds = _dataset(coco=True)
    (tmp_path / "empty.json").write_text("[]")
    assert load_detections(tmp_path / "empty.json", ds) == {}
    save_detections({}, tmp_path / "none.json", ds)
    assert all(len(d) == 0 for d in load_detections(tmp_path / "none.json", ds).values())


def test_clear_errors(tmp_path):
    ds = _dataset(coco=True)
    bad_class = tmp_path / "comp4_det_val_dog.txt"
    bad_class.write_text("img_0 0.5 1 1 5 5\n")
    with pytest.raises(DataError, match=r"unknown class 'dog'.*|comp4_det_val_dog"):
        load_detections(bad_class, ds)
    p = tmp_path / "d.json"
    p.write_text(
        json.dumps(
            {
                "format": "sppdet-detections",
                "version": 1,
                "images": [{"image_id": "img_0", "detections": [{"class": "Dog", "score": 0.5, "box": [0, 0, 5, 5]}]}],
            }
        )
    )
    with pytest.raises(DataError, match=r"d\.json.*unknown class 'Dog'"):
        load_detections(p, ds)
    p.write_text(
        json.dumps(
            {"format": "sppdet-detections", "images": [{"image_id": f"other_{i}", "detections": []} for i in range(9)]}
        )
    )
    with pytest.raises(DataError, match=r"9 image id\(s\) not in toy: 'other_0'.*and 4 more"):
        load_detections(p, ds)
    p.write_text(json.dumps([{"image_id": 100, "category_id": 5, "bbox": [0, 0, 1, 1], "score": 1}]))
    with pytest.raises(DataError, match="unknown category_id 5"):
        load_detections(p, ds)
    p.write_text(json.dumps([{"image_id": 100, "category_id": 3, "bbox": [0, 0, 1], "score": 1}]))
    with pytest.raises(DataError, match=r"\[0\].*4 numbers"):
        load_detections(p, ds)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "comp4_det_val_RBC.txt").write_text("img_0 0.5 1 1\n")
    with pytest.raises(DataError, match=r"comp4_det_val_RBC\.txt:1: expected"):
        load_detections(tmp_path / "c", ds)
    p.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(DataError, match="COCO annotation file"):
        load_detections(p, ds)
    with pytest.raises(DataError, match="not found"):
        load_detections(tmp_path / "missing.json", ds)
