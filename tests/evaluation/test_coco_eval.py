"""COCO metrics: equal to pycocotools run directly on the results json we write."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
from eval_data import COCO_MINI

from sppdet.data.dataset import DetectionDataset, ImageRecord
from sppdet.evaluation.coco import STAT_NAMES, evaluate_coco
from sppdet.evaluation.detections import ImageDetections, save_coco_results


def _perturbed_gt(dataset, seed=0):
    """Ground truth jittered, some dropped, some relabelled, plus random false positives."""
    rng = np.random.default_rng(seed)
    dets = {}
    for rec in dataset:
        keep = (~rec.iscrowd) & (rng.random(rec.num_objects) < 0.85)
        boxes = rec.boxes[keep].astype(np.float64)
        labels = rec.labels[keep].copy()
        wh = np.maximum(boxes[:, 2:] - boxes[:, :2], 1.0)
        boxes += rng.normal(0, 0.08, boxes.shape) * np.concatenate([wh, wh], 1)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 0.5)
        flip = rng.random(len(labels)) < 0.1
        labels[flip] = rng.integers(1, dataset.num_classes + 1, flip.sum())
        n_fp = rng.poisson(2)
        xy = rng.uniform(0, [rec.width * 0.8, rec.height * 0.8], (n_fp, 2))
        fp = np.concatenate([xy, xy + rng.uniform(8, 150, (n_fp, 2))], 1)
        dets[rec.image_id] = ImageDetections(
            np.concatenate([boxes, fp]),
            rng.random(len(boxes) + n_fp),
            np.concatenate([labels, rng.integers(1, dataset.num_classes + 1, n_fp)]),
        )
    return dets


@pytest.mark.slow  # 13 s measured (load 13-19 on 2 cores)
def test_matches_pycocotools_on_coco_mini(coco_mini, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dets = _perturbed_gt(coco_mini)
    ours = evaluate_coco(coco_mini, dets)

    res = tmp_path / "results.json"
    save_coco_results(dets, res, coco_mini)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        gt = COCO(str(COCO_MINI / "annotations" / "instances_train2017.json"))
        ev = COCOeval(gt, gt.loadRes(str(res)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert [ours[k] for k in STAT_NAMES] == pytest.approx(list(ev.stats), abs=1e-12)
    assert 0.2 < ours["AP"] < 0.9 and ours["mAP"] == ours["AP"]
    # the summary text is what pycocotools prints
    summary_lines = [line for line in printed.getvalue().splitlines() if line.startswith(" Average")]
    assert ours["summary"].splitlines() == summary_lines
    # per-class AP averages (over classes with gt) to AP
    per_class = [v for v in ours["ap"].values() if not math.isnan(v)]
    assert np.mean(per_class) == pytest.approx(ours["AP"], abs=1e-9)


def _toy_dataset():
    recs = [
        ImageRecord("000001", "a.jpg", 200, 200, [[10, 10, 60, 60], [100, 100, 180, 190]], [1, 2]),
        ImageRecord("000002", "b.jpg", 200, 200, [[0, 0, 30, 40], [50, 50, 90, 90]], [1, 1], difficult=[False, True]),
    ]
    return DetectionDataset(recs, ["cat", "dog"], "toy")


def test_in_memory_ground_truth_perfect_and_empty():
    ds = _toy_dataset()  # no ann_file: ground truth built from the records
    perfect = {r.image_id: ImageDetections(r.boxes, np.linspace(0.9, 0.5, r.num_objects), r.labels) for r in ds}
    m = evaluate_coco(ds, perfect)
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0) and m["mAP"] == pytest.approx(1.0)
    empty = evaluate_coco(ds, {})
    assert empty["AP"] == 0.0 and empty["AR100"] == 0.0
    assert set(STAT_NAMES) <= set(empty)
