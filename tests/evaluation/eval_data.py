"""Helpers for the evaluation tests: the real BCCD val split and COCO-mini, read independently.

The BCCD ground truth is parsed here straight from the XML (1-based inclusive ints, as the
devkit reads them) so the reference AP and ours see exactly the same objects.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from sppdet.data.dataset import DetectionDataset, ImageRecord
from sppdet.structures import voc_to_xyxy

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BCCD_ROOT = SHARED / "bccd" / "VOC"
BCCD_CLASSES = ["RBC", "WBC", "Platelets"]
COCO_MINI = SHARED / "coco-mini"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available: {path} (expected ../shared/data next to the repo)")
    return path


def parse_voc_xml(path: Path):
    """[(name, [xmin, ymin, xmax, ymax] ints, difficult)] as the devkit's parse_rec reads them."""
    objs = []
    for obj in ET.parse(path).findall("object"):
        bb = obj.find("bndbox")
        box = [int(float(bb.find(k).text)) for k in ("xmin", "ymin", "xmax", "ymax")]
        diff = obj.find("difficult")
        objs.append((obj.find("name").text.strip(), box, int(diff.text) if diff is not None else 0))
    return objs


def dataset_from_raw(raw, classes=BCCD_CLASSES, name="bccd_val") -> DetectionDataset:
    """DetectionDataset (our box convention) from devkit-style raw annotations."""
    recs = []
    for image_id, objs in raw.items():
        boxes = voc_to_xyxy(np.array([o[1] for o in objs], dtype=np.float64).reshape(-1, 4))
        recs.append(
            ImageRecord(
                image_id,
                str(BCCD_ROOT / "JPEGImages" / f"{image_id}.jpg"),
                640,
                480,
                boxes,
                [classes.index(o[0]) + 1 for o in objs],
                [bool(o[2]) for o in objs],
            )
        )
    return DetectionDataset(recs, classes, name, meta={"split": "val"})


def coco_dataset(ann: Path, images: Path) -> DetectionDataset:
    data = json.loads(ann.read_text())
    cats = sorted(c["id"] for c in data["categories"])
    names = {c["id"]: c["name"] for c in data["categories"]}
    per_image = {im["id"]: [] for im in data["images"]}
    for a in data["annotations"]:
        per_image[a["image_id"]].append(a)
    recs = []
    for im in data["images"]:
        anns = [a for a in per_image[im["id"]] if a["bbox"][2] > 0 and a["bbox"][3] > 0]
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        recs.append(
            ImageRecord(
                str(im["id"]),
                str(images / im["file_name"]),
                im["width"],
                im["height"],
                boxes,
                [cats.index(a["category_id"]) + 1 for a in anns],
                iscrowd=[bool(a["iscrowd"]) for a in anns],
                coco_id=im["id"],
            )
        )
    return DetectionDataset(recs, [names[c] for c in cats], "coco_mini", category_ids=cats, meta={"ann_file": str(ann)})
