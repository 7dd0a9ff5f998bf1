"""Fuzz the detections readers: sppdet json, COCO results json and VOC comp4 files.

The files are written by sppdet's own writers from real ground truth (BCCD and COCO-mini
boxes as detections), then mutated and read back with :func:`load_detections`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fuzz_kit import TIERS, dump_json, expect_clean, file_mutations, mutated_tree, run_fuzz, shared
from hypothesis import strategies as st
from test_fuzz_coco import small_coco

from sppdet.data.coco import load_coco
from sppdet.data.voc import load_voc
from sppdet.evaluation.detections import (
    ImageDetections,
    load_detections,
    save_coco_results,
    save_comp4,
    save_detections,
)

CLASSES = ["RBC", "WBC", "Platelets"]
IDS = ["BloodImage_00000", "BloodImage_00001"]


@pytest.fixture(scope="module")
def bccd(tmp_path_factory):
    """Two real BCCD images as a VOC dataset, and their ground truth as detections."""
    src = shared("bccd", "VOC")
    root = tmp_path_factory.mktemp("bccd")
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for i in IDS:
        shutil.copy(src / "Annotations" / f"{i}.xml", root / "Annotations")
        shutil.copy(src / "JPEGImages" / f"{i}.jpg", root / "JPEGImages")
    (root / "ImageSets/Main/val.txt").write_text("\n".join(IDS) + "\n")
    ds = load_voc(root, "val", CLASSES)
    return ds, _as_detections(ds)


def _as_detections(ds):
    rng = np.random.default_rng(0)
    return {r.image_id: ImageDetections(r.boxes, rng.uniform(0.05, 1, len(r.boxes)), r.labels) for r in ds}


def check_detections_result(dets, ds) -> None:
    """What a loaded detections dict promises (besides what check_detections verified)."""
    for image_id, d in dets.items():
        assert image_id in ds
        assert np.isfinite(d.boxes).all() and np.isfinite(d.scores).all()
        assert ((d.labels >= 1) & (d.labels <= ds.num_classes)).all()


def _checker(path: Path, ds, names=None):
    def check(data: bytes) -> None:
        path.write_bytes(data)
        dets = expect_clean(lambda: load_detections(path, ds, split="val"), names or [path.name])
        if dets is not None:
            check_detections_result(dets, ds)

    return check


@pytest.mark.parametrize("tier", TIERS)
def test_sppdet_json_mutations(tier, bccd, tmp_path):
    ds, dets = bccd
    path = tmp_path / "detections.json"
    save_detections(dets, path, ds)
    doc = json.loads(path.read_text())
    doc["images"][0]["detections"] = doc["images"][0]["detections"][:3]  # small tree: mutations hit the fields
    doc["images"][1]["detections"] = doc["images"][1]["detections"][:2]
    original = json.dumps(doc, indent=1).encode()
    strategy = st.one_of(file_mutations(original), mutated_tree(doc).map(dump_json))
    run_fuzz(tier, 50, strategy, _checker(path, ds))


@pytest.mark.parametrize("tier", TIERS)
def test_coco_results_mutations(tier, tmp_path):
    doc = small_coco()
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(doc))
    ds = load_coco(ann, shared("coco-mini", "train2017"))
    path = tmp_path / "results.json"
    save_coco_results(_as_detections(ds), path, ds)
    results = json.loads(path.read_text())
    strategy = st.one_of(file_mutations(path.read_bytes()), mutated_tree(results).map(dump_json))
    run_fuzz(tier, 40, strategy, _checker(path, ds))


@pytest.mark.parametrize("tier", TIERS)
def test_comp4_mutations(tier, bccd, tmp_path):
    ds, dets = bccd
    folder = tmp_path / "comp4"
    paths = save_comp4(dets, folder, ds, split="val")
    target = paths[0]  # RBC: the class with most lines
    original = target.read_bytes()

    def check(data: bytes) -> None:
        target.write_bytes(data)
        for where in (folder, target):  # the folder and the one file
            got = expect_clean(lambda: load_detections(where, ds, split="val"), [target.name, folder.name])
            if got is not None:
                check_detections_result(got, ds)

    run_fuzz(tier, 40, file_mutations(original), check)


# Regression cases found by the fuzzer (kept explicit so they run on every change).
def test_detections_regressions(bccd, tmp_path):
    ds, dets = bccd
    path = tmp_path / "detections.json"
    save_detections(dets, path, ds)
    text = path.read_text()
    for data in (text.encode("utf-16"), text.encode("utf-8")[:-40] + b"\xff", b"[" * 100000):
        path.write_bytes(data)
        expect_clean(lambda: load_detections(path, ds), [path.name])
    comp4 = save_comp4(dets, tmp_path / "c", ds, split="val")[0]
    for data in (comp4.read_text().encode("utf-16"), b"BloodImage_00000 0.5 1 2 3 \xff4\n"):
        comp4.write_bytes(data)
        expect_clean(lambda: load_detections(comp4, ds, split="val"), [comp4.name])
