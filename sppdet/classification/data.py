"""Classification data: an ImageFolder tree, or the ground-truth boxes of a VOC/COCO split cut
out as crops.

A :class:`CropSet` holds every crop in memory as an RGB ``uint8 (H, W, 3)`` array with its
label ``0..K-1`` (``class_names[k]``), each source image read once. Boxes are sppdet's float
``(x1, y1, x2, y2)`` in image pixels (width = ``x2 - x1``); a crop is the integer pixel window
``[floor(x1), ceil(x2)) x [floor(y1), ceil(y2))`` of the box grown by ``context`` times its
width/height on every side, clipped to the image.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from ..data.coco import load_coco
from ..data.dataset import DetectionDataset
from ..data.image_io import read_image
from ..data.voc import VOC_CLASSES, load_voc
from ..errors import DataError
from .config import ClassifierDataConfig

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: File endings read from an ImageFolder tree (case-insensitive).
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class CropSample:
    """One example: an image file, an optional box ``(x1, y1, x2, y2)`` in its pixels (None =
    the whole image), and a label ``0..K-1``."""

    path: str
    label: int
    box: Optional[Tuple[float, float, float, float]] = None


def crop_window(box: Sequence[float], width: int, height: int, context: float = 0.0) -> Tuple[int, int, int, int]:
    """Integer pixel window ``(x1, y1, x2, y2)`` (``image[y1:y2, x1:x2]``) of a float box
    ``(x1, y1, x2, y2)`` grown by ``context`` x its width/height on each side, clipped to the
    ``width x height`` image. Never empty for a box inside the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = context * (x2 - x1), context * (y2 - y1)
    wx1 = min(max(int(math.floor(x1 - dx)), 0), width - 1)
    wy1 = min(max(int(math.floor(y1 - dy)), 0), height - 1)
    wx2 = max(min(int(math.ceil(x2 + dx)), width), wx1 + 1)
    wy2 = max(min(int(math.ceil(y2 + dy)), height), wy1 + 1)
    return wx1, wy1, wx2, wy2


def cut_crop(image: np.ndarray, box: Sequence[float], context: float = 0.0) -> np.ndarray:
    """The crop of ``image (H, W, 3)`` for a float box (see :func:`crop_window`), a copy."""
    x1, y1, x2, y2 = crop_window(box, image.shape[1], image.shape[0], context)
    return np.ascontiguousarray(image[y1:y2, x1:x2])


def image_folder_samples(root: PathLike, classes: Sequence[str] = ()) -> Tuple[List[CropSample], List[str]]:
    """Samples of an ImageFolder tree ``ROOT/<class>/<image>`` and the class list.

    ``classes`` fixes the label order (a sub-folder not listed is an error; a listed class may
    have no folder); default: the sorted sub-folder names. Files are sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found (expected ROOT/<class>/<image> files)")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no class sub-folders (expected ROOT/<class>/<image> files)")
    names = list(classes) or folders
    unknown = [f for f in folders if f not in names]
    if unknown:
        raise DataError(f"{root}/{unknown[0]}: folder is not one of the classes {names}")
    samples = []
    for label, name in enumerate(names):
        folder = root / name
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTS:
                samples.append(CropSample(str(f), label))
    if not samples:
        raise DataError(f"{root}: no images in the class folders (endings {', '.join(IMAGE_EXTS)})")
    return samples, names


def detection_crop_samples(
    dataset: DetectionDataset, exclude_difficult: bool = True, min_box_size: float = 0.0
) -> List[CropSample]:
    """One sample per ground-truth box (label ``k - 1`` for detection label ``k``); crowd boxes
    always, difficult ones optionally, and boxes smaller than ``min_box_size`` are left out."""
    samples = []
    for rec in dataset:
        keep = rec.training_mask(exclude_difficult)
        for box, label, ok in zip(rec.boxes, rec.labels, keep):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            if ok and min(w, h) >= min_box_size:
                x1, y1, x2, y2 = (float(v) for v in box)
                samples.append(CropSample(rec.file_name, int(label) - 1, (x1, y1, x2, y2)))
    return samples


class CropSet:
    """Samples with their pixels in memory: ``crops[i]`` is ``uint8 (H, W, 3)``, ``labels[i]``
    its label; ``class_names[k]`` names label ``k``."""

    def __init__(
        self,
        samples: Sequence[CropSample],
        class_names: Sequence[str],
        context: float = 0.0,
        max_pixels: Optional[int] = None,
        name: str = "",
    ) -> None:
        if not samples:
            raise DataError(f"{name or 'dataset'}: no samples to classify")
        self.samples = list(samples)
        self.class_names = list(class_names)
        self.name = name
        self.labels = np.array([s.label for s in self.samples], dtype=np.int64)
        by_path: Dict[str, List[int]] = {}
        for i, s in enumerate(self.samples):
            by_path.setdefault(s.path, []).append(i)
        self.crops: List[np.ndarray] = [np.zeros((0, 0, 3), np.uint8)] * len(self.samples)
        for path, idx in tqdm(by_path.items(), desc=f"reading {name or 'images'}", unit="img", leave=False):
            image = read_image(path, max_pixels or None)
            for i in idx:
                box = self.samples[i].box
                self.crops[i] = image if box is None else cut_crop(image, box, context)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sizes(self) -> np.ndarray:
        """``(N, 2)`` native ``(height, width)`` of every crop."""
        return np.array([c.shape[:2] for c in self.crops], dtype=np.int64).reshape(-1, 2)

    def class_counts(self) -> Dict[str, int]:
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return {n: int(c) for n, c in zip(self.class_names, counts)}


def load_crop_set(
    dcfg: ClassifierDataConfig,
    split: str = "train",
    max_pixels: Optional[int] = None,
    *,
    root: str = "",
    split_name: str = "",
    ann: str = "",
    images: str = "",
) -> CropSet:
    """The train or test crops a data config describes; the keyword arguments replace the
    config's source (VOC ``root``/``split_name``, COCO ``ann``/``images``, folder ``images``)."""
    train = split == "train"
    fmt = dcfg.format
    if fmt == "folder":
        folder = images or (dcfg.train_images if train else dcfg.test_images)
        if not folder:
            raise DataError(f"data.{split}_images: no ImageFolder root given")
        samples, names = image_folder_samples(folder, dcfg.classes)
        return CropSet(samples, names, 0.0, max_pixels, name=f"{Path(folder).name}")
    det: DetectionDataset
    if fmt == "voc":
        voc_root = root or dcfg.root
        voc_split = split_name or (dcfg.train_split if train else dcfg.test_split)
        if not voc_root:
            raise DataError("data.root: no VOC root given")
        det = load_voc(voc_root, voc_split, dcfg.classes or VOC_CLASSES)
    else:
        ann_file = ann or (dcfg.train_ann if train else dcfg.test_ann)
        image_dir = images or (dcfg.train_images if train else dcfg.test_images)
        if not ann_file or not image_dir:
            raise DataError(f"data.{split}_ann / data.{split}_images: COCO needs an annotation json and image folder")
        det = load_coco(ann_file, image_dir, class_names=dcfg.classes or None)
    samples = detection_crop_samples(det, dcfg.exclude_difficult, dcfg.min_box_size)
    log.info("%s: %d crops from %d images", det.name, len(samples), len(det))
    return CropSet(samples, det.class_names, dcfg.crop_context, max_pixels, name=det.name)
