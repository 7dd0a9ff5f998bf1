"""The dataset records object that every later stage shares.

A :class:`DetectionDataset` is a list of :class:`ImageRecord` plus the class list. Readers
(``voc.py``, ``coco.py``) build it; proposals, training and evaluation consume it. It holds
annotations only, never pixels: images are read on demand with :func:`sppdet.data.image_io.read_image`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np


class DataWarning(UserWarning):
    """A dataset file had a problem that was repaired or skipped (e.g. a zero-size box dropped)."""


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.float32)


def _empty(dtype) -> np.ndarray:
    return np.zeros((0,), dtype=dtype)


@dataclass
class ImageRecord:
    """One image and its ground truth.

    Attributes:
        image_id: unique string id (VOC: file stem such as ``"000005"``; COCO: ``str(id)``).
        file_name: path of the image file.
        width, height: image size in pixels (as stored in the image file).
        boxes: float32 ``(N, 4)`` in sppdet's convention ``(x1, y1, x2, y2)``, continuous pixels
            (see :mod:`sppdet.structures`).
        labels: int64 ``(N,)`` in ``1..K`` (0 is background, never stored here).
        difficult: bool ``(N,)`` VOC difficult flag (ignored by evaluation).
        truncated: bool ``(N,)`` VOC truncated flag.
        iscrowd: bool ``(N,)`` COCO crowd flag (not a training target; ignored by evaluation).
        coco_id: original integer COCO image id, or None.
    """

    image_id: str
    file_name: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=_empty_boxes)
    labels: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    difficult: np.ndarray = field(default_factory=lambda: _empty(bool))
    truncated: np.ndarray = field(default_factory=lambda: _empty(bool))
    iscrowd: np.ndarray = field(default_factory=lambda: _empty(bool))
    coco_id: Optional[int] = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(n)
        for name in ("difficult", "truncated", "iscrowd"):
            arr = getattr(self, name)
            arr = np.zeros(n, dtype=bool) if arr is None or np.size(arr) == 0 else np.asarray(arr, dtype=bool)
            setattr(self, name, arr.reshape(n))

    @property
    def num_objects(self) -> int:
        """Number of annotated objects (difficult ones included)."""
        return len(self.boxes)

    def training_mask(self, exclude_difficult: bool = True) -> np.ndarray:
        """Objects usable as training targets (never crowd; difficult optional)."""
        keep = ~self.iscrowd
        if exclude_difficult:
            keep &= ~self.difficult
        return keep


class DetectionDataset:
    """Records of a detection dataset plus its class list.

    ``class_names[k-1]`` is the name of label ``k``. ``category_ids`` (COCO only) maps label
    ``k`` to the original category id at ``category_ids[k-1]``, so results can be written back.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        class_names: Sequence[str],
        name: str = "",
        category_ids: Optional[Sequence[int]] = None,
        meta: Optional[Dict] = None,
    ) -> None:
        self.records: List[ImageRecord] = list(records)
        self.class_names: List[str] = list(class_names)
        self.name = name
        self.category_ids: Optional[List[int]] = list(category_ids) if category_ids is not None else None
        self.meta: Dict = dict(meta or {})
        self._index: Dict[str, int] = {}
        for i, r in enumerate(self.records):
            if r.image_id in self._index:
                raise ValueError(f"{name or 'dataset'}: duplicate image id '{r.image_id}'")
            self._index[r.image_id] = i

    @property
    def num_classes(self) -> int:
        """K, the number of object classes (background excluded)."""
        return len(self.class_names)

    @property
    def ids(self) -> List[str]:
        """Image ids, in dataset order."""
        return [r.image_id for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter(self.records)

    def __getitem__(self, i: int) -> ImageRecord:
        return self.records[i]

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._index

    def get(self, image_id: str) -> ImageRecord:
        """The record with this image id (KeyError naming the id if absent)."""
        try:
            return self.records[self._index[image_id]]
        except KeyError:
            raise KeyError(f"image id '{image_id}' not in {self.name or 'dataset'}") from None

    def subset(self, image_ids: Sequence[str]) -> "DetectionDataset":
        """A dataset holding only these ids, in this order."""
        return DetectionDataset(
            [self.get(i) for i in image_ids], self.class_names, self.name, self.category_ids, self.meta
        )

    def label_of(self, class_name: str) -> int:
        """Label 1..K of a class name."""
        return self.class_names.index(class_name) + 1

    def __repr__(self) -> str:
        n_obj = sum(r.num_objects for r in self.records)
        return f"DetectionDataset({self.name!r}, images={len(self)}, objects={n_obj}, classes={self.num_classes})"
