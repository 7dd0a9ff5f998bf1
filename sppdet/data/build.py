"""``build_dataset(cfg, split)``: the one place the config chooses a dataset reader."""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..errors import ConfigError, DataError
from .coco import load_coco
from .dataset import DetectionDataset
from .voc import VOC_CLASSES, load_voc

SPLITS = ("train", "test")
FORMATS = ("voc", "coco")
_SAMPLE_HINT = " (generate it with: python tools/make_sample_data.py)"


def _existing(value: str, field: str, want_dir: bool) -> Path:
    if not value:
        raise ConfigError(f"data.{field} is empty (required when data.format is 'coco')")
    p = Path(value)
    ok = p.is_dir() if want_dir else p.is_file()
    if not ok:
        kind = "folder" if want_dir else "file"
        raise ConfigError(f"data.{field}: {kind} '{value}' not found (see data/README.md)")
    return p


def build_dataset(cfg: Config, split: str) -> DetectionDataset:
    """The ``"train"`` or ``"test"`` dataset named by ``cfg.data``.

    VOC: ``load_voc(data.root, data.train_split | data.test_split, data.classes or VOC_CLASSES)``.
    COCO: ``load_coco(data.train_ann | data.test_ann, data.train_images | data.test_images)``,
    restricted to ``data.classes`` when given. Relative paths are relative to the working folder.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    d = cfg.data
    if d.format == "voc":
        root = Path(d.root)
        if not d.root or not root.is_dir():
            hint = _SAMPLE_HINT if "sample" in d.root else " (see data/README.md)"
            raise ConfigError(f"data.root: VOC folder '{d.root}' not found{hint}")
        voc_split = d.train_split if split == "train" else d.test_split
        classes = list(d.classes) or list(VOC_CLASSES)
        try:
            return load_voc(root, voc_split, classes, name=f"{root.name}/{voc_split or 'all'}")
        except DataError as e:
            if "unknown class" in str(e) and not d.classes:
                raise DataError(
                    f"{e} -- data.classes is empty, so the 20 VOC classes are expected; "
                    f"list this dataset's classes in data.classes"
                ) from None
            raise
    if d.format == "coco":
        ann_field, img_field = ("train_ann", "train_images") if split == "train" else ("test_ann", "test_images")
        ann = _existing(getattr(d, ann_field), ann_field, want_dir=False)
        images = _existing(getattr(d, img_field), img_field, want_dir=True)
        return load_coco(ann, images, name=f"{ann.stem}", class_names=list(d.classes) or None)
    raise ConfigError(f"data.format: unknown format '{d.format}' (use {' or '.join(FORMATS)})")
