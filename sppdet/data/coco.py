"""COCO reader: an ``instances_*.json`` plus its image folder, indexed with pycocotools.

Labels: the json's categories sorted by id become labels ``1..K``; ``dataset.category_ids[k-1]``
is the original id of label ``k`` (COCO 2017 ids run 1..90 with gaps), so detections can be
written back with :func:`label_to_category_id`. ``dataset.meta["ann_file"]`` keeps the json
path for COCOeval.

Records: ``image_id = str(id)``, ``coco_id = id``, ``file_name = image_dir/<file_name>``,
width/height from the json (COCOeval uses them too; missing or zero -> read from the image).
Boxes ``[x, y, w, h]`` become ours ``(x1, y1, x1 + w, y1 + h)``, clipped to the image; a box
that is empty after clipping, or not finite, is dropped with a :class:`DataWarning`.
``iscrowd`` boxes are kept and flagged (``record.iscrowd``): they are not training targets
(:meth:`ImageRecord.training_mask`) and evaluation ignores them. Images without annotations
are kept (negatives). A json without an ``annotations`` list (COCO test-dev image info) loads
as images with no boxes.

Errors (:class:`DataError`, naming the file and the key): unreadable json; missing
``images``/``categories``; an image, annotation or category without a required key;
duplicate image, annotation or category ids; an annotation pointing to an unknown image or
category; a bbox that is not four numbers; an image file that does not exist.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from pycocotools.coco import COCO

from ..errors import DataError, SppdetError
from ..fileio import is_file, load_json
from ..structures import clip_boxes, xywh_to_xyxy
from .dataset import DataWarning, DetectionDataset, ImageRecord
from .image_io import image_size

PathLike = Union[str, os.PathLike]

_IMAGE_KEYS = ("id", "file_name")
_ANN_KEYS = ("id", "image_id", "category_id", "bbox")
_CAT_KEYS = ("id", "name")


def _check_items(data: Dict, key: str, required: Sequence[str], path: Path) -> List[Dict]:
    items = data.get(key)
    if not isinstance(items, list):
        raise DataError(f"{path}: '{key}' is missing or not a list")
    seen = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{path}: {key}[{i}] is not an object")
        for k in required:
            if k not in item:
                raise DataError(f"{path}: {key}[{i}] has no '{k}'")
        for k in ("id", "image_id", "category_id"):
            v = item.get(k, 0)
            if isinstance(v, bool) or not isinstance(v, (int, str)):  # unhashable or odd: not an id
                raise DataError(f"{path}: {key}[{i}]: '{k}' must be an integer, got {v!r}")
        if item["id"] in seen:
            raise DataError(f"{path}: {key}[{i}]: duplicate id {item['id']!r}")
        seen.add(item["id"])
    return items


def _read_json(path: Path) -> Dict:
    try:
        data = load_json(path)
    except DataError:
        raise
    except SppdetError as e:
        raise DataError(str(e)) from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: top level is not a JSON object")
    for i, im in enumerate(_check_items(data, "images", _IMAGE_KEYS, path)):
        if isinstance(im["id"], bool) or not isinstance(im["id"], int):
            raise DataError(f"{path}: images[{i}]: 'id' must be an integer, got {im['id']!r}")
        for k in ("width", "height"):
            v = im.get(k, 0)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise DataError(f"{path}: images[{i}]: '{k}' must be a number, got {im.get(k)!r}")
    for i, cat in enumerate(_check_items(data, "categories", _CAT_KEYS, path)):
        if isinstance(cat["id"], str) or not isinstance(cat["name"], str):
            raise DataError(f"{path}: categories[{i}]: needs an integer 'id' and a string 'name', got {cat!r}"[:300])
    if "annotations" not in data:
        data["annotations"] = []
    anns = _check_items(data, "annotations", _ANN_KEYS, path)
    image_ids = {im["id"] for im in data["images"]}
    cat_ids = {c["id"] for c in data["categories"]}
    for i, a in enumerate(anns):
        if a["image_id"] not in image_ids:
            raise DataError(f"{path}: annotations[{i}]: image_id {a['image_id']!r} is not in 'images'")
        if a["category_id"] not in cat_ids:
            raise DataError(f"{path}: annotations[{i}]: category_id {a['category_id']!r} is not in 'categories'")
        bbox = a["bbox"]
        if not (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
        ):
            raise DataError(f"{path}: annotations[{i}]: 'bbox' must be 4 numbers [x, y, w, h], got {bbox!r}")
    return data


def _coco_index(data: Dict):
    """A pycocotools ``COCO`` object over already-validated json (its prints silenced)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco(
    ann_file: PathLike,
    image_dir: PathLike,
    name: Optional[str] = None,
    class_names: Optional[Sequence[str]] = None,
    skip_missing: bool = False,
) -> DetectionDataset:
    """Load a COCO instances json and its image folder.

    Args:
        ann_file: ``instances_*.json``.
        image_dir: folder the json's ``file_name`` entries are relative to.
        name: dataset name for logs (default: the json's file stem).
        class_names: keep only these categories (by name), in this label order; objects of
            other categories are left out. Default: every category, sorted by id.
        skip_missing: leave out images whose file does not exist (one :class:`DataWarning`
            with the count, ``meta["issues"]["missing_images"]``) instead of raising.
    """
    ann_file, image_dir = Path(ann_file), Path(image_dir)
    data = _read_json(ann_file)
    coco = _coco_index(data)
    cats = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
    if class_names:
        by_name = {c["name"]: c for c in cats}
        unknown = [n for n in class_names if n not in by_name]
        if unknown:
            raise DataError(f"{ann_file}: no category named {unknown[0]!r} (classes asked for in the config)")
        cats = [by_name[n] for n in class_names]
    category_ids = [int(c["id"]) for c in cats]
    cat_to_label = {c: k + 1 for k, c in enumerate(category_ids)}

    issues: Counter = Counter()
    records = []
    missing: List[Dict] = [img for img in data["images"] if not is_file(image_dir / str(img["file_name"]))]
    if missing:
        first = ", ".join(str(img["file_name"]) for img in missing[:3])
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        line = f"{ann_file}: {len(missing)} image(s) missing from {image_dir}: {first} not found{more}"
        if not skip_missing:
            raise DataError(f"{line}; set data.skip_missing=true to leave them out")
        warnings.warn(f"skipped {line}", DataWarning, stacklevel=2)
        issues["missing_images"] = len(missing)
    skip = {id(img) for img in missing}
    for img in data["images"]:
        if id(img) not in skip:
            records.append(_make_record(coco, img, image_dir, cat_to_label, ann_file, issues))
    keys = ("clipped_boxes", "dropped_boxes", "other_categories", "missing_images")
    meta = {
        "format": "coco",
        "ann_file": str(ann_file),
        "image_dir": str(image_dir),
        "issues": {k: issues.get(k, 0) for k in keys},
    }
    return DetectionDataset(
        records, [c["name"] for c in cats], name or ann_file.stem, category_ids=category_ids, meta=meta
    )


def _make_record(
    coco, img: Dict, image_dir: Path, cat_to_label: Dict[int, int], ann_file: Path, issues: Counter
) -> ImageRecord:
    file_name = image_dir / str(img["file_name"])
    if not is_file(file_name):
        raise DataError(f"{ann_file}: image {img['id']!r}: file {file_name} not found")
    width, height = int(img.get("width") or 0), int(img.get("height") or 0)
    if width <= 0 or height <= 0:
        width, height = image_size(file_name)
    anns = coco.imgToAnns.get(img["id"], [])
    kept = [a for a in anns if a["category_id"] in cat_to_label]
    issues["other_categories"] += len(anns) - len(kept)
    xywh = np.array([a["bbox"] for a in kept], dtype=np.float64).reshape(-1, 4)
    finite = np.asarray(np.isfinite(xywh).all(axis=1), dtype=bool)
    box = xywh_to_xyxy(np.where(finite[:, None], xywh, 0.0))
    clipped = clip_boxes(box, width, height)
    issues["clipped_boxes"] += int((finite & (box != clipped).any(axis=1)).sum())
    valid = finite & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    dropped = [
        f"annotation {a['id']}: "
        + (f"bbox {a['bbox']} is empty inside the {width}x{height} image" if ok else "non-finite bbox")
        for a, ok, v in zip(kept, finite, valid)
        if not v
    ]
    boxes = clipped[valid]
    labels = [cat_to_label[a["category_id"]] for a, v in zip(kept, valid) if v]
    crowd = [bool(a.get("iscrowd", 0)) for a, v in zip(kept, valid) if v]
    if dropped:
        issues["dropped_boxes"] += len(dropped)
        warnings.warn(f"{ann_file}: image {img['id']}: dropped {'; '.join(dropped)}", DataWarning, stacklevel=3)
    return ImageRecord(
        str(img["id"]),
        str(file_name),
        width,
        height,
        np.array(boxes, dtype=np.float32),
        np.array(labels, dtype=np.int64),
        iscrowd=np.array(crowd, dtype=bool),
        coco_id=int(img["id"]),
    )


@dataclass(frozen=True)
class CocoLayout:
    """The json files and image folders of a COCO export (``test_ann`` None: one json only)."""

    train_ann: Path
    train_images: Path
    test_ann: Optional[Path]
    test_images: Optional[Path]


_TRAIN_WORDS = ("train",)
_VAL_WORDS = ("valid", "val", "test")


def _image_folder_for(ann: Path, root: Path, hint: str) -> Path:
    """The folder the json's ``file_name`` entries are relative to: the first candidate holding
    the first image (json's folder, ``root/<hint>``, ``root/images``, ``root``)."""
    data = load_json(ann)
    images = data.get("images") if isinstance(data, dict) else None
    first = (
        str(images[0].get("file_name", ""))
        if isinstance(images, list) and images and isinstance(images[0], dict)
        else ""
    )
    candidates = [ann.parent, root / hint, root / "images", root / "images" / hint, root]
    for c in candidates:
        if first and is_file(c / first):
            return c
    return next((c for c in candidates if c.is_dir()), root)


def find_coco_layout(root: PathLike) -> CocoLayout:
    """Find the jsons of a COCO-format export under ``root`` (Roboflow, CVAT, COCO itself).

    Roboflow: ``train/_annotations.coco.json`` (images beside it), ``valid/`` for validation.
    CVAT "COCO 1.0": ``annotations/instances_default.json`` + ``images/``. COCO:
    ``annotations/instances_{train,val}*.json`` + ``train2017/``, ``val2017/``. Else the one json
    in ``root`` or ``root/annotations``. A json whose name says train, and one that says
    valid/val/test, become the two splits; a single json is split later (seeded).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    jsons = sorted(root.glob("*/_annotations.coco.json")) + sorted((root / "annotations").glob("*.json"))
    jsons += sorted(root.glob("*.json"))
    if not jsons:
        raise DataError(f"{root}: no COCO json here (looked for */_annotations.coco.json, annotations/*.json, *.json)")

    def tag(p: Path) -> str:
        return (p.parent.name if p.name == "_annotations.coco.json" else p.stem).lower()

    train = [p for p in jsons if any(w in tag(p) for w in _TRAIN_WORDS)]
    val = [p for p in jsons if any(w in tag(p) for w in _VAL_WORDS) and p not in train]
    if not train:
        if len(jsons) > 1:
            names = ", ".join(str(p.relative_to(root)) for p in jsons)
            raise DataError(f"{root}: several COCO jsons ({names}) and none named train; set data.train_ann")
        train = jsons
    tr = train[0]
    va = next((p for p in val if "val" in tag(p)), val[0] if val else None)
    test_images = _image_folder_for(va, root, tag(va).replace("instances_", "")) if va else None
    return CocoLayout(tr, _image_folder_for(tr, root, tag(tr).replace("instances_", "")), va, test_images)


def coco_class_counts(ann_file: PathLike) -> Tuple[Counter, List[str]]:
    """Annotations per category name, and the names of the categories that have any, by id.

    This is class discovery for COCO: a category nothing is annotated with (such as the
    supercategory Roboflow exports as id 0) is not a class to learn.
    """
    ann_file = Path(ann_file)
    data = _read_json(ann_file)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    used = Counter(a["category_id"] for a in data["annotations"])
    counts: Counter = Counter({str(c["name"]): used[c["id"]] for c in cats if used[c["id"]]})
    return counts, [str(c["name"]) for c in cats if used[c["id"]]]


def label_to_category_id(dataset: DetectionDataset, label: int) -> int:
    """Original category id of label ``1..K`` (datasets without ``category_ids``: the label)."""
    if not 1 <= int(label) <= dataset.num_classes:
        raise ValueError(f"label {label} out of range 1..{dataset.num_classes}")
    if dataset.category_ids is None:
        return int(label)
    return dataset.category_ids[int(label) - 1]


def category_id_to_label(dataset: DetectionDataset, category_id: int) -> int:
    """Label ``1..K`` of an original category id (inverse of :func:`label_to_category_id`)."""
    ids = dataset.category_ids if dataset.category_ids is not None else range(1, dataset.num_classes + 1)
    try:
        return list(ids).index(int(category_id)) + 1
    except ValueError:
        raise ValueError(f"category id {category_id} not in {dataset.name or 'dataset'}") from None
