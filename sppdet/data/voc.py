"""PASCAL VOC reader and writer.

Layout: ``ROOT/Annotations/<id>.xml``, ``ROOT/JPEGImages/<file>``, ``ROOT/ImageSets/Main/<split>.txt``
(one id per line; a second column, as in the per-class lists, is ignored). With ``split=None``
or ``""`` every XML in ``Annotations`` is read, as labelImg and similar tools leave it.

VOC coordinates are 1-based inclusive pixel indices, so ``xmin=1, xmax=10`` is ten pixels;
ours are continuous with the image at ``[0, W]``: ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax,
y2 = ymax`` (:func:`sppdet.structures.voc_to_xyxy`).

Messy files: what the reader does
---------------------------------
======================================  ================================================
case                                    policy
======================================  ================================================
box touching or past the image border   clipped to ``[0, W] x [0, H]`` (counted in
                                        ``dataset.meta["issues"]["clipped_boxes"]``)
zero-size or inverted box after clip    dropped, :class:`DataWarning` naming file + object
NaN / inf coordinate                    dropped, :class:`DataWarning` naming file + object
non-numeric coordinate, no ``bndbox``   :class:`DataError` naming file + object
``<size>`` disagrees with the image     the image wins: every image's header is read
                                        (about 0.2 ms each); counted as ``size_mismatch``
                                        and one :class:`DataWarning` per load names the
                                        first file and how many more
``<size>`` missing or zero              same: the size comes from the image
class name with stray spaces / case     stripped and matched case-insensitively
unknown class                           :class:`DataError` naming file and class, or
                                        dropped and counted with ``skip_unknown=True``
``difficult`` / ``truncated`` missing   0
stale ``<path>`` / ``<folder>``         ignored; the image is ``JPEGImages/<filename>``,
                                        else ``JPEGImages/<id>.jpg|.jpeg|.png``
image file not found                    :class:`DataError` naming id and tried paths
split id without an XML                 :class:`DataError` naming id and split file
id listed twice in a split              :class:`DataError` naming id and split file
malformed XML                           :class:`DataError` naming file and line
``<!DOCTYPE`` / ``<!ENTITY``            :class:`DataError` (no entity expansion, ever)
======================================  ================================================

A 1x1 box (``xmin == xmax``) is one pixel in VOC's convention, so it is valid and kept.
"""

from __future__ import annotations

import math
import os
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DataError
from ..fileio import is_file, read_text, save_text
from ..structures import clip_boxes, voc_to_xyxy, xyxy_to_voc
from .dataset import DataWarning, DetectionDataset, ImageRecord
from .image_io import image_size

PathLike = Union[str, os.PathLike]

#: The 20 PASCAL VOC classes in the standard order (label k is VOC_CLASSES[k-1]).
VOC_CLASSES: Tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
_COORDS = ("xmin", "ymin", "xmax", "ymax")


# ---------------------------------------------------------------------------------------
# Safe XML


def parse_xml_file(path: Path) -> ET.Element:
    """Parse an XML file, refusing DTDs and entity declarations (no expansion attacks)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    text = raw.decode("utf-16", errors="replace") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("latin-1")
    upper = text.replace("\x00", "").upper()  # NULs removed: UTF-16/32 without a BOM are caught too
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        raise DataError(f"{path}: XML with a DOCTYPE or ENTITY declaration is refused (unsafe)")
    try:
        return ET.fromstring(raw)
    except ET.ParseError as e:
        line, col = getattr(e, "position", (0, 0))
        msg = str(e).split(":")[0]
        raise DataError(f"{path}: malformed XML at line {line}, column {col + 1} ({msg})") from None
    except ValueError as e:  # expat: "multi-byte encodings are not supported" (UTF-16 without a BOM)
        raise DataError(f"{path}: unsupported XML encoding ({e}); save it as UTF-8") from None


def _text(node: Optional[ET.Element], tag: str) -> Optional[str]:
    child = node.find(tag) if node is not None else None
    if child is None or child.text is None:
        return None
    return child.text.strip()


def _flag(obj: ET.Element, tag: str, path: Path, index: int) -> bool:
    value = _text(obj, tag)
    if not value:
        return False
    try:
        return float(value) != 0
    except ValueError:
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise DataError(f"{path}: object {index}: <{tag}> is '{value}', expected 0 or 1") from None


def _size_from_xml(root: ET.Element) -> Tuple[int, int]:
    size = root.find("size")
    try:
        return int(float(_text(size, "width") or 0)), int(float(_text(size, "height") or 0))
    except (ValueError, OverflowError):
        return 0, 0


# ---------------------------------------------------------------------------------------
# One file


class _ClassLookup:
    """Class name -> label, tolerant of stray spaces and case."""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.exact = {n.strip(): k + 1 for k, n in enumerate(class_names)}
        folded = Counter(n.strip().lower() for n in class_names)
        self.folded = {n.strip().lower(): k + 1 for k, n in enumerate(class_names) if folded[n.strip().lower()] == 1}

    def __call__(self, name: str) -> Optional[int]:
        name = name.strip()
        return self.exact.get(name) or self.folded.get(name.lower())


def _find_image(root: Path, image_id: str, filename: Optional[str]) -> Path:
    folder = root / "JPEGImages"
    tried = []
    if filename:
        p = folder / Path(filename.replace("\\", "/")).name  # never follow a path out of JPEGImages
        if is_file(p):
            return p
        tried.append(p.name)
    for ext in _IMAGE_EXTS:
        p = folder / (image_id + ext)
        if p.is_file():
            return p
        tried.append(p.name)
    raise DataError(f"{folder}: no image for id '{image_id}' (tried {', '.join(dict.fromkeys(tried))})")


def _parse_annotation(
    xml_path: PathLike,
    root: PathLike,
    lookup: "_ClassLookup",
    issues: Counter,
    skip_unknown: bool = False,
    size_notes: Optional[List[str]] = None,
) -> ImageRecord:
    """Read one annotation file into an :class:`ImageRecord` (policy: module docstring).

    A stated ``<size>`` that differs from the image is noted in ``size_notes`` (when given).
    """
    xml_path, root = Path(xml_path), Path(root)
    image_id = xml_path.stem
    ann = parse_xml_file(xml_path)
    if ann.tag != "annotation":
        raise DataError(f"{xml_path}: root element is <{ann.tag}>, expected <annotation>")
    file_name = _find_image(root, image_id, _text(ann, "filename"))
    width, height = image_size(file_name)
    declared = _size_from_xml(ann)
    if declared != (width, height):
        issues["size_mismatch"] += 1
        if declared[0] > 0 and declared[1] > 0 and size_notes is not None:  # wrong, not just missing
            size_notes.append(
                f"{xml_path}: <size> says {declared[0]}x{declared[1]} but {file_name.name} is {width}x{height}"
            )

    boxes, labels, difficult, truncated, dropped = [], [], [], [], []
    for i, obj in enumerate(ann.findall("object")):
        name = _text(obj, "name")
        if not name:
            raise DataError(f"{xml_path}: object {i} has no <name>")
        label = lookup(name)
        if label is None:
            if not skip_unknown:
                raise DataError(f"{xml_path}: object {i} has unknown class '{name}' (not in the dataset's class list)")
            issues["skipped_unknown"] += 1
            continue
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DataError(f"{xml_path}: object {i} ('{name}') has no <bndbox>")
        coords = []
        for tag in _COORDS:
            value = _text(bnd, tag)
            try:
                coords.append(float(value))
            except (TypeError, ValueError):
                raise DataError(
                    f"{xml_path}: object {i} ('{name}'): <{tag}> is {'missing' if value is None else repr(value)}"
                ) from None
        if not all(math.isfinite(c) for c in coords):
            dropped.append(f"object {i} ('{name}'): non-finite coordinate")
            continue
        box = voc_to_xyxy(np.array([coords], dtype=np.float64))
        clipped = clip_boxes(box, width, height)
        if not np.array_equal(box, clipped):
            issues["clipped_boxes"] += 1
        x1, y1, x2, y2 = clipped[0]
        if x2 <= x1 or y2 <= y1:
            dropped.append(f"object {i} ('{name}'): empty after clipping to the {width}x{height} image")
            continue
        boxes.append(clipped[0])
        labels.append(label)
        difficult.append(_flag(obj, "difficult", xml_path, i))
        truncated.append(_flag(obj, "truncated", xml_path, i))
    if dropped:
        issues["dropped_boxes"] += len(dropped)
        warnings.warn(f"{xml_path}: dropped {'; '.join(dropped)}", DataWarning, stacklevel=3)
    return ImageRecord(
        image_id, str(file_name), width, height, np.array(boxes, dtype=np.float32), labels, difficult, truncated
    )


# ---------------------------------------------------------------------------------------
# A whole dataset


def read_split_file(path: Path) -> List[str]:
    """Ids listed in an ``ImageSets/Main`` file (first column), refusing duplicates."""
    ids: List[str] = []
    seen = set()
    for n, line in enumerate(read_text(path, "split file").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if parts[0] in seen:
            raise DataError(f"{path}: line {n}: id '{parts[0]}' is listed twice")
        seen.add(parts[0])
        ids.append(parts[0])
    return ids


def _split_ids(root: Path, split: Optional[str]) -> Tuple[List[str], Optional[Path]]:
    ann_dir = root / "Annotations"
    if not ann_dir.is_dir():
        raise DataError(f"{root}: no Annotations/ folder (expected a PASCAL VOC layout, see data/README.md)")
    if not split:
        return sorted(p.stem for p in ann_dir.glob("*.xml")), None
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        have = sorted(p.stem for p in split_file.parent.glob("*.txt") if "_" not in p.stem)
        raise DataError(f"{split_file}: split file not found (splits here: {', '.join(have) or 'none'})")
    ids = read_split_file(split_file)
    for image_id in ids:
        if not is_file(ann_dir / f"{image_id}.xml"):
            raise DataError(f"{split_file}: id '{image_id}' has no annotation file {ann_dir / (image_id + '.xml')}")
    return ids, split_file


def load_voc(
    root: PathLike,
    split: Optional[str] = None,
    class_names: Optional[Sequence[str]] = None,
    name: Optional[str] = None,
    skip_unknown: bool = False,
) -> DetectionDataset:
    """Load a PASCAL VOC style dataset.

    Args:
        root: folder holding ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/``.
        split: split name (``ImageSets/Main/<split>.txt``); None or "" reads every XML.
        class_names: class list in label order (label k is ``class_names[k-1]``); default
            :data:`VOC_CLASSES`.
        name: dataset name for logs (default ``"<root folder>/<split>"``).
        skip_unknown: drop objects of classes not in ``class_names`` instead of raising.

    Returns:
        A :class:`DetectionDataset`; ``meta`` holds ``format``, ``root``, ``split``,
        ``split_file`` and ``issues`` (counts of clipped/dropped boxes, size mismatches,
        skipped unknown objects).
    """
    root = Path(root)
    class_names = list(class_names) if class_names else list(VOC_CLASSES)
    ids, split_file = _split_ids(root, split)
    lookup = _ClassLookup(class_names)
    issues: Counter = Counter()
    size_notes: List[str] = []
    records = [
        _parse_annotation(root / "Annotations" / f"{i}.xml", root, lookup, issues, skip_unknown, size_notes)
        for i in ids
    ]
    if size_notes:
        more = f" (and {len(size_notes) - 1} more annotation files)" if len(size_notes) > 1 else ""
        warnings.warn(
            f"{size_notes[0]}{more}; the image's size is used (if the image was resized after "
            "annotation, its boxes are in the wrong pixels)",
            DataWarning,
            stacklevel=2,
        )
    meta = {
        "format": "voc",
        "root": str(root),
        "split": split or "",
        "split_file": str(split_file) if split_file else "",
        "issues": {k: issues.get(k, 0) for k in ("clipped_boxes", "dropped_boxes", "size_mismatch", "skipped_unknown")},
    }
    return DetectionDataset(records, class_names, name or f"{root.name}/{split or 'all'}", meta=meta)


# ---------------------------------------------------------------------------------------
# Writing


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.2f}".rstrip("0").rstrip(".")


def write_voc_annotation(
    path: PathLike,
    record: ImageRecord,
    class_names: Sequence[str],
    folder: str = "JPEGImages",
    database: str = "sppdet",
) -> None:
    """Write ``record`` as a standard VOC annotation XML (atomically); see :func:`voc_annotation_text`."""
    save_text(voc_annotation_text(record, class_names, folder, database), path)


def voc_annotation_text(
    record: ImageRecord, class_names: Sequence[str], folder: str = "JPEGImages", database: str = "sppdet"
) -> str:
    """A standard VOC annotation XML for ``record``.

    Boxes are converted back to 1-based inclusive indices (:func:`~sppdet.structures.xyxy_to_voc`);
    integral values are written as integers.
    """
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = folder
    ET.SubElement(ann, "filename").text = Path(record.file_name).name
    source = ET.SubElement(ann, "source")
    ET.SubElement(source, "database").text = database
    size = ET.SubElement(ann, "size")
    for tag, v in (("width", record.width), ("height", record.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(int(v))
    ET.SubElement(ann, "segmented").text = "0"
    voc = xyxy_to_voc(np.asarray(record.boxes, dtype=np.float64).reshape(-1, 4))
    for k in range(record.num_objects):
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = class_names[int(record.labels[k]) - 1]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = str(int(record.truncated[k]))
        ET.SubElement(obj, "difficult").text = str(int(record.difficult[k]))
        bnd = ET.SubElement(obj, "bndbox")
        for tag, v in zip(_COORDS, voc[k]):
            ET.SubElement(bnd, tag).text = _fmt(float(v))
    ET.indent(ann, space="\t")
    return ET.tostring(ann, encoding="unicode") + "\n"
