"""The library API: a trained checkpoint as one callable that computes its own proposals.

    from sppdet import Detector
    det = Detector.from_checkpoint("model_final.pth", device="auto", proposals="edgeboxes")
    r = det("photo.jpg")                  # a path, or an RGB uint8 H x W x 3 numpy array
    r = det(image, proposals=boxes)       # (P, 4) float x1, y1, x2, y2 pixels: skips the generator
    rs = det.batch([img1, img2])          # one conv pass per scale for all of them
    r.boxes, r.scores, r.labels, r.class_names, r.to_dict()

Boxes are float ``(x1, y1, x2, y2)`` in the input image's pixels (continuous coordinates,
width ``x2 - x1``); labels are ``1..K`` into ``class_names``. Every user mistake (missing file,
an array that is not an RGB image, proposals not shaped (P, 4), no proposal source) raises
:class:`~sppdet.errors.SppdetError` with one line saying what is wrong. ``tools/detect.py`` is
a thin shell around this class.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .config import Config
from .data.image_io import read_image
from .engine.infer import Predictor, load_predictor
from .errors import ConfigError, SppdetError
from .evaluation.detections import sppdet_entry
from .proposals.build import METHODS, compute_proposals

ImageInput = Union[str, os.PathLike, np.ndarray]


@dataclass(eq=False)
class DetectionResult:
    """Detections of one image.

    ``boxes (N, 4) float32`` ``(x1, y1, x2, y2)`` in the input image's pixels, ``scores (N,)
    float32``, ``labels (N,) int64`` in ``1..K`` (label ``k`` is ``class_names[k-1]``),
    ``image_size`` ``(height, width)``, ``num_proposals`` (windows scored); in the order the
    model's post-processing left them.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: List[str]
    image_size: Tuple[int, int]
    num_proposals: int = 0

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def classes(self) -> List[str]:
        """The class name of each detection."""
        return [self.class_names[k - 1] for k in self.labels.tolist()]

    def to_dict(self) -> Dict:
        """``{"width", "height", "detections": [{"class", "label", "score", "box"}]}``: the
        per-image entry of the sppdet detections json (boxes rounded to 3 decimals, scores to 7
        significant digits), without ``image_id``."""
        h, w = self.image_size
        entry = sppdet_entry("", self, self.class_names, width=w, height=h)
        del entry["image_id"]
        return entry


class Detector:
    """A trained SPP-net detector with its proposal generator: image in, detections out.

    Args:
        predictor: the model (:func:`sppdet.engine.infer.load_predictor`).
        proposals: proposal method used when a call passes none: ``"edgeboxes"``,
            ``"ss-fast"`` or ``"ss-quality"`` (settings from the checkpoint's ``proposals``
            config); ``None``: every call must pass ``proposals=``.
    """

    def __init__(self, predictor: Predictor, proposals: Optional[str] = "edgeboxes") -> None:
        if proposals is not None and proposals not in METHODS:
            raise ConfigError(f"proposals: unknown method '{proposals}' (use None or one of {', '.join(METHODS)})")
        self.predictor = predictor
        self.proposal_method = proposals

    @classmethod
    def from_checkpoint(
        cls,
        path: Union[str, os.PathLike],
        device: str = "auto",
        proposals: Optional[str] = "edgeboxes",
        score_thresh: Optional[float] = None,
        overrides: Sequence[str] = (),
    ) -> "Detector":
        """Load a checkpoint written by ``tools/train.py``.

        ``device``: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N". ``score_thresh``
        replaces the checkpoint's ``test.score_thresh``; ``overrides`` are config overrides
        such as ``"test.nms_thresh=0.4"`` or ``"test.amp=bf16"``.
        """
        extra = [f"test.score_thresh={float(score_thresh)}"] if score_thresh is not None else []
        return cls(load_predictor(str(path), [*overrides, *extra], device), proposals)

    @property
    def cfg(self) -> Config:
        return self.predictor.cfg

    @property
    def class_names(self) -> List[str]:
        return list(self.predictor.class_names)

    @property
    def device(self):
        return self.predictor.device

    def with_proposals(self, proposals: Optional[str]) -> "Detector":
        """The same model with another proposal method (shares the weights)."""
        return Detector(self.predictor, proposals)

    def load(self, image: ImageInput) -> np.ndarray:
        """An RGB uint8 ``H x W x 3`` array from a path or an array (checked, not copied)."""
        if isinstance(image, (str, os.PathLike)):
            return read_image(Path(image), self.cfg.input.max_image_pixels)
        if not isinstance(image, np.ndarray):
            got = type(image).__name__
            raise SppdetError(f"image: expected a file path or an RGB uint8 H x W x 3 array, got {got}")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise SppdetError(f"image: expected an RGB uint8 H x W x 3 array, got {image.dtype} of shape {image.shape}")
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise SppdetError(f"image: empty array of shape {image.shape}")
        return image

    def propose(self, image: np.ndarray) -> np.ndarray:
        """Proposals ``(P, 4) float32`` (x1, y1, x2, y2 pixels) of an RGB uint8 image."""
        if self.proposal_method is None:
            raise SppdetError(
                "no proposals: this Detector was made with proposals=None; pass det(image, proposals=boxes) "
                f"or make it with proposals= one of {', '.join(METHODS)}"
            )
        boxes, _ = compute_proposals(image, self.proposal_method, self.cfg.proposals)
        return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)

    def __call__(self, image: ImageInput, proposals: Optional[np.ndarray] = None) -> DetectionResult:
        """Detections of one image; ``proposals`` ``(P, 4)`` float x1, y1, x2, y2 pixels of that
        image (all of them are scored) replace the generator."""
        return self.batch([image], None if proposals is None else [proposals])[0]

    def batch(
        self, images: Sequence[ImageInput], proposals: Optional[Sequence[Optional[np.ndarray]]] = None
    ) -> List[DetectionResult]:
        """Detections of several images (one conv pass per scale for all); ``proposals``: one
        ``(P, 4)`` array (or None: computed) per image."""
        if proposals is not None and len(proposals) != len(images):
            raise SppdetError(f"proposals: {len(proposals)} arrays for {len(images)} images")
        arrays = [self.load(im) for im in images]
        boxes = [
            self.propose(im) if p is None else check_proposals(p, im.shape[:2])
            for im, p in zip(arrays, proposals if proposals is not None else [None] * len(arrays))
        ]
        if not arrays:
            return []
        dets = self.predictor.predict_batch(arrays, boxes)
        return [
            DetectionResult(d.boxes, d.scores, d.labels, self.class_names, im.shape[:2], len(b))
            for d, im, b in zip(dets, arrays, boxes)
        ]

    def __repr__(self) -> str:
        return f"Detector({len(self.class_names)} classes, proposals={self.proposal_method!r}, device={self.device})"


def check_proposals(proposals, image_size: Tuple[int, int], what: str = "proposals") -> np.ndarray:
    """``proposals`` as a ``(P, 4) float32`` array of ``x1, y1, x2, y2`` pixels, or a one-line
    SppdetError. Later, boxes are clipped to the ``(height, width)`` image and boxes that are
    empty or not finite dropped (as for proposal files)."""
    try:
        p = np.asarray(proposals, dtype=np.float32)
    except (TypeError, ValueError):
        got = type(proposals).__name__
        raise SppdetError(f"{what}: expected a (P, 4) array of x1, y1, x2, y2 pixels, got {got}") from None
    if p.ndim != 2 or p.shape[1] != 4:
        if p.size == 0:
            return np.zeros((0, 4), np.float32)
        raise SppdetError(f"{what}: expected a (P, 4) array of x1, y1, x2, y2 pixels, got shape {tuple(p.shape)}")
    return p
