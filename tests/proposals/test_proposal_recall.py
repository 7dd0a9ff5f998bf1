"""Recall on hand-made boxes with known IoUs."""

import json

import numpy as np
import pytest

from sppdet.data.dataset import DetectionDataset, ImageRecord
from sppdet.proposals.recall import best_ious, evaluate_recall, format_recall_table, save_recall_report


def _dataset():
    # image a: two gt boxes (+ one difficult, ignored); image b: one gt (+ one crowd, ignored)
    a = ImageRecord(
        "a",
        "a.jpg",
        100,
        100,
        boxes=[[0, 0, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90]],
        labels=[1, 1, 1],
        difficult=[False, False, True],
    )
    b = ImageRecord(
        "b", "b.jpg", 100, 100, boxes=[[0, 0, 20, 20], [30, 30, 40, 40]], labels=[1, 1], iscrowd=[False, True]
    )
    c = ImageRecord("c", "c.jpg", 100, 100)  # no objects
    return DetectionDataset([a, b, c], ["x"])


def test_best_ious_per_top_n():
    gt = np.array([[0, 0, 10, 10]], np.float32)
    props = np.array([[0, 0, 10, 5], [0, 0, 10, 8], [0, 0, 10, 10]], np.float32)  # IoU 0.5, 0.8, 1
    np.testing.assert_allclose(best_ious(props, gt, [1, 2, 3, 10]), [[0.5], [0.8], [1.0], [1.0]])


def test_recall_known_answer(tmp_path):
    proposals = {
        # gt a0: IoU 0.6 (x2=6) first, then exact at rank 3; gt a1: IoU 0.72 (10x7.2) at rank 2
        "a": (np.array([[0, 0, 6, 10], [50, 50, 60, 57.2], [0, 0, 10, 10]], np.float32), None),
        # gt b0 (20x20): a 20x12 box inside it: IoU 0.6 at rank 1
        "b": (np.array([[0, 0, 20, 12]], np.float32), None),
        "c": (np.array([[1, 1, 5, 5]], np.float32), None),
    }
    r = evaluate_recall(proposals, _dataset(), nums=[1, 2, 3])
    assert r["num_gt"] == 3 and r["images_missing"] == 0
    # N=1: best IoUs 0.6, 0, 0.6 ; N=2: 0.6, 0.72, 0.6 ; N=3: 1.0, 0.72, 0.6
    assert r["by_num"]["1"]["recall@0.5"] == pytest.approx(2 / 3)
    assert r["by_num"]["1"]["recall@0.7"] == pytest.approx(0)
    assert r["by_num"]["2"]["recall@0.7"] == pytest.approx(1 / 3)
    assert r["by_num"]["3"]["recall@0.5"] == pytest.approx(1.0)
    assert r["by_num"]["3"]["recall@0.7"] == pytest.approx(2 / 3)
    # AR at N=3: thresholds 0.5..0.95; IoU 1.0 passes all 10, 0.72 passes 0.5..0.7 (5), 0.6 passes 0.5,0.55,0.6 (3)
    assert r["by_num"]["3"]["average_recall"] == pytest.approx((10 + 5 + 3) / 30)
    text = format_recall_table(r)
    assert "R@0.5" in text and text.count("\n") == 4
    json_path, png_path = save_recall_report(r, tmp_path / "rec")
    assert json.loads(json_path.read_text())["by_num"]["3"]["recall@0.5"] == 1.0
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_images_count_as_no_proposals():
    r = evaluate_recall({"a": (np.array([[0, 0, 10, 10]], np.float32), None)}, _dataset(), nums=[10])
    assert r["images_missing"] == 2 and r["by_num"]["10"]["recall@0.5"] == pytest.approx(1 / 3)
