"""EdgeBoxes (Zitnick & Dollar, ECCV 2014) through opencv-contrib's ``ximgproc.createEdgeBoxes``.

EdgeBoxes scores windows by the edge groups they wholly contain; it needs an edge map
``E`` (float32, ``[0, 1]``, thin edges) and an orientation map ``O`` (float32, radians in
``[0, pi)``, the direction *across* the edge, as ``StructuredEdgeDetection.computeOrientation``
gives).

* With ``model_path`` (opencv's structured-edge forest ``model.yml.gz``) the edges come from
  ``createStructuredEdgeDetection`` (+ its orientation and non-max suppression), as in the paper.
* Without it (the model is not shipped and cannot be downloaded here) they come from image
  gradients: Lab image smoothed with a Gaussian (sigma 2), Sobel per channel, the strongest
  channel's magnitude normalised by its 99.5th percentile and clipped to ``[0, 1]``,
  ``O = atan2(gy, gx) mod pi``, then the same non-max suppression as Dollar's ``edgesNms``
  (``r = 2``, ``m = 1``).

  Quality difference: gradient edges fire on texture as well as on object boundaries and
  their magnitudes are not boundary probabilities, so boxes are ranked less well (the paper
  reports ~10 points lower recall at 0.7 IoU for gradient edges than for structured edges
  on VOC). Use a structured-edge model when you have one. Here the ranking is the weak
  point: on BCCD val, recall@0.5 is ~0.16 with the top 100 boxes but ~0.99 with 2,000.

``alpha`` defaults to 0.6 rather than the paper's 0.65: a coarser sliding-window step, about
twice as fast (~0.15 s instead of ~0.3 s on a 500 x 375 image, one core) and, with gradient
edges, higher recall at 1,000-2,000 boxes on BCCD val and on the sample set (tuned there).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Tuple

import cv2
import numpy as np

from ..errors import DataError
from .selective_search import check_image, finish_boxes, rects_to_boxes, resize_longer_side


@functools.lru_cache(maxsize=2)
def _structured_edge_model(model_path: str):
    if not Path(model_path).is_file():
        raise DataError(f"{model_path}: structured-edge model file not found (proposals.edge_model)")
    try:
        return cv2.ximgproc.createStructuredEdgeDetection(model_path)
    except cv2.error as e:
        raise DataError(f"{model_path}: cannot load structured-edge model ({str(e).strip()[:200]})") from e


def edges_nms(edges: np.ndarray, orientation: np.ndarray, r: int = 2, m: float = 1.0) -> np.ndarray:
    """Suppress edge pixels weaker than ``m`` x their neighbours at +-1..r pixels across the edge."""
    h, w = edges.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cos, sin = np.cos(orientation).astype(np.float32), np.sin(orientation).astype(np.float32)
    keep = np.ones_like(edges, dtype=bool)
    scaled = edges * m
    for d in range(-r, r + 1):
        if d == 0:
            continue
        nb = cv2.remap(edges, xs + d * cos, ys + d * sin, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        keep &= scaled >= nb
    return np.where(keep, edges, 0).astype(np.float32)


def gradient_edges(
    image_rgb: np.ndarray, sigma: float = 2.0, percentile: float = 99.5
) -> Tuple[np.ndarray, np.ndarray]:
    """Edge magnitude in ``[0, 1]`` and orientation ``[0, pi)`` from Sobel gradients (module docstring)."""
    lab = cv2.cvtColor(image_rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    lab *= np.array([1 / 100.0, 1 / 128.0, 1 / 128.0], np.float32)  # comparable channel ranges
    lab = cv2.GaussianBlur(lab, (0, 0), sigma)
    gx = cv2.Sobel(lab, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lab, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.sqrt(gx * gx + gy * gy)  # (H, W, 3)
    best = np.argmax(mag, axis=2)[..., None]
    mag1 = np.take_along_axis(mag, best, axis=2)[..., 0]
    gx1 = np.take_along_axis(gx, best, axis=2)[..., 0]
    gy1 = np.take_along_axis(gy, best, axis=2)[..., 0]
    scale = float(np.percentile(mag1, percentile)) or 1.0
    edges = np.clip(mag1 / scale, 0.0, 1.0).astype(np.float32)
    orientation = np.mod(np.arctan2(gy1, gx1), np.pi).astype(np.float32)
    return edges, orientation


def edge_map(image_rgb: np.ndarray, model_path: str = "") -> Tuple[np.ndarray, np.ndarray]:
    """Thin edges and orientation for EdgeBoxes: structured edges with a model, else gradients."""
    if model_path:
        sed = _structured_edge_model(str(model_path))
        edges = sed.detectEdges(image_rgb.astype(np.float32) / 255.0)
        orientation = sed.computeOrientation(edges)
        return sed.edgesNms(edges, orientation), orientation
    edges, orientation = gradient_edges(image_rgb)
    return edges_nms(edges, orientation), orientation


def edge_boxes(
    image_rgb: np.ndarray,
    max_boxes: int = 2000,
    model_path: str = "",
    max_side: int = 0,
    alpha: float = 0.6,
    beta: float = 0.75,
    min_score: float = 0.01,
    min_size: float = 2.0,
    min_box_area: float = 1000.0,
    max_aspect_ratio: float = 3.0,
    edge_min_mag: float = 0.1,
) -> Tuple[np.ndarray, np.ndarray]:
    """EdgeBoxes proposals for one RGB image.

    Args:
        image_rgb: ``H x W x 3`` uint8 RGB.
        max_boxes: at most this many boxes (best score first).
        model_path: structured-edge model (``.yml.gz``); empty = gradient edges (less accurate).
        max_side: resize so the longer side is at most this first (0 = full resolution).
        alpha, beta: sliding-window step and NMS IoU of EdgeBoxes (paper: 0.65, 0.75; module notes).
        min_score: drop boxes scoring below this.
        min_size: drop boxes narrower or shorter than this, in original pixels.
        min_box_area, max_aspect_ratio, edge_min_mag: EdgeBoxes' own limits, in resized pixels.

    Returns:
        ``(boxes float32 (N, 4) ours in original pixels, scores float32 (N,))``, best first.
    """
    img = check_image(image_rgb)
    height, width = img.shape[:2]
    small, _ = resize_longer_side(img, max_side)
    edges, orientation = edge_map(small, model_path)
    eb = cv2.ximgproc.createEdgeBoxes(
        alpha=alpha,
        beta=beta,
        minScore=min_score,
        maxBoxes=int(max_boxes) if max_boxes else 10000,
        edgeMinMag=edge_min_mag,
        minBoxArea=min_box_area,
        maxAspectRatio=max_aspect_ratio,
    )
    found, scores = eb.getBoundingBoxes(edges, orientation)
    rects = np.asarray(found, dtype=np.float32).reshape(-1, 4)
    # opencv returns ((), None) when it finds nothing (flat or tiny images): no boxes, not NaN
    scores = np.asarray(scores if scores is not None else [], dtype=np.float32).reshape(-1)
    if len(scores) != len(rects):
        raise DataError(f"EdgeBoxes returned {len(rects)} boxes but {len(scores)} scores")
    sx, sy = small.shape[1] / float(width), small.shape[0] / float(height)
    boxes = rects_to_boxes(rects, sx, sy, width, height)
    order = np.argsort(-scores, kind="stable")
    return finish_boxes(boxes[order], max_boxes, min_size, scores[order])
