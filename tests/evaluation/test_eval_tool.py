"""tools/eval.py run as a user would, and the report it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from eval_data import BCCD_CLASSES, BCCD_ROOT, dataset_from_raw

from sppdet.evaluation.detections import ImageDetections, save_detections

TOOL = Path(__file__).resolve().parents[2] / "tools" / "eval.py"


def _run(*args):
    pytest.importorskip("sppdet.data.voc", reason="the VOC reader (sppdet.data.voc) is not written yet")
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=120)


def _voc_args(dets):
    return [
        "--dataset",
        "voc",
        "--root",
        BCCD_ROOT,
        "--split",
        "val",
        "--classes",
        ",".join(BCCD_CLASSES),
        "--detections",
        dets,
    ]


@pytest.mark.slow  # 59 s measured (load 13-19 on 2 cores)
def test_eval_tool_on_bccd_val_writes_report(bccd_val_raw, tmp_path):
    ds = dataset_from_raw(bccd_val_raw)
    rng = np.random.default_rng(0)
    # perfect detections, except every WBC is missed: AP RBC = Platelets = 1, WBC = 0
    dets = {
        r.image_id: ImageDetections(
            r.boxes[r.labels != 2], rng.random(int((r.labels != 2).sum())), r.labels[r.labels != 2]
        )
        for r in ds
    }
    save_detections(dets, tmp_path / "dets.json", ds)
    out = tmp_path / "report"
    proc = _run(*_voc_args(tmp_path / "dets.json"), "--metric", "voc2010", "--out", out, "--num-images", 2)
    assert proc.returncode == 0, proc.stderr
    assert "mAP (voc2010, IoU > 0.5) = 0.6667" in proc.stdout
    assert "WBC" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ap"] == {"RBC": 1.0, "WBC": 0.0, "Platelets": 1.0}
    assert sorted(p.name for p in (out / "pr_curves").iterdir()) == ["Platelets.png", "RBC.png", "WBC.png"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and html.count("data:image/jpeg;base64,") == 2


@pytest.mark.slow  # 61 s measured (load 13-19 on 2 cores)
def test_eval_tool_bad_class_is_one_line_error(bccd_val_raw, tmp_path):
    first = next(iter(bccd_val_raw))
    (tmp_path / "dets.json").write_text(
        json.dumps(
            {
                "format": "sppdet-detections",
                "version": 1,
                "images": [
                    {"image_id": first, "detections": [{"class": "Neutrophil", "score": 0.9, "box": [0, 0, 9, 9]}]}
                ],
            }
        )
    )
    proc = _run(*_voc_args(tmp_path / "dets.json"))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "unknown class 'Neutrophil'" in lines[0]
