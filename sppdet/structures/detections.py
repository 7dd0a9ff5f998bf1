"""Detection results in memory: :class:`ImageDetections` per image, ``Detections`` per dataset.

``Detections = Dict[str, ImageDetections]``, keyed by the dataset's image id. An image missing
from the dict has no detections. :class:`ImageDetections` holds numpy arrays: ``boxes (N, 4)
float32`` in sppdet's convention (continuous ``x1, y1, x2, y2`` pixels, see
:mod:`sppdet.structures.boxes`), ``scores (N,) float32`` and ``labels (N,) int64`` in ``1..K``.
The file formats live in :mod:`sppdet.evaluation.detections`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np
from numpy.typing import ArrayLike


@dataclass(eq=False, init=False)
class ImageDetections:
    """Detections of one image: ``boxes (N, 4) float32`` (ours), ``scores (N,)``, ``labels (N,)`` 1..K."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __init__(self, boxes: ArrayLike = (), scores: ArrayLike = (), labels: ArrayLike = ()) -> None:
        """Any array-likes (lists too), converted to float32 boxes ``(N, 4)`` (float ``x1, y1, x2, y2``
        in image pixels), float32 scores ``(N,)`` and int64 labels ``(N,)``."""
        self.boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.scores = np.asarray(scores, dtype=np.float32).reshape(n)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(n)

    @classmethod
    def empty(cls) -> "ImageDetections":
        """No detections."""
        return cls()

    def __len__(self) -> int:
        return len(self.boxes)

    def select(self, keep: np.ndarray) -> "ImageDetections":
        """The detections picked by a boolean mask or index array."""
        return ImageDetections(self.boxes[keep], self.scores[keep], self.labels[keep])

    @staticmethod
    def concat(parts: Sequence["ImageDetections"]) -> "ImageDetections":
        """All detections of ``parts``, in order."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return ImageDetections()
        return ImageDetections(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.labels for p in parts]),
        )


Detections = Dict[str, ImageDetections]
