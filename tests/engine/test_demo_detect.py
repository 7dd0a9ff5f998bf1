"""The quick-start demo in reduced form, and tools/detect.py run as a user would on real photos."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from voc_reference import devkit_ap, parse_voc_boxes

REPO_ROOT = Path(__file__).resolve().parents[2]

TINY = [
    "model.tiny_width=8",
    "model.fc_dims=[64, 64]",
    "model.spp_levels=[2, 1]",
    "input.train_scales=[160]",
    "input.test_scales=[160]",
    "input.max_size=320",
    "train.max_iter=6",
    "train.warmup_iters=2",
    "train.lr_steps=[4]",
    "train.checkpoint_period=0",
    "train.workers=0",
    "train.rois_per_image=16",
    "proposals.max_per_image=200",
    "proposals.workers=0",
    "device=cpu",
]


def _run(args, cwd, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def _demo_args(data: Path, out: Path) -> list:
    """tools/demo.py on a small sample set (8 train, 4 test images) with the tiny overrides."""
    return [
        str(REPO_ROOT / "tools" / "demo.py"),
        "--config",
        str(REPO_ROOT / "configs" / "sample_tiny.yaml"),
        "--data",
        str(data),
        "--num-train",
        "8",
        "--num-test",
        "4",
        f"output_dir={out}",
        *TINY,
    ]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    out = tmp / "out"
    r = _run(_demo_args(tmp / "sample", out), cwd=tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp, out, r


@pytest.mark.slow  # 36 s measured (load 13-19 on 2 cores)
def test_demo_runs_every_step(demo_run):
    tmp, out, r = demo_run
    assert "sample-set VOC07 mAP:" in r.stdout
    assert (out / "model_final.pth").is_file()
    assert (out / "eval" / "report.html").is_file()
    drawn = sorted((out / "detect").glob("*.jpg"))
    assert len(drawn) == 4  # the 4 test images
    dets = json.loads((out / "detect" / "detections.json").read_text())
    assert dets["format"] == "sppdet-detections" and len(dets["images"]) == 4


@pytest.mark.slow  # needs the demo run (the module fixture, ~35 s measured under load ~19)
def test_demo_map_is_the_devkit_ap_of_its_detections(demo_run):
    """The mAP the demo reports equals VOC07 AP recomputed by the devkit transcription
    (tests/voc_reference.py) from the detections it wrote and the sample test annotations."""
    tmp, out, _ = demo_run
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    dets = json.loads((out / "eval" / "detections.json").read_text())
    voc = tmp / "sample" / "voc"
    ids = (voc / "ImageSets" / "Main" / "test.txt").read_text().split()
    raw = {i: parse_voc_boxes(voc / "Annotations" / f"{i}.xml") for i in ids}
    lines = {c: [] for c in dets["classes"]}
    for im in dets["images"]:
        for d in im["detections"]:
            x1, y1, x2, y2 = d["box"]  # ours -> devkit 1-based inclusive
            lines[d["class"]].append((im["image_id"], d["score"], [x1 + 1, y1 + 1, x2, y2]))
    with_gt = [c for c in dets["classes"] if any(o[0] == c and not o[2] for objs in raw.values() for o in objs)]
    ref = {c: devkit_ap(raw, lines[c], c, 0.5, use_07_metric=True) for c in with_gt}
    assert with_gt and sum(len(v) for v in lines.values()) > 0
    for c in with_gt:
        assert metrics["ap"][c] == pytest.approx(ref[c], abs=1e-6), c
    assert metrics["mAP"] == pytest.approx(sum(ref.values()) / len(ref), abs=1e-6)


@pytest.mark.slow  # 39 s measured (load 13-19 on 2 cores)
def test_demo_sets_aside_a_run_of_another_model(demo_run, tmp_path):
    """Re-running the demo after its config changed the model starts over; the old run is kept."""
    import shutil

    tmp, out, _ = demo_run
    mine = tmp_path / "out"
    shutil.copytree(out, mine)
    r = _run([*_demo_args(tmp / "sample", mine), "model.fc_dims=[32, 32]"], cwd=tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    aside = list(tmp_path.glob("out.old-*"))
    assert len(aside) == 1 and (aside[0] / "model_final.pth").is_file()
    assert "model.fc_dims=[64, 64] (the config says [32, 32])" in r.stderr
    assert "resumed from" not in r.stderr and (mine / "model_final.pth").is_file()


def _check_detections(path: Path, expect_images: int):
    data = json.loads(path.read_text())
    assert len(data["images"]) == expect_images
    for im in data["images"]:
        for d in im["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 < x2 <= im["width"] and 0 <= y1 < y2 <= im["height"]
            assert 0 <= d["score"] <= 1 and d["class"] in data["classes"]
    return data


@pytest.mark.slow  # 28 s measured (load 13-19 on 2 cores)
def test_detect_on_voc07_demo_with_real_proposal_files(demo_run, tmp_path, shared_data):
    _, out, _ = demo_run
    demo = shared_data("voc07-demo")
    # the two real fast-rcnn proposal files, one per image, matched by image id (file stem)
    props = tmp_path / "props"
    props.mkdir()
    for stem in ("000004", "001551"):
        (props / f"{stem}_boxes.mat").write_bytes((demo / f"{stem}_boxes.mat").read_bytes())
    r = _run(
        [
            str(REPO_ROOT / "tools" / "detect.py"),
            "--weights",
            str(out / "model_final.pth"),
            "--input",
            str(demo / "000004.jpg"),
            str(demo / "001551.jpg"),
            "--output",
            str(tmp_path / "det"),
            "--proposals",
            str(props),
            "--score-thresh",
            "0.0",
            "--coco-json",
            "--voc-comp4",
            "proposals.max_per_image=5000",
        ],
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    data = _check_detections(tmp_path / "det" / "detections.json", 2)
    assert {im["image_id"] for im in data["images"]} == {"000004", "001551"}
    for stem, (h, w) in (("000004", (406, 500)), ("001551", (375, 500))):
        img = cv2.imread(str(tmp_path / "det" / f"{stem}.jpg"))
        assert img is not None and img.shape[:2] == (h, w)
    assert json.loads((tmp_path / "det" / "detections_coco.json").read_text()) is not None
    assert any((tmp_path / "det" / "comp4").iterdir())
    # the real files' boxes were used (2888 and 2057 boxes; a few may be dropped as degenerate)
    assert "000004.jpg: " in r.stdout and " 2888 proposals" in r.stdout


@pytest.mark.slow  # 33 s measured (load 13-19 on 2 cores)
def test_detect_on_coco_mini_folder_with_edgeboxes(demo_run, tmp_path, shared_data):
    _, out, _ = demo_run
    images = sorted(shared_data("coco-mini", "train2017").glob("*.jpg"))[:3]
    folder = tmp_path / "in"
    folder.mkdir()
    for p in images:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    r = _run(
        [
            str(REPO_ROOT / "tools" / "detect.py"),
            "--weights",
            str(out / "model_final.pth"),
            "--input",
            str(folder),
            "--output",
            str(tmp_path / "det"),
            "--score-thresh",
            "0.0",
        ],
        cwd=tmp_path,
    )
    # the unreadable image is reported and skipped, the others are done, and the exit code says so
    assert r.returncode == 1
    assert "broken.jpg" in r.stderr and "Traceback" not in r.stderr
    _check_detections(tmp_path / "det" / "detections.json", 3)
    assert len(list((tmp_path / "det").glob("*.jpg"))) == 3
