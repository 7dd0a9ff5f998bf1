"""Evaluation: detections I/O, VOC AP, COCO AP, reports.

``evaluate(dataset, detections, metric)`` picks the metric; every result is a JSON-friendly
dict with at least ``metric``, ``mAP`` and ``ap`` (class name -> AP).
"""

from __future__ import annotations

from typing import Dict

from ..config import Metric, choices
from ..data.dataset import DetectionDataset
from ..errors import SppdetError
from .coco import evaluate_coco
from .detections import Detections, ImageDetections, load_detections
from .voc import evaluate_voc

METRIC_NAMES = choices(Metric)  # written once, in config.py


def evaluate(dataset: DetectionDataset, detections: Detections, metric: str = "voc07", iou_thresh: float = 0.5) -> Dict:
    """Evaluate with ``metric`` "voc07", "voc2010" (VOC AP at ``iou_thresh``) or "coco"."""
    if metric in ("voc07", "voc2010"):
        return evaluate_voc(dataset, detections, metric, iou_thresh)
    if metric == "coco":
        return evaluate_coco(dataset, detections)
    raise SppdetError(f"unknown metric '{metric}' (use {', '.join(METRIC_NAMES)})")


__all__ = ["Detections", "ImageDetections", "METRIC_NAMES", "evaluate", "load_detections"]
