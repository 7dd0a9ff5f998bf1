"""Reports: strict metrics.json, curves, html without readable images, the text table."""

from __future__ import annotations

import json

import numpy as np

from sppdet.data.dataset import DetectionDataset, ImageRecord
from sppdet.evaluation import evaluate
from sppdet.evaluation.detections import ImageDetections
from sppdet.evaluation.report import draw_matches, format_table, write_report


def _toy(tmp_path):
    img = np.full((60, 80, 3), 128, np.uint8)
    rec = ImageRecord(
        "a", str(tmp_path / "missing.jpg"), 80, 60, [[5, 5, 30, 30], [40, 10, 70, 50]], [1, 1], difficult=[False, True]
    )
    ds = DetectionDataset([rec], ["cell", "never seen"], "toy")
    dets = {"a": ImageDetections([[5, 5, 30, 31], [50, 40, 60, 55]], [0.9, 0.6], [1, 1])}
    return img, ds, dets


def test_write_report_and_table(tmp_path):
    _, ds, dets = _toy(tmp_path)
    metrics = evaluate(ds, dets, "voc2010")
    html = write_report(tmp_path / "out", ds, dets, metrics)  # the image file is missing: skipped, no crash
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())  # strict JSON: nan -> null
    assert saved["ap"] == {"cell": 1.0, "never seen": None}
    assert (tmp_path / "out" / "pr_curves" / "never_seen.png").stat().st_size > 0
    assert html.read_text().count("data:image/png;base64,") == 2
    table = format_table(metrics)
    assert "never seen" in table and "n/a" in table and "mAP (voc2010, IoU > 0.5) = 1.0000" in table
    assert "classes without ground truth (not in mAP): never seen" in table


def test_draw_matches_counts(tmp_path):
    img, ds, dets = _toy(tmp_path)
    vis, counts = draw_matches(img, ds[0], dets["a"], ds.class_names)
    assert counts == {"tp": 1, "fp": 1, "missed": 0}  # the difficult gt is not "missed"
    assert vis.shape == img.shape and (vis != img).any()
