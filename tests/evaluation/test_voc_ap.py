"""VOC AP: hand-computed cases, and agreement with an independent devkit transcription on real BCCD."""

from __future__ import annotations

import math

import numpy as np
import pytest
from eval_data import BCCD_CLASSES, dataset_from_raw
from voc_reference import devkit_ap

from sppdet.data.dataset import DetectionDataset, ImageRecord
from sppdet.evaluation.detections import ImageDetections, load_comp4
from sppdet.evaluation.voc import evaluate_voc, match_image, voc_ap
from sppdet.structures import box_iou, voc_to_xyxy


def _ds(gt_boxes, gt_labels, difficult=None, iscrowd=None, classes=("a", "b")):
    rec = ImageRecord(
        "im", "im.jpg", 100, 100, np.array(gt_boxes, np.float32).reshape(-1, 4), gt_labels, difficult, iscrowd=iscrowd
    )
    return DetectionDataset([rec], list(classes), "toy")


def _dets(boxes, scores, labels):
    return {"im": ImageDetections(np.array(boxes, np.float32).reshape(-1, 4), scores, labels)}


A, B, C = [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]
FAR = [70, 70, 80, 80]


@pytest.mark.parametrize("metric", ["voc07", "voc2010"])
def test_perfect_detections_give_one(metric):
    ds = _ds([A, B], [1, 1])
    m = evaluate_voc(ds, _dets([A, B], [0.9, 0.8], [1, 1]), metric)
    assert m["ap"]["a"] == pytest.approx(1.0)
    assert m["mAP"] == pytest.approx(1.0)  # class "b" has no gt: nan, not in mAP
    assert math.isnan(m["ap"]["b"]) and m["classes_without_gt"] == ["b"]


@pytest.mark.parametrize("metric", ["voc07", "voc2010"])
def test_all_wrong_gives_zero(metric):
    ds = _ds([A, B], [1, 2])
    # wrong place, and right place but wrong class
    m = evaluate_voc(ds, _dets([FAR, A, B], [0.9, 0.8, 0.7], [1, 2, 1]), metric)
    assert m["ap"] == {"a": 0.0, "b": 0.0} and m["mAP"] == 0.0


def test_no_detections_is_zero_not_a_crash():
    m = evaluate_voc(_ds([A], [1]), {}, "voc2010")
    assert m["ap"]["a"] == 0.0 and m["num_detections"]["a"] == 0


def test_duplicate_is_false_positive_and_metrics_differ():
    # gt A, B. Ranked: A (tp), A again (duplicate -> fp), B (tp).
    # recall    = [1/2, 1/2, 1]      precision = [1, 1/2, 2/3]
    # voc2010: envelope [1, 2/3, 2/3] -> 1/2 * 1 + 1/2 * 2/3 = 5/6 = 0.833333
    # voc07:   t = 0..0.5 (6 points) -> 1;  t = 0.6..1.0 (5 points) -> 2/3;
    #          (6 + 5 * 2/3) / 11 = 28/33 = 0.848485
    ds = _ds([A, B], [1, 1])
    dets = _dets([A, [0, 0, 10, 9.5], B], [0.9, 0.8, 0.7], [1, 1, 1])
    assert evaluate_voc(ds, dets, "voc2010")["ap"]["a"] == pytest.approx(5 / 6, abs=1e-12)
    assert evaluate_voc(ds, dets, "voc07")["ap"]["a"] == pytest.approx(28 / 33, abs=1e-12)


def test_eleven_point_and_area_differ_with_a_missed_gt():
    # gt A, B, C; ranked detections: A (tp), FAR (fp), B (tp); C is never found.
    # recall = [1/3, 1/3, 2/3], precision = [1, 1/2, 2/3]
    # voc2010: 1/3 * 1 + 1/3 * 2/3 + 1/3 * 0 = 5/9 = 0.555556
    # voc07:   t in {0, .1, .2, .3} -> 1 (4 points); t in {.4, .5, .6} -> 2/3 (3 points);
    #          t in {.7, .8, .9, 1} -> 0;  (4 + 3 * 2/3) / 11 = 6/11 = 0.545455
    ds = _ds([A, B, C], [1, 1, 1])
    dets = _dets([A, FAR, B], [0.9, 0.8, 0.7], [1, 1, 1])
    assert evaluate_voc(ds, dets, "voc2010")["ap"]["a"] == pytest.approx(5 / 9, abs=1e-12)
    assert evaluate_voc(ds, dets, "voc07")["ap"]["a"] == pytest.approx(6 / 11, abs=1e-12)


def test_difficult_is_neither_counted_nor_penalised():
    ds = _ds([A, B], [1, 1], difficult=[False, True])
    # detection on the difficult B (highest score) is ignored; A found; one false positive last.
    # Counted it would be: recall [0, 1, 1] precision [0, 1/2, 1/3] -> AP 1/2. Ignored: AP 1.
    dets = _dets([B, A, FAR], [0.95, 0.9, 0.8], [1, 1, 1])
    m = evaluate_voc(ds, dets, "voc2010")
    assert m["ap"]["a"] == pytest.approx(1.0) and m["num_gt"]["a"] == 1
    # missing the difficult object costs nothing either
    assert evaluate_voc(ds, _dets([A], [0.9], [1]), "voc07")["ap"]["a"] == pytest.approx(1.0)
    # only difficult gt: the class has no gt -> nan, out of mAP
    only = evaluate_voc(_ds([B], [1], difficult=[True]), _dets([B], [0.9], [1]))
    assert math.isnan(only["ap"]["a"]) and math.isnan(only["mAP"])


def test_crowd_counts_as_difficult():
    ds = _ds([A, B], [1, 1], iscrowd=[False, True])
    m = evaluate_voc(ds, _dets([B, A], [0.95, 0.9], [1, 1]), "voc2010")
    assert m["ap"]["a"] == pytest.approx(1.0) and m["num_gt"]["a"] == 1


def test_iou_threshold_is_strict_and_configurable():
    ds = _ds([A], [1])
    half = _dets([[0, 0, 10, 5]], [0.9], [1])  # IoU exactly 0.5
    assert evaluate_voc(ds, half, iou_thresh=0.5)["ap"]["a"] == 0.0
    assert evaluate_voc(ds, half, iou_thresh=0.49)["ap"]["a"] == pytest.approx(1.0)


def test_no_fallback_to_second_best_gt():
    # two overlapping gt; both detections overlap the first best -> the second is a duplicate
    g1, g2 = [0, 0, 10, 10], [1, 0, 11, 10]
    status, matched = match_image(
        np.array([g1, g2], np.float32),
        np.zeros(2, bool),
        np.array([g1, [0, 0, 10.2, 10]], np.float32),
        np.array([0.9, 0.8]),
        0.5,
    )
    assert status.tolist() == [1, 0] and matched.tolist() == [True, False]


def test_voc_ap_on_arrays():
    assert voc_ap(np.array([]), np.array([]), True) == 0.0
    assert voc_ap(np.array([]), np.array([]), False) == 0.0
    rec, prec = np.array([0.5, 1.0]), np.array([1.0, 0.5])
    assert voc_ap(rec, prec, False) == pytest.approx(0.75)
    assert voc_ap(rec, prec, True) == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)


def test_devkit_plus_one_iou_equals_continuous_iou():
    rng = np.random.default_rng(1)
    xy = rng.integers(1, 200, size=(300, 2))
    a = np.concatenate([xy, xy + rng.integers(0, 60, size=(300, 2))], 1).astype(np.float64)
    xy = rng.integers(1, 200, size=(300, 2))
    b = np.concatenate([xy, xy + rng.integers(0, 60, size=(300, 2))], 1).astype(np.float64)
    iw = np.maximum(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1, 0)
    ih = np.maximum(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1, 0)
    inter = iw * ih
    uni = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1) + (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1) - inter
    ours = np.diag(box_iou(voc_to_xyxy(a), voc_to_xyxy(b)))
    np.testing.assert_allclose(ours, inter / uni, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------
def _random_detections(raw, rng, round_scores):
    """Per class: [(image_id, score, [xmin, ymin, xmax, ymax] 1-based floats)] in dataset order."""
    lines = {c: [] for c in BCCD_CLASSES}

    def add(image_id, cls, box):
        x1, y1, x2, y2 = box
        x2, y2 = max(x2, x1), max(y2, y1)  # keep xmax >= xmin (width >= 1 pixel in VOC terms)
        score = float(rng.random())
        score = round(score, 1) if round_scores else score
        lines[cls].append((image_id, score, [float(f"{v:.2f}") for v in (x1, y1, x2, y2)]))

    for image_id, objs in raw.items():
        for name, box, _ in objs:
            w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
            for _ in range(1 + (rng.random() < 0.15)):  # sometimes a duplicate
                if rng.random() < 0.75:
                    jit = rng.normal(0, 0.12, 4) * [w, h, w, h]
                    cls = name if rng.random() < 0.9 else BCCD_CLASSES[rng.integers(3)]
                    add(image_id, cls, [b + j for b, j in zip(box, jit)])
        for _ in range(rng.poisson(3)):
            x, y = rng.uniform(1, 600), rng.uniform(1, 440)
            add(image_id, BCCD_CLASSES[rng.integers(3)], [x, y, x + rng.uniform(5, 120), y + rng.uniform(5, 120)])
    return lines


@pytest.mark.parametrize("round_scores", [False, True], ids=["distinct-scores", "tied-scores"])
def test_agrees_with_devkit_transcription_on_bccd_val(bccd_val_raw, tmp_path, round_scores):
    rng = np.random.default_rng(7 + round_scores)
    # make ~10% of the objects difficult so that rule is exercised on real boxes
    raw = {i: [(n, b, int(rng.random() < 0.1)) for n, b, _ in objs] for i, objs in bccd_val_raw.items()}
    lines = _random_detections(raw, rng, round_scores)
    for cls, rows in lines.items():
        text = "".join(f"{i} {s:.6f} {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f}\n" for i, s, b in rows)
        (tmp_path / f"comp4_det_val_{cls}.txt").write_text(text)
        lines[cls] = [(i, float(f"{s:.6f}"), b) for i, s, b in rows]  # what the file holds
    dataset = dataset_from_raw(raw)
    dets = load_comp4(tmp_path, dataset)
    for metric in ("voc07", "voc2010"):
        for thr in (0.5, 0.7):
            ours = evaluate_voc(dataset, dets, metric, thr)
            ref = {c: devkit_ap(raw, lines[c], c, thr, metric == "voc07") for c in BCCD_CLASSES}
            for c in BCCD_CLASSES:
                assert ours["ap"][c] == pytest.approx(ref[c], abs=1e-6), (metric, thr, c)
            assert ours["mAP"] == pytest.approx(np.mean(list(ref.values())), abs=1e-6)
            assert 0.05 < ours["mAP"] < 0.95  # a non-trivial case
