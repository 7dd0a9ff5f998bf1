"""PASCAL VOC average precision, by the devkit's rules (as py-faster-rcnn's ``voc_eval.py``).

Rules, per class:

* Detections of the class over all images are ranked by score, descending. The sort is
  stable: ties keep dataset image order, then the order held for the image.
* Each detection, in rank order, is compared with every ground-truth box of its class in its
  image; ``j`` = the gt of largest IoU. If ``IoU > iou_thresh`` (strictly):
  gt ``j`` difficult -> the detection is ignored (neither true nor false positive);
  else gt ``j`` not yet matched -> true positive, ``j`` becomes matched;
  else -> false positive (duplicate). Otherwise -> false positive. A detection does not
  fall back to its second-best gt.
* IoU is continuous IoU on our boxes, which equals the devkit's ``+1`` IoU on 1-based VOC
  boxes (see :mod:`sppdet.structures`).
* ``npos`` = number of non-difficult gt. ``recall = cum_tp / npos``,
  ``precision = cum_tp / (cum_tp + cum_fp)``; ignored detections are dropped from the curve
  (they repeat the previous point, so AP is unchanged).
* ``voc07``: 11-point interpolated AP, mean over ``t = 0, 0.1, ..., 1`` of the highest
  precision at recall >= t (0 if none). ``voc2010``: area under the monotone precision
  envelope, summed where recall changes.

Decisions beyond the reference:

* COCO crowd gt (``iscrowd``) count as difficult.
* A class with no non-difficult gt in the split has AP ``nan`` (the reference divides by
  zero): it is listed in ``classes_without_gt`` and left out of mAP. mAP is the mean AP over
  the classes that have gt (``nan`` when none has).
* A class with gt but no detections has AP 0. Nothing is cached between calls.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from ..data.dataset import DetectionDataset
from ..errors import SppdetError
from ..structures import box_iou
from .detections import Detections, ImageDetections, check_detections

METRICS = ("voc07", "voc2010")

#: Recall thresholds of the 11-point metric, computed as the reference does (0.1 steps).
_ELEVEN_POINTS = np.arange(0.0, 1.1, 0.1)

TP, FP, IGNORED = 1, 0, -1


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool = False) -> float:
    """AP from recall and precision arrays (detections in rank order).

    ``use_07_metric``: 11-point interpolation (VOC2007); else the area under the monotone
    precision envelope (VOC2010 and later). Empty arrays give 0.
    """
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    if use_07_metric:
        total = 0.0
        for t in _ELEVEN_POINTS:
            above = rec >= t
            total += (prec[above].max() if above.any() else 0.0) / 11.0
        return float(total)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # envelope: max precision to the right
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def match_image(
    gt_boxes: np.ndarray, gt_ignore: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray, iou_thresh: float = 0.5
) -> Tuple[np.ndarray, np.ndarray]:
    """Greedy devkit matching of one image's detections of one class against its gt.

    Returns ``status (D,) int8`` (1 true positive, 0 false positive, -1 ignored: matched a
    difficult gt) in the detections' given order, and ``matched (G,) bool`` for the gt.
    Matching goes by descending score (stable), so detections of other images never matter.
    """
    nd, ng = len(det_boxes), len(gt_boxes)
    status = np.full(nd, FP, dtype=np.int8)
    matched = np.zeros(ng, dtype=bool)
    if nd == 0 or ng == 0:
        return status, matched
    iou = np.nan_to_num(box_iou(np.asarray(det_boxes, np.float64), np.asarray(gt_boxes, np.float64)), nan=0.0)
    best = iou.argmax(axis=1)
    for d in np.argsort(-np.asarray(det_scores, np.float64), kind="stable"):
        j = best[d]
        if iou[d, j] > iou_thresh:
            if gt_ignore[j]:
                status[d] = IGNORED
            elif not matched[j]:
                status[d] = TP
                matched[j] = True
    return status, matched


def _class_matches(
    dataset: DetectionDataset, detections: Detections, label: int, iou_thresh: float
) -> Tuple[int, np.ndarray, np.ndarray]:
    """npos, and the scores and statuses of all detections of ``label`` (dataset order)."""
    npos, scores, status = 0, [], []
    empty = ImageDetections()
    for rec in dataset:
        g = rec.labels == label
        ignore = (rec.difficult | rec.iscrowd)[g]
        npos += int((~ignore).sum())
        d = detections.get(rec.image_id, empty)
        k = d.labels == label
        if not k.any():
            continue
        s, _ = match_image(rec.boxes[g], ignore, d.boxes[k], d.scores[k], iou_thresh)
        scores.append(d.scores[k].astype(np.float64))
        status.append(s)
    if not scores:
        return npos, np.zeros(0), np.zeros(0, np.int8)
    return npos, np.concatenate(scores), np.concatenate(status)


def pr_curve(npos: int, scores: np.ndarray, status: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Recall and precision after each non-ignored detection, ranked by descending score."""
    order = np.argsort(-scores, kind="stable")
    st = status[order]
    st = st[st != IGNORED]
    tp = np.cumsum(st == TP, dtype=np.float64)
    fp = np.cumsum(st == FP, dtype=np.float64)
    rec = tp / npos if npos > 0 else np.full(len(tp), np.nan)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return rec, prec


def _thin(x: np.ndarray, n: int) -> List[float]:
    if n and len(x) > n:
        x = x[np.unique(np.linspace(0, len(x) - 1, n).round().astype(int))]
    return [round(float(v), 6) for v in x]


def evaluate_voc(
    dataset: DetectionDataset,
    detections: Detections,
    metric: str = "voc07",
    iou_thresh: float = 0.5,
    curve_points: int = 500,
) -> Dict:
    """VOC AP per class and mAP (rules in the module docstring).

    Returns a JSON-friendly dict:

    * ``metric`` (str), ``iou_thresh`` (float), ``mAP`` (float; nan when no class has gt),
    * ``ap``: class name -> AP (nan for classes without gt), in label order,
    * ``num_gt``: class name -> non-difficult gt count; ``num_detections``: class -> count,
    * ``classes_without_gt``: names left out of mAP,
    * ``pr``: class name -> ``{"recall": [...], "precision": [...]}``, the curve after each
      ranked detection, thinned to at most ``curve_points`` points (0 = all).
    """
    if metric not in METRICS:
        raise SppdetError(f"unknown VOC metric '{metric}' (use {' or '.join(METRICS)})")
    check_detections(detections, dataset)
    out: Dict = {
        "metric": metric,
        "iou_thresh": float(iou_thresh),
        "num_images": len(dataset),
        "ap": {},
        "num_gt": {},
        "num_detections": {},
        "classes_without_gt": [],
        "pr": {},
    }
    for label, name in enumerate(dataset.class_names, start=1):
        npos, scores, status = _class_matches(dataset, detections, label, iou_thresh)
        rec, prec = pr_curve(npos, scores, status)
        ap = voc_ap(rec, prec, metric == "voc07") if npos > 0 else float("nan")
        if npos == 0:
            out["classes_without_gt"].append(name)
        out["ap"][name] = ap
        out["num_gt"][name] = npos
        out["num_detections"][name] = int(len(scores))
        out["pr"][name] = {
            "recall": _thin(rec, curve_points) if npos > 0 else [],
            "precision": _thin(prec, curve_points) if npos > 0 else [],
        }
    valid = [v for v in out["ap"].values() if not np.isnan(v)]
    out["mAP"] = float(np.mean(valid)) if valid else float("nan")
    return out
