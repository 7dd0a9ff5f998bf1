"""Fuzz the COCO annotation reader with mutated real COCO-mini annotations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fuzz_kit import TIERS, dump_json, expect_clean, file_mutations, mutated_tree, run_fuzz, shared
from hypothesis import strategies as st
from test_fuzz_voc import check_dataset

from sppdet.data.coco import load_coco


def small_coco(num_images: int = 2) -> dict:
    """The first images of COCO-mini with their annotations and categories (real values)."""
    data = json.loads(shared("coco-mini", "annotations", "instances_train2017.json").read_text())
    images = [{k: im[k] for k in ("id", "file_name", "width", "height")} for im in data["images"][:num_images]]
    ids = {im["id"] for im in images}
    keep = ("id", "image_id", "category_id", "bbox", "area", "iscrowd")
    anns = [{k: a[k] for k in keep} for a in data["annotations"] if a["image_id"] in ids][:4]
    used = {a["category_id"] for a in anns}
    cats = [{"id": c["id"], "name": c["name"]} for c in data["categories"] if c["id"] in used or c["id"] <= 2]
    # Fields sppdet does not read (segmentation polygons, licences, urls) are left out, so the
    # mutations land on the ones it does.
    return {"images": images, "annotations": anns, "categories": cats}


@pytest.mark.parametrize("tier", TIERS)
def test_coco_annotation_mutations(tier, tmp_path):
    doc = small_coco()
    path = tmp_path / "instances.json"
    image_dir = shared("coco-mini", "train2017")

    def check(data: bytes) -> None:
        path.write_bytes(data)
        ds = expect_clean(lambda: load_coco(path, image_dir), [path.name])
        if ds is not None:
            check_dataset(ds)

    original = json.dumps(doc, indent=1).encode()
    strategy = st.one_of(file_mutations(original), mutated_tree(doc).map(dump_json))
    run_fuzz(tier, 60, strategy, check)


def test_coco_annotation_regressions(tmp_path):
    """Inputs the fuzzer found (kept as explicit cases)."""
    doc = small_coco()
    image_dir: Path = shared("coco-mini", "train2017")
    path = tmp_path / "instances.json"
    odd = []
    for key, value in (("width", float("inf")), ("height", float("nan")), ("file_name", "9" * 5000 + ".jpg")):
        bad = json.loads(json.dumps(doc))
        bad["images"][0][key] = value
        odd.append(json.dumps(bad).encode())
    cases = [json.dumps(doc).encode("utf-16"), b'{"images": [' + b"9" * 5000 + b"]}", b"[" * 100000] + odd
    for data in cases:
        path.write_bytes(data)
        expect_clean(lambda: load_coco(path, image_dir), [path.name])
