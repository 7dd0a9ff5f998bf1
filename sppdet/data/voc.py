"""PASCAL VOC reader and writer.

Layout: ``ROOT/Annotations/<id>.xml``, ``ROOT/JPEGImages/<file>``, ``ROOT/ImageSets/Main/<split>.txt``
(one id per line; a second column, as in the per-class lists, is ignored). With ``split=None``
or ``""`` every XML in ``Annotations`` is read, as labelImg and similar tools leave it.

Exports as they come (labelImg, CVAT "PASCAL VOC", Roboflow "Pascal VOC") are read without
renaming anything (:func:`find_voc_layout`): folder names match without regard to case
(``annotations/``, ``JPEGImages``/``images``/``Images``); with no annotation folder the XMLs may
lie in ROOT itself, beside their images. An image is looked for in ``JPEGImages/``, then
``images/``, then beside the XMLs, then in ROOT: first by the XML's ``<filename>`` (its base name;
with the usual extensions when it has none), then by the XML's own name with ``.jpg``,
``.jpeg``, ``.png``, ``.bmp`` (file names compared without regard to case).

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
stale ``<path>`` / ``<folder>``         ignored; the image is found as described above
image file not found                    :class:`DataError` with the count and the first few
                                        ids; with ``skip_missing=True`` those XMLs are left
                                        out with one :class:`DataWarning` giving the count
                                        (``meta["issues"]["missing_images"]``)
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
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

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

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
#: Missing images named in a refusal or warning (the rest are counted).
_FIRST_FEW = 3
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


def _child_dir(parent: Path, name: str) -> Optional[Path]:
    """``parent/name`` as a folder, the name matched without regard to case (exact first)."""
    exact = parent / name
    if exact.is_dir():
        return exact
    for child in sorted(parent.iterdir()):
        if child.name.lower() == name.lower() and child.is_dir():
            return child
    return None


@dataclass(frozen=True)
class VocLayout:
    """Where the parts of a VOC-style folder are (see the module docstring).

    ``image_sets`` is ``ImageSets/Main`` when the folder has one, else None.
    """

    root: Path
    annotations: Path
    image_dirs: Tuple[Path, ...]
    image_sets: Optional[Path]

    def xml_ids(self) -> List[str]:
        """Stems of every ``.xml`` in the annotation folder, sorted."""
        return sorted(p.stem for p in self.annotations.iterdir() if p.suffix.lower() == ".xml" and p.is_file())

    def split_file(self, split: str) -> Optional[Path]:
        """``ImageSets/Main/<split>.txt`` when it exists."""
        if self.image_sets is None:
            return None
        p = self.image_sets / f"{split}.txt"
        return p if p.is_file() else None


def image_folder(root: PathLike) -> Optional[Path]:
    """A dataset folder's image sub-folder (``JPEGImages/`` or ``images/``, any case), or None."""
    root = Path(root)
    return _child_dir(root, "JPEGImages") or _child_dir(root, "images")


def export_split_folders(root: PathLike) -> Dict[str, Path]:
    """``{"train": ROOT/train, "val": ROOT/valid}`` for an export with one folder per split
    (Roboflow "Pascal VOC": XMLs beside the images in ``train/``, ``valid/``, ``test/``), when
    ``root`` itself holds no annotations; else ``{}``. ``val`` is absent without a valid/val folder."""
    root = Path(root)
    if _child_dir(root, "Annotations") is not None or any(p.suffix.lower() == ".xml" for p in root.iterdir()):
        return {}
    train = _child_dir(root, "train")
    if train is None or not any(p.suffix.lower() == ".xml" for p in train.iterdir()):
        return {}
    val = _child_dir(root, "valid") or _child_dir(root, "val")
    return {"train": train, "val": val} if val is not None else {"train": train}


def find_voc_layout(root: PathLike) -> VocLayout:
    """Locate annotations, image folders and split files under ``root`` (module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    ann = _child_dir(root, "Annotations")
    if ann is None:
        if not any(p.suffix.lower() == ".xml" for p in root.iterdir()):
            raise DataError(
                f"{root}: no Annotations/ folder and no .xml files here (expected a PASCAL VOC layout, "
                "see data/README.md)"
            )
        ann = root  # XMLs beside their images
    dirs = [_child_dir(root, "JPEGImages"), _child_dir(root, "images"), ann, root]  # search order
    image_dirs = tuple(dict.fromkeys(d for d in dirs if d is not None))
    sets = _child_dir(root, "ImageSets")
    main = _child_dir(sets, "Main") if sets is not None else None
    return VocLayout(root, ann, image_dirs, main)


class _ImageIndex:
    """Image files of a layout's image folders by lower-case name (earlier folders win)."""

    def __init__(self, layout: VocLayout) -> None:
        self.layout = layout
        self.files: Dict[str, Path] = {}
        for folder in reversed(layout.image_dirs):
            for f in folder.iterdir():
                self.files[f.name.lower()] = f

    def find(self, image_id: str, filename: Optional[str]) -> Tuple[Optional[Path], List[str]]:
        """The image of an annotation, or None and the names tried."""
        tried: List[str] = []
        if filename:
            base = Path(filename.replace("\\", "/")).name  # never follow a path out of the folders
            tried.append(base)
            if not Path(base).suffix:
                tried += [base + ext for ext in _IMAGE_EXTS]
        tried += [image_id + ext for ext in _IMAGE_EXTS]
        tried = list(dict.fromkeys(tried))
        for name in tried:
            f = self.files.get(name.lower())
            if f is not None and f.is_file():
                return f, tried
        return None, tried


def _missing_line(missing: List[Tuple[str, List[str]]]) -> str:
    first = "; ".join(
        f"'{i}' (tried {', '.join(t[:3])}{', ...' if len(t) > 3 else ''})" for i, t in missing[:_FIRST_FEW]
    )
    more = f" and {len(missing) - _FIRST_FEW} more" if len(missing) > _FIRST_FEW else ""
    return f"{len(missing)} annotation file(s) without an image (no image for id {first}{more})"


def _parse_annotation(
    xml_path: PathLike,
    images: _ImageIndex,
    lookup: "_ClassLookup",
    issues: Counter,
    skip_unknown: bool = False,
    size_notes: Optional[List[str]] = None,
    missing: Optional[List[Tuple[str, List[str]]]] = None,
) -> Optional[ImageRecord]:
    """Read one annotation file into an :class:`ImageRecord` (policy: module docstring).

    A stated ``<size>`` that differs from the image is noted in ``size_notes`` (when given).
    An annotation whose image is not found returns None and is noted in ``missing``.
    """
    xml_path = Path(xml_path)
    image_id = xml_path.stem
    ann = parse_xml_file(xml_path)
    if ann.tag != "annotation":
        raise DataError(f"{xml_path}: root element is <{ann.tag}>, expected <annotation>")
    file_name, tried = images.find(image_id, _text(ann, "filename"))
    if file_name is None:
        if missing is None:
            raise DataError(f"{xml_path}: {_missing_line([(image_id, tried)])}")
        missing.append((image_id, tried))
        return None
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
                coords.append(float(value))  # type: ignore[arg-type]  # None -> TypeError, reported below
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
        image_id,
        str(file_name),
        width,
        height,
        np.array(boxes, dtype=np.float32),
        np.array(labels, dtype=np.int64),
        np.array(difficult, dtype=bool),
        np.array(truncated, dtype=bool),
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


def _split_ids(layout: VocLayout, split: Optional[str]) -> Tuple[List[str], Optional[Path]]:
    if not split:
        return layout.xml_ids(), None
    split_file = layout.split_file(split)
    if split_file is None:
        folder = layout.image_sets or layout.root / "ImageSets" / "Main"
        have = sorted(p.stem for p in folder.glob("*.txt") if "_" not in p.stem) if folder.is_dir() else []
        raise DataError(f"{folder / (split + '.txt')}: split file not found (splits here: {', '.join(have) or 'none'})")
    return read_split_file(split_file), split_file


def _check_ids(layout: VocLayout, ids: Sequence[str], source: Path) -> None:
    for image_id in ids:
        if not is_file(layout.annotations / f"{image_id}.xml"):
            raise DataError(
                f"{source}: id '{image_id}' has no annotation file {layout.annotations / (image_id + '.xml')}"
            )


def load_voc(
    root: PathLike,
    split: Optional[str] = None,
    class_names: Optional[Sequence[str]] = None,
    name: Optional[str] = None,
    skip_unknown: bool = False,
    skip_missing: bool = False,
    split_file: Optional[PathLike] = None,
) -> DetectionDataset:
    """Load a PASCAL VOC style dataset (any layout :func:`find_voc_layout` accepts).

    Args:
        root: folder holding ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/``, or a
            labelImg-style folder (module docstring).
        split: split name (``ImageSets/Main/<split>.txt``); None or "" reads every XML.
        class_names: class list in label order (label k is ``class_names[k-1]``); default
            :data:`VOC_CLASSES` (:func:`discover_voc_classes` finds a folder's own classes).
        name: dataset name for logs (default ``"<root folder>/<split>"``).
        skip_unknown: drop objects of classes not in ``class_names`` instead of raising.
        skip_missing: leave out annotations whose image does not exist (one warning with the
            count) instead of raising.
        split_file: a split file anywhere (e.g. one written into a training output folder by
            :mod:`sppdet.data.split`); replaces ``split``.

    Returns:
        A :class:`DetectionDataset`; ``meta`` holds ``format``, ``root``, ``split``,
        ``split_file`` and ``issues`` (counts of clipped/dropped boxes, size mismatches,
        skipped unknown objects, missing images).
    """
    root = Path(root)
    layout = find_voc_layout(root)
    class_names = list(class_names) if class_names else list(VOC_CLASSES)
    if split_file:
        split_file = Path(split_file)
        if not is_file(split_file):
            raise DataError(f"{split_file}: split file not found")
        ids: List[str] = read_split_file(split_file)
        split = split or split_file.stem
        found: Optional[Path] = split_file
    else:
        ids, found = _split_ids(layout, split)
    if found is not None:
        _check_ids(layout, ids, found)
    lookup = _ClassLookup(class_names)
    images = _ImageIndex(layout)
    issues: Counter = Counter()
    size_notes: List[str] = []
    missing: List[Tuple[str, List[str]]] = []
    parsed = [
        _parse_annotation(layout.annotations / f"{i}.xml", images, lookup, issues, skip_unknown, size_notes, missing)
        for i in ids
    ]
    records = [r for r in parsed if r is not None]
    if missing:
        if not skip_missing:
            raise DataError(
                f"{layout.annotations}: {_missing_line(missing)}; set data.skip_missing=true to leave them out"
            )
        issues["missing_images"] = len(missing)
        warnings.warn(f"{layout.annotations}: left out {_missing_line(missing)}", DataWarning, stacklevel=2)
    if size_notes:
        more = f" (and {len(size_notes) - 1} more annotation files)" if len(size_notes) > 1 else ""
        warnings.warn(
            f"{size_notes[0]}{more}; the image's size is used (if the image was resized after "
            "annotation, its boxes are in the wrong pixels)",
            DataWarning,
            stacklevel=2,
        )
    keys = ("clipped_boxes", "dropped_boxes", "size_mismatch", "skipped_unknown", "missing_images")
    meta = {
        "format": "voc",
        "root": str(root),
        "split": split or "",
        "split_file": str(found) if found else "",
        "issues": {k: issues.get(k, 0) for k in keys},
    }
    return DetectionDataset(records, class_names, name or f"{root.name}/{split or 'all'}", meta=meta)


def check_voc(root: PathLike, class_names: Optional[Sequence[str]] = None) -> Tuple[DetectionDataset, List[str]]:
    """Read every XML of a VOC-style folder, collecting problems instead of stopping at the first.

    Returns the records that load (classes: ``class_names`` or discovered) and one line per
    problem: unreadable or invalid XML, missing image, dropped box, ``<size>`` mismatch, and
    counts of clipped boxes and of images no XML refers to. What each policy does with them is
    in the module docstring.
    """
    layout = find_voc_layout(root)
    ids = layout.xml_ids()
    if class_names is None:
        class_names = discover_classes(voc_class_counts(layout.root, ids, skip_bad=True))  # bad XMLs: below
    lookup = _ClassLookup(list(class_names))
    images = _ImageIndex(layout)
    issues: Counter = Counter()
    problems: List[str] = []
    size_notes: List[str] = []
    missing: List[Tuple[str, List[str]]] = []
    records = []
    for image_id in ids:
        xml_path = layout.annotations / f"{image_id}.xml"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                rec = _parse_annotation(xml_path, images, lookup, issues, False, size_notes, missing)
            except DataError as e:
                problems.append(str(e))
                rec = None
        problems += [str(w.message) for w in caught]
        if rec is not None:
            records.append(rec)
    problems += [f"{layout.annotations / (i + '.xml')}: no image (tried {', '.join(t)})" for i, t in missing]
    problems += size_notes
    if issues["clipped_boxes"]:
        problems.append(f"{issues['clipped_boxes']} box(es) cross the image border (clipped to it when read)")
    used = {Path(r.file_name).resolve() for r in records}
    unused = [f for f in images.files.values() if f.suffix.lower() in _IMAGE_EXTS and f.resolve() not in used]
    if unused:
        problems.append(f"{len(unused)} image(s) no annotation refers to (not used), e.g. {sorted(unused)[0].name}")
    meta = {"format": "voc", "root": str(layout.root), "split": "", "split_file": "", "issues": dict(issues)}
    return DetectionDataset(records, list(class_names), layout.root.name, meta=meta), problems


def voc_class_counts(root: PathLike, ids: Optional[Sequence[str]] = None, skip_bad: bool = False) -> Counter:
    """Objects per class name (stripped) in the XMLs of ``ids`` (default: every XML).

    Reads names only: no image is opened, no box checked. ``skip_bad``: ignore XMLs that do
    not parse instead of raising.
    """
    layout = find_voc_layout(root)
    counts: Counter = Counter()
    for image_id in layout.xml_ids() if ids is None else ids:
        try:
            objects = parse_xml_file(layout.annotations / f"{image_id}.xml").findall("object")
        except DataError:
            if skip_bad:
                continue
            raise
        for obj in objects:
            name = _text(obj, "name")
            if name:
                counts[name] += 1
    return counts


def discover_classes(counts: Counter) -> List[str]:
    """Class names in discovery order: sorted without regard to case (then by exact name).

    On PASCAL VOC this is :data:`VOC_CLASSES` (already alphabetical). Names that differ only in
    case stay separate classes.
    """
    return sorted(counts, key=lambda n: (n.lower(), n))


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
