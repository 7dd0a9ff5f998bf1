"""COCO reader: real coco-mini counts, contiguous labels <-> category ids, errors, build_dataset."""

import copy
import json

import cv2
import numpy as np
import pytest

from sppdet.config import load_config
from sppdet.data.build import build_dataset
from sppdet.data.coco import category_id_to_label, label_to_category_id, load_coco
from sppdet.data.dataset import DataWarning
from sppdet.data.image_io import image_size
from sppdet.errors import ConfigError, DataError

# ---------------------------------------------------------------------------------------
# Real files: coco-mini


def test_coco_mini_real_counts(coco_mini):
    ann_file = coco_mini / "annotations" / "instances_train2017.json"
    raw = json.loads(ann_file.read_text())
    ds = load_coco(ann_file, coco_mini / "train2017")

    assert len(ds) == len(raw["images"]) == 80
    assert sum(r.num_objects for r in ds) == len(raw["annotations"]) == 739
    assert sum(int(r.iscrowd.sum()) for r in ds) == sum(a["iscrowd"] for a in raw["annotations"]) == 8
    assert ds.num_classes == 80
    assert ds.category_ids == sorted(c["id"] for c in raw["categories"])
    assert ds.category_ids[-1] == 90 and len(set(range(1, 91)) - set(ds.category_ids)) == 10  # gaps
    assert ds.meta["ann_file"] == str(ann_file)

    names = {c["id"]: c["name"] for c in raw["categories"]}
    per_image = {}
    for a in raw["annotations"]:
        per_image.setdefault(a["image_id"], []).append(a)
    for im, r in zip(raw["images"], ds):
        assert r.image_id == str(im["id"]) and r.coco_id == im["id"]
        assert (r.width, r.height) == (im["width"], im["height"]) == image_size(r.file_name)
        anns = per_image.get(im["id"], [])
        assert r.num_objects == len(anns)
        for k, a in enumerate(anns):
            x, y, w, h = a["bbox"]
            np.testing.assert_allclose(r.boxes[k], [x, y, x + w, y + h], atol=1e-3)
            assert label_to_category_id(ds, int(r.labels[k])) == a["category_id"]
            assert ds.class_names[r.labels[k] - 1] == names[a["category_id"]]
            assert bool(r.iscrowd[k]) == bool(a["iscrowd"])
    # crowd boxes are records' objects but never training targets
    assert sum(int(r.training_mask().sum()) for r in ds) == 739 - 8


def test_label_category_round_trip(coco_mini):
    ds = load_coco(coco_mini / "annotations" / "instances_train2017.json", coco_mini / "train2017")
    for label in range(1, ds.num_classes + 1):
        assert category_id_to_label(ds, label_to_category_id(ds, label)) == label
    assert label_to_category_id(ds, 12) == 13  # COCO has no id 12
    with pytest.raises(ValueError):
        category_id_to_label(ds, 12)
    with pytest.raises(ValueError):
        label_to_category_id(ds, 81)


# ---------------------------------------------------------------------------------------
# Small files written here

BASE = {
    "images": [
        {"id": 10, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 3, "file_name": "b.jpg", "width": 64, "height": 48},
    ],
    "annotations": [
        {"id": 1, "image_id": 10, "category_id": 7, "bbox": [1, 2, 10, 20], "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [50, 40, 30, 30], "iscrowd": 1},
        {"id": 3, "image_id": 3, "category_id": 11, "bbox": [5, 5, 0, 10], "iscrowd": 0},
    ],
    "categories": [{"id": 11, "name": "c11"}, {"id": 3, "name": "c3"}, {"id": 7, "name": "c7"}],
}


def _coco(tmp_path, data=BASE):
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for im in data.get("images", []):
        if isinstance(im, dict) and "file_name" in im:
            cv2.imwrite(str(images / im["file_name"]), np.zeros((48, 64, 3), np.uint8))
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    return ann, images


def test_contiguous_labels_clip_and_drop(tmp_path):
    ann, images = _coco(tmp_path)
    with pytest.warns(DataWarning, match="annotation 3"):
        ds = load_coco(ann, images)
    assert ds.class_names == ["c3", "c7", "c11"] and ds.category_ids == [3, 7, 11]
    a, b = ds.get("10"), ds.get("3")
    np.testing.assert_array_equal(a.boxes, [[1, 2, 11, 22], [50, 40, 64, 48]])  # second one clipped
    assert a.labels.tolist() == [2, 1] and a.iscrowd.tolist() == [False, True]
    assert b.num_objects == 0  # zero-width box dropped, image kept
    assert ds.meta["issues"] == {"clipped_boxes": 1, "dropped_boxes": 1, "other_categories": 0, "missing_images": 0}
    assert category_id_to_label(ds, 11) == 3 and label_to_category_id(ds, 1) == 3


def test_class_subset(tmp_path):
    ann, images = _coco(tmp_path)
    ds = load_coco(ann, images, class_names=["c7"])  # the zero-width box is c11: left out, no warning
    assert ds.category_ids == [7] and ds.get("10").labels.tolist() == [1]
    assert ds.meta["issues"]["other_categories"] == 2
    with pytest.raises(DataError, match="c99"):
        load_coco(ann, images, class_names=["c99"])


def _broken(mutate):
    data = copy.deepcopy(BASE)
    mutate(data)
    return data


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d["images"][0].pop("file_name"), r"images\[0\] has no 'file_name'"),
        (lambda d: d["annotations"][1].pop("bbox"), r"annotations\[1\] has no 'bbox'"),
        (lambda d: d.pop("categories"), "'categories' is missing"),
        (lambda d: d["images"].append(dict(d["images"][0])), "duplicate id 10"),
        (lambda d: d["annotations"].append(dict(d["annotations"][0])), "duplicate id 1"),
        (lambda d: d["categories"].append({"id": 3, "name": "again"}), "duplicate id 3"),
        (lambda d: d["annotations"][0].update(image_id=99), "image_id 99"),
        (lambda d: d["annotations"][0].update(category_id=5), "category_id 5"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "4 numbers"),
        (lambda d: d["images"][0].update(id="x"), "integer"),
    ],
)
def test_bad_json_names_file_and_key(tmp_path, mutate, match):
    ann, images = _coco(tmp_path, _broken(mutate))
    with pytest.raises(DataError, match=match) as e:
        load_coco(ann, images)
    assert str(ann) in str(e.value)


def test_missing_image_file_and_bad_json(tmp_path):
    ann, images = _coco(tmp_path)
    (images / "b.jpg").unlink()
    with pytest.raises(DataError, match="b.jpg"):
        load_coco(ann, images)
    ann.write_text("{not json")
    with pytest.raises(DataError, match="ann.json"):
        load_coco(ann, images)


def test_no_annotations_key_loads_images_only(tmp_path):
    data = copy.deepcopy(BASE)
    del data["annotations"]
    ann, images = _coco(tmp_path, data)
    ds = load_coco(ann, images)
    assert len(ds) == 2 and all(r.num_objects == 0 for r in ds)


# ---------------------------------------------------------------------------------------
# build_dataset (COCO side)


def test_build_dataset_coco(tmp_path):
    ann, images = _coco(tmp_path)
    cfg = load_config(None, ["data.format=coco", f"data.train_ann={ann}", f"data.train_images={images}"])
    with pytest.warns(DataWarning):
        ds = build_dataset(cfg, "train")
    assert len(ds) == 2 and ds.meta["ann_file"] == str(ann)
    with pytest.raises(ConfigError, match="data.test_ann"):
        build_dataset(cfg, "test")
    bad = load_config(None, ["data.format=coco", f"data.train_ann={ann}", f"data.train_images={tmp_path / 'no'}"])
    with pytest.raises(ConfigError, match="data.train_images"):
        build_dataset(bad, "train")
    with pytest.raises(ValueError):
        build_dataset(cfg, "val")
