"""Fixtures for the evaluation tests (helpers live in eval_data.py)."""

from __future__ import annotations

import pytest
from eval_data import BCCD_ROOT, COCO_MINI, coco_dataset, need, parse_voc_xml


@pytest.fixture(scope="session")
def bccd_val_raw():
    """{image_id: [(name, voc_box, difficult)]} of the BCCD val split, in split order."""
    root = need(BCCD_ROOT)
    ids = (root / "ImageSets" / "Main" / "val.txt").read_text().split()
    return {i: parse_voc_xml(root / "Annotations" / f"{i}.xml") for i in ids}


@pytest.fixture(scope="session")
def coco_mini():
    """COCO-mini as a DetectionDataset (sppdet.data.coco.load_coco when present)."""
    ann = need(COCO_MINI / "annotations" / "instances_train2017.json")
    images = COCO_MINI / "train2017"
    try:
        from sppdet.data.coco import load_coco
    except ImportError:
        return coco_dataset(ann, images)
    return load_coco(str(ann), str(images))
