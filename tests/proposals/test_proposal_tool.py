"""tools/proposals.py run as a user would: convert, compute, recall, and the pickle refusal."""

import importlib.util
import json
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from sppdet.cli import run_tool
from sppdet.proposals.store import ProposalStore

TOOL = Path(__file__).resolve().parents[2] / "tools" / "proposals.py"


def _tool():
    spec = importlib.util.spec_from_file_location("proposals_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow  # 25 s measured (load 13-19 on 2 cores)
def test_convert_demo_files_as_a_user(tmp_path, demo_dir):
    out = tmp_path / "demo.npz"
    res = subprocess.run(
        [sys.executable, str(TOOL), "convert", str(demo_dir), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=TOOL.parents[1],
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "2 images, 4945 boxes" in res.stdout
    store = ProposalStore(out)
    assert len(store.boxes("000004")) == 2888 and len(store.boxes("001551")) == 2057


def test_pickle_refused_without_flag(tmp_path, capsys):
    src = tmp_path / "p.pkl"
    src.write_bytes(pickle.dumps({"ids": ["a"], "boxes": [np.zeros((1, 4))], "objectness_logits": [np.zeros(1)]}))
    tool = _tool()
    assert run_tool(tool.main, ["convert", str(src), "--out", str(tmp_path / "o.npz")]) == 2
    assert "--allow-pickle" in capsys.readouterr().err
    assert run_tool(tool.main, ["convert", str(src), "--out", str(tmp_path / "o.npz"), "--allow-pickle"]) == 0


def test_compute_images_and_recall_with_config(tmp_path, demo_dir, capsys):
    # a tiny VOC-layout dataset: two real photos, one annotated object each
    from sppdet.data.dataset import ImageRecord
    from sppdet.data.voc import write_voc_annotation

    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    ids = ["000004", "001551"]
    for i in ids:
        img = cv2.imread(str(demo_dir / f"{i}.jpg"))
        small = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / "JPEGImages" / f"{i}.jpg"), small)
        h, w = small.shape[:2]
        rec = ImageRecord(i, str(root / "JPEGImages" / f"{i}.jpg"), w, h, boxes=[[20, 20, 120, 150]], labels=[1])
        write_voc_annotation(root / "Annotations" / f"{i}.xml", rec, ["thing"])
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "out"),
                "data": {"root": str(root), "test_split": "test", "classes": ["thing"]},
                "proposals": {"method": "edgeboxes", "workers": 0, "max_per_image": 500},
            }
        )
    )
    tool = _tool()
    out = tmp_path / "props.npz"
    assert (
        run_tool(
            tool.main, ["compute", "--config", str(cfg), "--split", "test", "--out", str(out), "proposals.max_side=200"]
        )
        == 0
    )
    assert ProposalStore(out).ids == ids
    assert (
        run_tool(
            tool.main,
            [
                "recall",
                "--proposals",
                str(out),
                "--config",
                str(cfg),
                "--split",
                "test",
                "--out",
                str(tmp_path / "rec"),
                "--nums",
                "10,100,500",
            ],
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "R@0.5" in text and "AR" in text
    rec = json.loads((tmp_path / "rec" / "recall.json").read_text())
    assert rec["num_gt"] == 2 and set(rec["by_num"]) == {"10", "100", "500"}
    assert (tmp_path / "rec" / "recall.png").is_file()
    # --images: a folder of images, ids from the file stems
    out2 = tmp_path / "imgs.npz"
    assert (
        run_tool(
            tool.main,
            [
                "compute",
                "--images",
                str(root / "JPEGImages"),
                "--method",
                "edgeboxes",
                "--out",
                str(out2),
                "--workers",
                "0",
                "--max-per-image",
                "50",
            ],
        )
        == 0
    )
    s2 = ProposalStore(out2)
    assert s2.ids == ids and all(0 < len(s2.boxes(i)) <= 50 for i in ids)
    assert run_tool(tool.main, ["compute", "--images", str(tmp_path / "nothing*.jpg"), "--out", str(out2)]) == 2
