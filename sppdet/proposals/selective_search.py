"""Selective Search (Uijlings et al., IJCV 2013) through opencv-contrib's ximgproc.

Modes:

* ``"fast"`` -- the R-CNN "fast" settings: colour spaces HSV and Lab, Felzenszwalb graph
  segmentations with ``k`` in {50, 100} (``sigma = 0.8``), two merge strategies
  (colour+texture+size+fill and texture+size+fill), as opencv's ``switchToSelectiveSearchFast``
  arranges them, but with the paper's ``k`` values. One deviation, for speed: the smallest
  initial segment is 150 pixels (R-CNN: ``min_size = k``, i.e. 50 and 100). opencv's colour
  strategy costs (number of initial segments) x (pixels), so this takes a 500 x 375 image
  from ~1.3 s to ~0.9 s on one core; recall@0.5 at 2,000 boxes on BCCD val moves from 0.967
  to 0.961 and recall with 100-1,000 boxes improves (fewer tiny boxes crowd the top).
  ``seg_min_size=0`` restores R-CNN exactly.
* ``"quality"`` -- opencv's ``switchToSelectiveSearchQuality`` (five colour spaces, five ``k``
  values from 150, four strategies): several times slower, more boxes.

R-CNN resized images to 500 pixels wide before the search; ``max_side`` does the same for the
longer side (0 = no resizing) and boxes are mapped back to the original pixels. opencv returns
integer ``(x, y, w, h)`` rects covering pixels ``x .. x+w-1``, i.e. ``[x, x+w]`` in our
continuous convention. Boxes come out in opencv's ranking order (hierarchy level times a random
factor, as in the paper); the random factor uses C ``rand()``, which is seeded from ``seed``
so a run is reproducible.
"""

from __future__ import annotations

import ctypes
from typing import Optional, Sequence

import cv2
import numpy as np

from ..errors import DataError

FAST_KS = (50, 100)
#: Smallest initial segment (pixels of the resized image) in "fast" mode; module notes.
FAST_SEG_MIN_SIZE = 150


def _seed_c_rand(seed: int) -> None:
    try:
        ctypes.CDLL(None).srand(int(seed) & 0xFFFFFFFF)
    except (OSError, AttributeError, TypeError):  # no libc handle (e.g. Windows): stay unseeded
        pass


def check_image(image_rgb: np.ndarray) -> np.ndarray:
    """An ``H x W x 3`` uint8 image (grayscale is expanded); DataError otherwise."""
    img = np.asarray(image_rgb)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise DataError(f"proposals need an H x W x 3 image, got shape {img.shape}")
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise DataError(f"image is {img.shape[1]}x{img.shape[0]} pixels; proposals need at least 2x2")
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def resize_longer_side(img: np.ndarray, max_side: int) -> "tuple[np.ndarray, float]":
    """Shrink so the longer side is at most ``max_side`` (never enlarges); returns (image, scale)."""
    h, w = img.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return img, 1.0
    scale = max_side / float(max(h, w))
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA), scale


def rects_to_boxes(rects: np.ndarray, scale_x: float, scale_y: float, width: int, height: int) -> np.ndarray:
    """opencv ``(x, y, w, h)`` int rects on a resized image -> ours on the original image."""
    r = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
    boxes = np.stack(
        [r[:, 0] / scale_x, r[:, 1] / scale_y, (r[:, 0] + r[:, 2]) / scale_x, (r[:, 1] + r[:, 3]) / scale_y], axis=1
    )
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    return boxes


def finish_boxes(boxes: np.ndarray, max_boxes: int, min_size: float, scores: Optional[np.ndarray] = None):
    """Drop boxes with a side < ``min_size`` (and empty ones), exact duplicates, keep the top ``max_boxes``."""
    keep = ((boxes[:, 2] - boxes[:, 0]) >= max(min_size, 1e-6)) & ((boxes[:, 3] - boxes[:, 1]) >= max(min_size, 1e-6))
    boxes = boxes[keep]
    scores = None if scores is None else scores[keep]
    _, first = np.unique(boxes, axis=0, return_index=True)
    first = np.sort(first)[:max_boxes] if max_boxes else np.sort(first)
    boxes = np.ascontiguousarray(boxes[first], dtype=np.float32)
    return boxes if scores is None else (boxes, np.asarray(scores[first], dtype=np.float32))


def _configure_fast(ss, bgr: np.ndarray, ks: Sequence[int], sigma: float, seg_min_size: int) -> None:
    seg = cv2.ximgproc.segmentation
    ss.clearImages()
    ss.clearGraphSegmentations()
    ss.clearStrategies()
    ss.addImage(cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV))
    ss.addImage(cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab))
    for k in ks:
        ss.addGraphSegmentation(seg.createGraphSegmentation(sigma, float(k), int(seg_min_size or k)))
    # One texture/size/fill object shared by both strategies, as opencv's own fast mode does:
    # a strategy caches its per-region histograms by image id, so the (costly) texture
    # histograms are computed once per segmentation instead of once per strategy.
    texture = seg.createSelectiveSearchSegmentationStrategyTexture()
    size = seg.createSelectiveSearchSegmentationStrategySize()
    fill = seg.createSelectiveSearchSegmentationStrategyFill()
    color = seg.createSelectiveSearchSegmentationStrategyColor()
    ss.addStrategy(seg.createSelectiveSearchSegmentationStrategyMultiple(color, texture, size, fill))
    ss.addStrategy(seg.createSelectiveSearchSegmentationStrategyMultiple(texture, size, fill))


def selective_search(
    image_rgb: np.ndarray,
    mode: str = "fast",
    max_side: int = 500,
    max_boxes: int = 2000,
    min_size: float = 2.0,
    ks: Optional[Sequence[int]] = None,
    sigma: float = 0.8,
    seg_min_size: int = FAST_SEG_MIN_SIZE,
    seed: int = 0,
) -> np.ndarray:
    """Selective Search boxes for one RGB image.

    Args:
        image_rgb: ``H x W x 3`` uint8 RGB.
        mode: ``"fast"`` or ``"quality"`` (module docstring).
        max_side: resize so the longer side is at most this first (0 = full resolution).
        max_boxes: keep the first ``max_boxes`` in ranking order (0 = all).
        min_size: drop boxes narrower or shorter than this, in original pixels.
        ks: graph-segmentation thresholds for ``"fast"`` (default ``(50, 100)``); for
            ``"quality"`` the first value is opencv's ``base_k`` (default 150).
        sigma: Gaussian smoothing of the graph segmentation.
        seg_min_size: smallest initial segment in pixels of the resized image ("fast";
            default 150; 0 = ``k``, as in R-CNN). Larger is faster: fewer regions to group.
        seed: seed of the ranking's random factor.

    Returns:
        float32 ``(N, 4)`` boxes ``(x1, y1, x2, y2)`` in original-image pixels, best first.
    """
    if mode not in ("fast", "quality"):
        raise ValueError(f"selective search mode must be 'fast' or 'quality', got '{mode}'")
    img = check_image(image_rgb)
    height, width = img.shape[:2]
    small, _ = resize_longer_side(img, max_side)
    bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(bgr)
    if mode == "fast":
        _configure_fast(ss, bgr, tuple(ks) if ks else FAST_KS, sigma, seg_min_size)
    else:
        base_k = int(ks[0]) if ks else 150
        ss.switchToSelectiveSearchQuality(base_k, base_k, float(sigma))
    _seed_c_rand(seed)
    rects = np.asarray(ss.process())
    sx, sy = small.shape[1] / float(width), small.shape[0] / float(height)
    boxes = rects_to_boxes(rects, sx, sy, width, height)
    return finish_boxes(boxes, max_boxes, min_size)
