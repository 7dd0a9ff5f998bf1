"""Detections in memory and on disk: one plain type shared by inference and evaluation.

In memory
---------
``Detections = Dict[str, ImageDetections]``, keyed by the dataset's image id. An image
missing from the dict has no detections. :class:`ImageDetections` holds numpy arrays:
``boxes (N, 4) float32`` in sppdet's convention (continuous ``x1, y1, x2, y2`` pixels, see
:mod:`sppdet.structures`), ``scores (N,) float32`` and ``labels (N,) int64`` in ``1..K``.

The sppdet detections json (written by ``tools/detect.py`` and ``tools/eval.py``)
-------------------------------------------------------------------------------
Comments below are explanations, not part of the file::

    {
      "format": "sppdet-detections",
      "version": 1,
      "box_convention": "xyxy continuous pixels",
      "classes": ["RBC", "WBC", "Platelets"],          # class_names[k-1] is label k
      "images": [
        {"image_id": "BloodImage_00000",               # string, the dataset's image id
         "file_name": "/path/BloodImage_00000.jpg",    # optional
         "width": 640, "height": 480,                  # optional
         "detections": [
           {"class": "WBC", "label": 2, "score": 0.97, "box": [259.0, 176.0, 491.0, 376.0]}
         ]}
      ]
    }

``box`` is ``[x1, y1, x2, y2]`` in continuous pixel coordinates (width ``x2 - x1``, no
``+1``), rounded to 3 decimals; ``score`` keeps 7 significant digits. The writer lists every
image of the dataset, in dataset order. When reading, ``class`` (a name) wins over ``label``;
a class is matched to the evaluation dataset by name, so a file written with another class
order still evaluates correctly. ``label`` alone is read through the file's ``classes`` list
(or, without one, as the dataset's label). Images listed with an empty ``detections`` list,
and images left out, have no detections; image ids not in the evaluated split are an error.

VOC ``comp4`` files
-------------------
One file per class, ``comp4_det_<split>_<class>.txt`` (any ``comp<N>`` prefix is read), one
line per detection ``<image_id> <score> <xmin> <ymin> <xmax> <ymax>`` in the devkit's 1-based
inclusive pixels: ``xmin = x1 + 1, ymin = y1 + 1, xmax = x2, ymax = y2``.

COCO results json
-----------------
A list of ``{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}``
with the original COCO ids. Image ids map through :func:`coco_image_ids`; ``category_id``
through ``dataset.category_ids`` (``category_ids[k-1]`` is label ``k``; a dataset without
them uses ``category_id = k``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..data.dataset import DetectionDataset
from ..errors import DataError
from ..fileio import PathLike, atomic_write, load_json, read_text, save_json
from ..structures import Detections, ImageDetections, voc_to_xyxy, xywh_to_xyxy, xyxy_to_voc, xyxy_to_xywh

FORMAT_NAME = "sppdet-detections"
FORMAT_VERSION = 1
BOX_CONVENTION = "xyxy continuous pixels"

_COMP_RE = re.compile(r"^(comp\d+)_det_(.+)\.txt$")

# ---------------------------------------------------------------------------------------
# Checks shared by the readers


def round_score(v: float) -> float:
    """A score as stored in files: 7 significant digits (float32 precision, short json)."""
    return float(f"{float(v):.7g}")


def _few(items: Iterable[str], n: int = 5) -> str:
    items = list(items)
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(f"'{i}'" for i in items[:n]) + more


def check_detections(detections: Detections, dataset: DetectionDataset, source: str = "detections") -> None:
    """DataError when image ids are not in the dataset, labels are outside 1..K or boxes are bad."""
    unknown = [i for i in detections if i not in dataset]
    if unknown:
        split = dataset.name or "the dataset"
        raise DataError(f"{source}: {len(unknown)} image id(s) not in {split}: {_few(unknown)}")
    k = dataset.num_classes
    for image_id, d in detections.items():
        if len(d) == 0:
            continue
        bad = d.labels[(d.labels < 1) | (d.labels > k)]
        if len(bad):
            raise DataError(f"{source}: image '{image_id}' has label {int(bad[0])} outside 1..{k}")
        if not (np.isfinite(d.boxes).all() and np.isfinite(d.scores).all()):
            raise DataError(f"{source}: image '{image_id}' has non-finite boxes or scores")
        if ((d.boxes[:, 2] < d.boxes[:, 0]) | (d.boxes[:, 3] < d.boxes[:, 1])).any():
            raise DataError(f"{source}: image '{image_id}' has boxes with x2 < x1 or y2 < y1")


def _class_list(dataset: DetectionDataset) -> str:
    names = dataset.class_names
    return ", ".join(names) if len(names) <= 12 else ", ".join(names[:10]) + f", ... ({len(names)} classes)"


def _class_label(name: str, dataset: DetectionDataset, source: str) -> int:
    try:
        return dataset.label_of(name)
    except ValueError:
        raise DataError(f"{source}: unknown class '{name}' (dataset classes: {_class_list(dataset)})") from None


def _group(rows: Dict[str, List[Tuple[Sequence[float], float, int]]]) -> Detections:
    out: Detections = {}
    for image_id, items in rows.items():
        boxes = np.array([r[0] for r in items], dtype=np.float32).reshape(-1, 4)
        out[image_id] = ImageDetections(boxes, [r[1] for r in items], [r[2] for r in items])
    return out


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{what}: expected a number, got {value!r}")
    return float(value)


def _box(value, what: str) -> List[float]:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise DataError(f"{what}: expected 4 numbers, got {value!r}")
    return [_number(v, what) for v in value]


# ---------------------------------------------------------------------------------------
# sppdet json


def sppdet_entry(
    image_id: str,
    detections,
    class_names: Sequence[str],
    file_name: Optional[str] = None,
    width: Optional[int] = None,
    height: Optional[int] = None,
    **extra,
) -> Dict:
    """One image's entry of the sppdet detections json (format in the module docstring).

    ``detections`` has ``boxes (N, 4)`` (x1, y1, x2, y2 continuous pixels), ``scores (N,)`` and
    ``labels (N,)`` in ``1..K``; ``file_name``, ``width`` and ``height`` are left out when None;
    ``extra`` keys (a video frame's ``frame`` and ``time``) go before ``detections``.
    """
    entry: Dict = {"image_id": image_id}
    if file_name is not None:
        entry["file_name"] = str(file_name)
    if width is not None and height is not None:
        entry.update(width=int(width), height=int(height))
    entry.update(extra)
    boxes = np.asarray(detections.boxes, dtype=np.float32).reshape(-1, 4).tolist()
    scores = np.asarray(detections.scores, dtype=np.float32).reshape(-1).tolist()
    labels = np.asarray(detections.labels, dtype=np.int64).reshape(-1).tolist()
    entry["detections"] = [
        {"class": _class_name(label, class_names), "label": int(label), "score": round_score(score), "box": _box3(box)}
        for box, score, label in zip(boxes, scores, labels)
    ]
    return entry


def _class_name(label: int, class_names: Sequence[str]) -> str:
    return class_names[label - 1] if 1 <= label <= len(class_names) else str(label)


def _box3(box: Sequence[float]) -> List[float]:
    return [round(float(v), 3) for v in box]


def sppdet_header(class_names: Sequence[str]) -> Dict:
    """The fields of the sppdet detections json before ``images``."""
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "box_convention": BOX_CONVENTION,
        "classes": list(class_names),
    }


def save_detections(detections: Detections, path: PathLike, dataset: DetectionDataset) -> None:
    """Write the sppdet detections json (format in the module docstring), atomically.

    Every dataset image is listed (in dataset order, with an empty list when it has no
    detections), followed by any detected image id the dataset lacks.
    """
    names = dataset.class_names
    ids = list(dataset.ids) + [i for i in detections if i not in dataset]
    images = []
    for image_id in ids:
        d = detections.get(image_id, ImageDetections())
        if image_id in dataset:
            rec = dataset.get(image_id)
            images.append(sppdet_entry(image_id, d, names, str(rec.file_name), rec.width, rec.height))
        else:
            images.append(sppdet_entry(image_id, d, names))
    save_json({**sppdet_header(names), "images": images}, path, indent=1)


def _parse_sppdet(data: Dict, path: Path, dataset: Optional[DetectionDataset]) -> Detections:
    version = data.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise DataError(f"{path}: sppdet detections version {version!r} not supported (expected {FORMAT_VERSION})")
    if data.get("box_convention", BOX_CONVENTION) != BOX_CONVENTION:
        raise DataError(
            f"{path}: box_convention {data['box_convention']!r} not supported (expected '{BOX_CONVENTION}')"
        )
    file_classes = data.get("classes")
    if file_classes is not None and not (
        isinstance(file_classes, list) and all(isinstance(c, str) for c in file_classes)
    ):
        raise DataError(f"{path}: 'classes' must be a list of class names")
    images = data.get("images")
    if not isinstance(images, list):
        raise DataError(f"{path}: 'images' must be a list")
    rows: Dict[str, list] = {}
    for i, entry in enumerate(images):
        where = f"{path}: images[{i}]"
        if not isinstance(entry, dict) or "image_id" not in entry:
            raise DataError(f"{where}: expected an object with 'image_id'")
        image_id = str(entry["image_id"])
        items = rows.setdefault(image_id, [])
        dets = entry.get("detections", [])
        if not isinstance(dets, list):
            raise DataError(f"{where}: 'detections' must be a list")
        for j, det in enumerate(dets):
            w = f"{where}.detections[{j}]"
            if not isinstance(det, dict) or "box" not in det or "score" not in det:
                raise DataError(f"{w}: expected an object with 'box', 'score' and 'class' or 'label'")
            items.append((_box(det["box"], w), _number(det["score"], w), _sppdet_label(det, file_classes, dataset, w)))
    return _group(rows)


def _sppdet_label(det: Dict, file_classes, dataset: Optional[DetectionDataset], where: str) -> int:
    name = det.get("class")
    if name is None and "label" in det:
        label = det["label"]
        if isinstance(label, bool) or not isinstance(label, int):
            raise DataError(f"{where}: 'label' must be an integer, got {label!r}")
        if file_classes:
            if not 1 <= label <= len(file_classes):
                raise DataError(f"{where}: label {label} outside 1..{len(file_classes)} of the file's classes")
            name = file_classes[label - 1]
        else:
            return label
    if name is None:
        raise DataError(f"{where}: needs 'class' or 'label'")
    if dataset is not None:
        return _class_label(str(name), dataset, where)
    if not file_classes or name not in file_classes:
        raise DataError(f"{where}: unknown class '{name}'")
    return file_classes.index(name) + 1


def load_sppdet_detections(path: PathLike, dataset: Optional[DetectionDataset] = None) -> Detections:
    """Read an sppdet detections json; labels follow ``dataset``'s classes (by name) when given."""
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise DataError(f'{path}: not an sppdet detections file (no "format": "{FORMAT_NAME}")')
    dets = _parse_sppdet(data, path, dataset)
    if dataset is not None:
        check_detections(dets, dataset, str(path))
    return dets


# ---------------------------------------------------------------------------------------
# VOC comp4


def format_number(v: float) -> str:
    """A coordinate as written to comp4 files: at most 2 decimals, no trailing zeros."""
    return f"{v:.2f}".rstrip("0").rstrip(".") if math.isfinite(v) else str(v)


def comp4_lines(image_id: str, detections) -> Iterator[Tuple[int, str]]:
    """``(label, line)`` of each detection: ``image_id score xmin ymin xmax ymax`` in VOC 1-based pixels."""
    voc = xyxy_to_voc(np.asarray(detections.boxes, dtype=np.float32).reshape(-1, 4).astype(np.float64))
    scores = np.asarray(detections.scores, dtype=np.float32).reshape(-1).tolist()
    labels = np.asarray(detections.labels, dtype=np.int64).reshape(-1).tolist()
    for box, score, label in zip(voc.tolist(), scores, labels):
        yield int(label), f"{image_id} {score:.7g} " + " ".join(format_number(v) for v in box)


def save_comp4(
    detections: Detections, out_dir: PathLike, dataset: DetectionDataset, split: str = "test", prefix: str = "comp4"
) -> List[Path]:
    """Write ``<prefix>_det_<split>_<class>.txt`` for every class (empty files included), atomically.

    Lines are ``image_id score xmin ymin xmax ymax`` in VOC 1-based pixels, images in dataset
    order, detections in the order held. Returns the paths written.
    """
    out_dir = Path(out_dir)
    ids = list(dataset.ids) + [i for i in detections if i not in dataset]
    lines: List[List[str]] = [[] for _ in dataset.class_names]
    for image_id in ids:
        d = detections.get(image_id)
        if d is None or len(d) == 0:
            continue
        for label, line in comp4_lines(image_id, d):
            if 1 <= label <= len(lines):
                lines[label - 1].append(line)
    paths = []
    for name, rows in zip(dataset.class_names, lines):
        p = out_dir / f"{prefix}_det_{split}_{name}.txt"
        with atomic_write(p, "w") as f:
            f.write("".join(r + "\n" for r in rows))
        paths.append(p)
    return paths


def _comp4_class(rest: str, dataset: DetectionDataset, path: Path) -> Tuple[str, int]:
    """Split ``<split>_<class>`` (both may hold '_') using the dataset's class names."""
    matches = [c for c in dataset.class_names if rest.endswith("_" + c) and len(rest) > len(c) + 1]
    if not matches:
        name = rest.split("_", 1)[1] if "_" in rest else rest
        raise DataError(f"{path}: unknown class '{name}' in file name (dataset classes: {_class_list(dataset)})")
    name = max(matches, key=len)
    return rest[: -len(name) - 1], dataset.label_of(name)


def _read_comp4_file(path: Path, label: int, rows: Dict[str, list]) -> None:
    for n, line in enumerate(read_text(path, "comp4 file").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise DataError(f"{path}:{n}: expected 'image_id score xmin ymin xmax ymax', got {line.strip()!r}")
        try:
            values = [float(v) for v in parts[1:]]
        except ValueError:
            raise DataError(f"{path}:{n}: not a number in {line.strip()!r}") from None
        box = voc_to_xyxy(np.asarray(values[1:], dtype=np.float64)).tolist()
        rows.setdefault(parts[0], []).append((box, values[0], label))


def load_comp4(path: PathLike, dataset: DetectionDataset, split: Optional[str] = None) -> Detections:
    """Read a folder of ``comp<N>_det_<split>_<class>.txt`` files (or one such file).

    The class comes from the file name. A folder holding files of several splits needs
    ``split`` (or ``dataset.meta["split"]``) to choose; classes without a file have no detections.
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _COMP_RE.match(p.name))
        if not files:
            raise DataError(f"{path}: no comp<N>_det_<split>_<class>.txt files in this folder")
    else:
        raise DataError(f"{path}: detections file or folder not found")
    parsed = []
    for p in files:
        m = _COMP_RE.match(p.name)
        if not m:
            raise DataError(f"{p}: not a VOC results file name (expected comp4_det_<split>_<class>.txt)")
        file_split, label = _comp4_class(m.group(2), dataset, p)
        parsed.append((p, file_split, label))
    splits = sorted({s for _, s, _ in parsed})
    if len(splits) > 1:
        want = split or dataset.meta.get("split")
        if want not in splits:
            raise DataError(f"{path}: files for several splits ({', '.join(splits)}); choose one with split=")
        parsed = [t for t in parsed if t[1] == want]
    rows: Dict[str, list] = {}
    for p, _, label in parsed:
        _read_comp4_file(p, label, rows)
    dets = _group(rows)
    check_detections(dets, dataset, str(path))
    return dets


# ---------------------------------------------------------------------------------------
# COCO results json


def coco_image_ids(dataset: DetectionDataset) -> Dict[str, int]:
    """Integer COCO image id of every record.

    ``record.coco_id`` when every record has one; else ``int(image_id)`` when every id is a
    distinct decimal number (VOC ``"000005"`` -> 5); else the position in the dataset, from 1.
    """
    recs = dataset.records
    if recs and all(r.coco_id is not None for r in recs):
        return {r.image_id: int(r.coco_id or 0) for r in recs}  # all set (checked above)
    if recs and all(r.image_id.isdigit() for r in recs) and len({int(r.image_id) for r in recs}) == len(recs):
        return {r.image_id: int(r.image_id) for r in recs}
    return {r.image_id: i + 1 for i, r in enumerate(recs)}


def category_ids(dataset: DetectionDataset) -> List[int]:
    """Original category id of each label (``[k-1]``); ``1..K`` for datasets without them."""
    if dataset.category_ids is not None:
        return list(dataset.category_ids)
    return list(range(1, dataset.num_classes + 1))


def detections_to_coco_results(detections: Detections, dataset: DetectionDataset) -> List[Dict]:
    """COCO results list (original image and category ids, xywh boxes) for ``detections``."""
    check_detections(detections, dataset)
    img_ids = coco_image_ids(dataset)
    cats = category_ids(dataset)
    out = []
    for image_id in dataset.ids:
        d = detections.get(image_id)
        if d is None or len(d) == 0:
            continue
        out.extend(coco_rows(img_ids[image_id], d, cats))
    return out


def coco_rows(coco_image_id: int, detections, category_ids: Optional[Sequence[int]] = None) -> List[Dict]:
    """COCO results rows (xywh boxes) of one image; ``category_ids[k-1]`` is label k (default: k)."""
    xywh = xyxy_to_xywh(np.asarray(detections.boxes, dtype=np.float32).reshape(-1, 4).astype(np.float64))
    scores = np.asarray(detections.scores, dtype=np.float32).reshape(-1).tolist()
    labels = np.asarray(detections.labels, dtype=np.int64).reshape(-1).tolist()
    return [
        {
            "image_id": coco_image_id,
            "category_id": int(category_ids[label - 1] if category_ids is not None else label),
            "bbox": [round(v, 3) for v in box],
            "score": round_score(score),
        }
        for box, score, label in zip(xywh.tolist(), scores, labels)
    ]


def save_coco_results(detections: Detections, path: PathLike, dataset: DetectionDataset) -> None:
    """Write a COCO results json (see :func:`detections_to_coco_results`), atomically."""
    save_json(detections_to_coco_results(detections, dataset), path, indent=None)


def _parse_coco_results(data: List, path: Path, dataset: DetectionDataset) -> Detections:
    by_int = {v: k for k, v in coco_image_ids(dataset).items()}
    cat_to_label = {c: k + 1 for k, c in enumerate(category_ids(dataset))}
    rows: Dict[str, list] = {}
    missing: List[str] = []
    for i, r in enumerate(data):
        where = f"{path}: [{i}]"
        if not isinstance(r, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(r):
            raise DataError(f"{where}: expected an object with image_id, category_id, bbox, score")
        img, cat = r["image_id"], r["category_id"]
        if isinstance(img, bool) or not isinstance(img, int):
            raise DataError(f"{where}: image_id must be an integer, got {img!r}")
        if isinstance(cat, bool) or not isinstance(cat, int):
            raise DataError(f"{where}: category_id must be an integer, got {cat!r}")
        if cat not in cat_to_label:
            raise DataError(
                f"{where}: unknown category_id {cat!r} (dataset category ids: "
                f"{', '.join(map(str, category_ids(dataset)))})"
            )
        if img not in by_int:
            missing.append(str(img))
            continue
        box = xywh_to_xyxy(np.asarray(_box(r["bbox"], where), dtype=np.float64)).tolist()
        rows.setdefault(by_int[img], []).append((box, _number(r["score"], where), cat_to_label[cat]))
    if missing:
        uniq = list(dict.fromkeys(missing))
        raise DataError(f"{path}: {len(uniq)} image id(s) not in {dataset.name or 'the dataset'}: {_few(uniq)}")
    return _group(rows)


def load_coco_results(path: PathLike, dataset: DetectionDataset) -> Detections:
    """Read a COCO results json (a list of detections) against ``dataset``'s id mappings."""
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: a COCO results file is a json list of detections")
    dets = _parse_coco_results(data, path, dataset)
    check_detections(dets, dataset, str(path))
    return dets


# ---------------------------------------------------------------------------------------


def load_detections(path: PathLike, dataset: DetectionDataset, split: Optional[str] = None) -> Detections:
    """Read detections in any supported format, detected from the content.

    ``path`` may be an sppdet detections json, a COCO results json, a folder of VOC comp4
    files or one comp4 file. Raises :class:`DataError` for unknown classes, image ids outside
    the dataset and malformed entries. An empty file (``[]`` or no detections) is valid.
    """
    path = Path(path)
    if path.is_dir() or (path.is_file() and path.suffix.lower() == ".txt"):
        return load_comp4(path, dataset, split)
    if not path.exists():
        raise DataError(f"{path}: detections file or folder not found")
    data = load_json(path)
    if isinstance(data, list):
        dets = _parse_coco_results(data, path, dataset)
    elif isinstance(data, dict) and data.get("format") == FORMAT_NAME:
        dets = _parse_sppdet(data, path, dataset)
    elif isinstance(data, dict) and "annotations" in data and "images" in data:
        raise DataError(f"{path}: this is a COCO annotation file, not detections (give a results list)")
    else:
        raise DataError(
            f"{path}: unrecognised detections file (expected an sppdet detections json, "
            f"a COCO results list, or a folder of comp4 files)"
        )
    check_detections(dets, dataset, str(path))
    return dets


def num_detections(detections: Detections) -> int:
    """Number of detections over all images."""
    return sum(len(d) for d in detections.values())
