"""COCO box AP with pycocotools' ``COCOeval``, on sppdet detections.

Detections are mapped back to the original image and category ids and to ``[x, y, w, h]``
(:func:`~sppdet.evaluation.detections.detections_to_coco_results`) and evaluated exactly as
pycocotools would evaluate that results json. The ground truth is:

* ``dataset.meta["ann_file"]`` when present: the original json, so crowd regions and
  segmentation areas are exactly what pycocotools sees (only the dataset's images and
  categories are evaluated);
* otherwise a COCO object built in memory from the records: box areas (``w * h``) for the
  small/medium/large ranges, and VOC ``difficult`` objects marked ``iscrowd`` (pycocotools
  has no other way to ignore a gt; crowd matching differs slightly from VOC's "ignore").

pycocotools' printing is captured; the summary text comes back under ``"summary"``.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.dataset import DetectionDataset
from ..errors import DataError
from .detections import Detections, category_ids, coco_image_ids, detections_to_coco_results

log = logging.getLogger("sppdet.evaluation")

#: The 12 numbers of ``COCOeval.summarize()`` for boxes, in its order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _quiet(fn, *args):
    """Call ``fn(*args)``, returning its result and whatever it printed."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        result = fn(*args)
    return result, buf.getvalue()


def dataset_to_coco_dict(dataset: DetectionDataset) -> Dict:
    """A COCO instances dict (images, annotations, categories) built from the records."""
    img_ids = coco_image_ids(dataset)
    cats = category_ids(dataset)
    images: List[Dict] = []
    anns: List[Dict] = []
    for rec in dataset:
        iid = img_ids[rec.image_id]
        images.append(
            {"id": iid, "width": int(rec.width), "height": int(rec.height), "file_name": Path(rec.file_name).name}
        )
        ignore = rec.iscrowd | rec.difficult
        for box, label, crowd in zip(rec.boxes.astype(np.float64).tolist(), rec.labels.tolist(), ignore.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": iid,
                    "category_id": cats[label - 1],
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": int(crowd),
                }
            )
    categories = [{"id": c, "name": n} for c, n in zip(cats, dataset.class_names)]
    return {"images": images, "annotations": anns, "categories": categories}


def _ground_truth(dataset: DetectionDataset):
    ann_file = dataset.meta.get("ann_file")
    if ann_file and Path(ann_file).is_file() and all(r.coco_id is not None for r in dataset):
        gt, _ = _quiet(COCO, str(ann_file))
        missing = [r.coco_id for r in dataset if r.coco_id not in gt.imgs]
        if missing:
            raise DataError(
                f"{ann_file}: {len(missing)} image id(s) of the dataset are not in this file (e.g. {missing[:3]})"
            )
        return gt
    if ann_file:
        log.warning("%s not usable as COCO ground truth; building it from the dataset records", ann_file)
    gt = COCO()
    gt.dataset = dataset_to_coco_dict(dataset)
    _quiet(gt.createIndex)
    return gt


def _results(gt, results: List[Dict]):
    """``gt.loadRes`` for a results list; an empty list gives an empty result set (no crash)."""
    if results:
        dt, _ = _quiet(gt.loadRes, results)
        return dt
    dt = COCO()
    dt.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]), "annotations": []}
    _quiet(dt.createIndex)
    return dt


def run_cocoeval(gt, results: List[Dict], img_ids=None, cat_ids=None):
    """Run ``COCOeval`` (bbox) quietly; returns the evaluator and the summary text."""
    ev = COCOeval(gt, _results(gt, results), "bbox")
    if img_ids is not None:
        ev.params.imgIds = sorted(img_ids)
    if cat_ids is not None:
        ev.params.catIds = sorted(cat_ids)
    _quiet(ev.evaluate)
    _quiet(ev.accumulate)
    _, text = _quiet(ev.summarize)
    return ev, text


def _per_class(ev, dataset: DetectionDataset) -> Tuple[Dict, Dict]:
    """AP@[.5:.95] per class and the IoU=0.5 precision curve over the 101 recall points."""
    names = dict(zip(category_ids(dataset), dataset.class_names))
    prec = ev.eval["precision"]  # [T, R, K, A, M]
    area, mdet = 0, len(ev.params.maxDets) - 1
    ap, pr = {}, {}
    for k, cat in enumerate(ev.params.catIds):
        name = names.get(cat, str(cat))
        p = prec[:, :, k, area, mdet]
        ap[name] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
        p50 = prec[0, :, k, area, mdet]
        ok = p50 > -1
        pr[name] = {
            "recall": [round(float(v), 6) for v in ev.params.recThrs[ok]],
            "precision": [round(float(v), 6) for v in p50[ok]],
        }
    return ap, pr


def evaluate_coco(dataset: DetectionDataset, detections: Detections) -> Dict:
    """COCO box metrics of ``detections`` on ``dataset``.

    Returns a JSON-friendly dict: the 12 numbers of ``COCOeval.summarize()`` under
    :data:`STAT_NAMES` (``AP`` = AP@[.5:.95], ``AP50``, ``AP75``, ``APs/m/l``, ``AR1/10/100``,
    ``ARs/m/l``; -1 where pycocotools prints -1, i.e. no gt in that range), ``mAP`` (= ``AP``,
    nan when undefined), ``metric`` = "coco", ``ap`` (class name -> AP@[.5:.95], nan without gt),
    ``num_gt`` and ``num_detections`` per class, ``pr`` (class -> IoU=0.5 precision at
    recall 0, 0.01, ..., 1), and ``summary`` (the text pycocotools prints).
    """
    results = detections_to_coco_results(detections, dataset)
    gt = _ground_truth(dataset)
    img_ids = list(coco_image_ids(dataset).values())
    ev, text = run_cocoeval(gt, results, img_ids, category_ids(dataset))
    out: Dict = {"metric": "coco", "num_images": len(dataset)}
    out.update({k: float(v) for k, v in zip(STAT_NAMES, ev.stats)})
    out["mAP"] = out["AP"] if out["AP"] >= 0 else float("nan")
    out["ap"], out["pr"] = _per_class(ev, dataset)
    out["num_gt"] = {
        n: int(sum(((r.labels == k) & ~r.iscrowd & ~r.difficult).sum() for r in dataset))
        for k, n in enumerate(dataset.class_names, 1)
    }
    out["num_detections"] = {
        n: int(sum((d.labels == k).sum() for d in detections.values())) for k, n in enumerate(dataset.class_names, 1)
    }
    out["summary"] = text.strip("\n")
    return out
