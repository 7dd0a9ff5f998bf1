"""``build_dataset(cfg, split)``: the one place the config chooses a dataset reader.

Besides picking the reader it settles three things the files may leave open:

* **Which images.** A VOC split file in ``ImageSets/Main`` when the folder has one; a folder
  with no split files at all (a labelImg/CVAT/Roboflow export) gets a seeded train/val split,
  written into ``<output_dir>/splits/`` and reused afterwards (:mod:`sppdet.data.split`).
* **Which classes.** ``data.classes`` when given; otherwise discovered from the training
  annotations (:func:`training_classes`) and logged with their counts. Objects of classes the
  training set never showed are then left out of the test set, and counted.
* **Missing images.** Refused, or left out with ``data.skip_missing: true``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from pathlib import Path
from typing import List, Optional, Tuple

from ..config import Config
from ..errors import ConfigError, DataError
from .coco import coco_class_counts, find_coco_layout, load_coco
from .dataset import DetectionDataset
from .split import load_or_make_split, read_ids, split_path
from .voc import (
    VocLayout,
    discover_classes,
    export_split_folders,
    find_voc_layout,
    load_voc,
    read_split_file,
    voc_class_counts,
)

log = logging.getLogger("sppdet.data")

SPLITS = ("train", "test")
FORMATS = ("voc", "coco")
_SAMPLE_HINT = " (generate it with: python tools/make_sample_data.py)"


def _existing(value: str, field: str, want_dir: bool) -> Path:
    if not value:
        raise ConfigError(f"data.{field} is empty: set data.root to a COCO export folder, or data.{field}")
    p = Path(value)
    ok = p.is_dir() if want_dir else p.is_file()
    if not ok:
        kind = "folder" if want_dir else "file"
        raise ConfigError(f"data.{field}: {kind} '{value}' not found (see data/README.md)")
    return p


def build_dataset(cfg: Config, split: str) -> DetectionDataset:
    """The ``"train"`` or ``"test"`` dataset named by ``cfg.data``.

    VOC: ``load_voc(data.root, data.train_split | data.test_split, classes)``, or the seeded
    split of a folder without split files. COCO: ``load_coco(data.train_ann | data.test_ann,
    data.train_images | data.test_images)``. Classes: ``data.classes``, else discovered from the
    training annotations. Relative paths are relative to the working folder.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    d = cfg.data
    if d.format == "voc":
        return _build_voc(cfg, split)
    if d.format == "coco":
        return _build_coco(cfg, split)
    raise ConfigError(f"data.format: unknown format '{d.format}' (use {' or '.join(FORMATS)})")


def _build_coco(cfg: Config, split: str) -> DetectionDataset:
    """Explicit ``data.*_ann``/``data.*_images``, or the export found under ``data.root``."""
    d = cfg.data
    if d.train_ann or not d.root:
        ann_field, img_field = ("train_ann", "train_images") if split == "train" else ("test_ann", "test_images")
        ann = _existing(getattr(d, ann_field), ann_field, want_dir=False)
        images = _existing(getattr(d, img_field), img_field, want_dir=True)
        classes = list(d.classes) or training_classes(cfg)
        return load_coco(ann, images, name=f"{ann.stem}", class_names=classes, skip_missing=d.skip_missing)
    layout = find_coco_layout(d.root)
    classes = list(d.classes) or training_classes(cfg)
    if layout.test_ann is not None and layout.test_images is not None:
        ann, images = (
            (layout.train_ann, layout.train_images) if split == "train" else (layout.test_ann, layout.test_images)
        )
        log.info("COCO %s set: %s (images in %s)", split, ann, images)
        return load_coco(ann, images, name=ann.parent.name, class_names=classes, skip_missing=d.skip_missing)
    # One json: a seeded split over the images that load, as for a VOC folder without split files.
    full = load_coco(layout.train_ann, layout.train_images, class_names=classes, skip_missing=d.skip_missing)
    names = (d.train_split or "train", d.test_split or "val")
    files = load_or_make_split(cfg.output_dir, names, full.ids, d.val_fraction, cfg.train.seed, str(layout.train_ann))
    part = names[0] if split == "train" else names[1]
    ds = full.subset(read_ids(files[part]))
    ds.name = f"{Path(d.root).name}/{part}"
    ds.meta = dict(ds.meta, split_file=str(files[part]))
    return ds


def _voc_root(cfg: Config) -> Path:
    root = Path(cfg.data.root)
    if not cfg.data.root:
        raise ConfigError("data.root is empty: set it to your dataset folder (data.root=DIR)")
    if not root.is_dir():
        hint = _SAMPLE_HINT if "sample" in cfg.data.root else " (see data/README.md)"
        raise ConfigError(f"data.root: VOC folder '{cfg.data.root}' not found{hint}")
    return root


def _voc_layout(cfg: Config) -> VocLayout:
    return find_voc_layout(_voc_root(cfg))


def _auto_split(cfg: Config, layout: VocLayout) -> bool:
    """True when the folder has no split file for either configured split (seeded split)."""
    d = cfg.data
    named = [s for s in (d.train_split, d.test_split) if s]
    return bool(named) and all(layout.split_file(s) is None for s in named)


def voc_split_source(cfg: Config, layout: VocLayout, split: str) -> Tuple[str, Optional[Path]]:
    """``(split name, split file or None)`` for ``"train"``/``"test"`` (module docstring)."""
    d = cfg.data
    name = d.train_split if split == "train" else d.test_split
    if not name or not _auto_split(cfg, layout):
        return name, None
    # The split is made over the images that load (so a held-out list never names a missing one).
    usable = load_voc(
        layout.root, None, _all_names(layout), skip_unknown=True, skip_missing=d.skip_missing, name="split"
    ).ids
    names = (d.train_split or "train", d.test_split or "val")
    files = load_or_make_split(cfg.output_dir, names, usable, d.val_fraction, cfg.train.seed, str(layout.root))
    return name, files[name]


def _all_names(layout: VocLayout) -> List[str]:
    return discover_classes(voc_class_counts(layout.root)) or ["__none__"]


def _train_ids(cfg: Config, layout: VocLayout) -> Optional[List[str]]:
    name, split_file = voc_split_source(cfg, layout, "train")
    if split_file is not None:
        return read_split_file(split_file)
    if not name:
        return None
    found = layout.split_file(name)
    if found is None:
        return None  # load_voc names the missing split file
    return read_split_file(found)


def training_classes(cfg: Config) -> List[str]:
    """Class names discovered in the training annotations (sorted, logged with counts)."""
    d = cfg.data
    if d.format == "coco":
        ann = _existing(d.train_ann, "train_ann", want_dir=False) if d.train_ann or not d.root else None
        ann = ann or find_coco_layout(d.root).train_ann
        counts, ordered = coco_class_counts(ann)
        where = str(ann)
    else:
        layout = _voc_layout(cfg)
        counts = voc_class_counts(layout.root, _train_ids(cfg, layout))
        ordered = discover_classes(counts)
        where = str(layout.annotations)
    if not ordered:
        raise DataError(f"{where}: the training annotations hold no objects, so there are no classes to learn")
    _log_classes(ordered, counts, where)
    return ordered


def _log_classes(classes: List[str], counts: Counter, where: str) -> None:
    listed = ", ".join(f"{c} {counts[c]}" for c in classes)
    log.info("data.classes is empty: %d classes found in %s (objects): %s", len(classes), where, listed)


def _build_voc(cfg: Config, split: str) -> DetectionDataset:
    d = cfg.data
    folders = export_split_folders(_voc_root(cfg))
    if folders:  # ROOT/train, ROOT/valid: each folder is one split, read whole
        only = dataclasses.replace(d, root=str(folders["train"]), train_split="", test_split="")
        if split == "train" or "val" not in folders:
            # no valid/ folder: the train folder gets the seeded split
            keep = dataclasses.replace(only, train_split=d.train_split, test_split=d.test_split)
            return _build_voc(dataclasses.replace(cfg, data=keep if "val" not in folders else only), split)
        classes = list(d.classes) or training_classes(dataclasses.replace(cfg, data=only))
        log.info("validation images: %s", folders["val"])
        return load_voc(folders["val"], None, classes, skip_unknown=not d.classes, skip_missing=d.skip_missing)
    layout = _voc_layout(cfg)
    name, split_file = voc_split_source(cfg, layout, split)
    discovered = not d.classes
    classes = list(d.classes) or training_classes(cfg)
    ds = load_voc(
        layout.root,
        name,
        classes,
        name=f"{layout.root.name}/{name or 'all'}",
        skip_unknown=discovered and split == "test",
        skip_missing=d.skip_missing,
        split_file=split_file,
    )
    unknown = ds.meta["issues"].get("skipped_unknown", 0)
    if unknown:
        log.warning("%s: %d object(s) of classes absent from the training annotations left out", ds.name, unknown)
    return ds


def build_eval_voc(
    root: str,
    split: Optional[str] = None,
    class_names: Optional[List[str]] = None,
    train_cfg: Optional[Config] = None,
    output_dir: Optional[Path] = None,
) -> DetectionDataset:
    """The VOC images to evaluate on, for ``tools/eval.py --dataset voc --root ROOT``.

    ``split``: a split name (``ImageSets/Main/<split>.txt``) or a split file's path. Without
    one: the validation list training wrote (``<output_dir or train_cfg.output_dir>/splits/
    <data.test_split>.txt``) when ``train_cfg`` (the checkpoint's config) trained on this very
    folder; else ``ImageSets/Main/test.txt`` when there is one; else every annotated image.
    The log says which. ``class_names``: given (``--classes`` or the checkpoint's), else
    discovered in the evaluated annotations; objects of other classes are left out and counted.
    Missing images follow the checkpoint's ``data.skip_missing`` (refused without a checkpoint).
    """
    layout = find_voc_layout(root)
    split_file: Optional[Path] = None
    if split and split.endswith(".txt") and Path(split).is_file():
        split_file, split = Path(split), None
    elif not split:
        split_file = _training_val_file(layout, train_cfg, output_dir)
        if split_file is not None:
            log.info("evaluating %s: the validation images that training held out", split_file)
        elif layout.split_file("test") is not None:
            split = "test"
            log.info("evaluating the split 'test' (%s)", layout.split_file("test"))
        else:
            log.info("no --split and no split files: evaluating every annotated image of %s", layout.root)
    skip_missing = bool(train_cfg and train_cfg.data.skip_missing)
    given = bool(class_names)
    if not class_names:
        counts = voc_class_counts(layout.root, _listed_ids(layout, split, split_file))
        class_names = discover_classes(counts)
        if not class_names:
            raise DataError(f"{layout.annotations}: no objects in the annotations to evaluate; give --classes")
        _log_classes(class_names, counts, str(layout.annotations))
    ds = load_voc(layout.root, split, class_names, skip_unknown=given, skip_missing=skip_missing, split_file=split_file)
    unknown = ds.meta["issues"].get("skipped_unknown", 0)
    if unknown:
        log.warning("%s: %d object(s) of classes the model does not know left out", ds.name, unknown)
    return ds


def _listed_ids(layout: VocLayout, split: Optional[str], split_file: Optional[Path]) -> Optional[List[str]]:
    if split_file is not None:
        return read_split_file(split_file)
    found = layout.split_file(split) if split else None
    return read_split_file(found) if found is not None else None


def _training_val_file(layout: VocLayout, train_cfg: Optional[Config], output_dir: Optional[Path]) -> Optional[Path]:
    if train_cfg is None or train_cfg.data.format != "voc" or not train_cfg.data.root:
        return None
    if Path(train_cfg.data.root).resolve() != layout.root.resolve():
        return None
    name = train_cfg.data.test_split or "val"
    for folder in (output_dir, train_cfg.output_dir):
        if folder and split_path(folder, name).is_file():
            return split_path(folder, name)
    return None
