"""The library API (``sppdet.Detector``) on real photos: the same detections as ``tools/detect.py``
writes for them, with computed and with given (real Selective Search) proposals; one-line errors
for bad images and proposals; ``test.amp`` ignored with a warning on CPU (checked on CUDA when
there is one)."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
from reliability_kit import REPO_ROOT, child_env, run_in_process

from sppdet.errors import ConfigError, SppdetError
from sppdet.proposals.io import load_proposals

#: Keep every real Selective Search box (the tiny config keeps 100).
ALL_BOXES = "proposals.max_per_image=5000"


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def det(model):
    from sppdet import Detector

    return Detector.from_checkpoint(model, device="cpu", score_thresh=0.0, overrides=[ALL_BOXES])


def _tool_json(model, capsys, out, *args):
    argv = ["--weights", model, "--output", out, "--device", "cpu", "--score-thresh", "0", "--no-draw", *args]
    code, _, err = run_in_process("detect", [ALL_BOXES, *argv], capsys)  # --input takes what follows
    assert code == 0, err
    return {e["image_id"]: e for e in json.loads((out / "detections.json").read_text())["images"]}


def test_detector_equals_the_detect_tool_on_real_photos(det, model, capsys, tmp_path, shared_data):
    demo = shared_data("voc07-demo")
    photos = [demo / "000004.jpg", demo / "001551.jpg"]
    tool = _tool_json(model, capsys, tmp_path / "computed", "--input", *photos)
    for photo in photos:
        r = det(str(photo))  # a path; EdgeBoxes proposals computed inside
        entry = tool[photo.stem]
        assert r.to_dict() == {k: entry[k] for k in ("width", "height", "detections")}
        assert len(r) > 0 and r.boxes.shape == (len(r), 4) and r.boxes.dtype == np.float32
        assert set(r.labels.tolist()) <= set(range(1, len(r.class_names) + 1))
        assert r.classes == [d["class"] for d in entry["detections"]]
    # the real Selective Search boxes of the R-CNN demo, given to det() and to --proposals
    for photo in photos:
        mat = demo / f"{photo.stem}_boxes.mat"
        tool = _tool_json(model, capsys, tmp_path / photo.stem, "--input", photo, "--proposals", mat)
        boxes = load_proposals(mat)[photo.stem][0]
        image = np.ascontiguousarray(__import__("cv2").imread(str(photo))[:, :, ::-1])  # RGB array input
        r = det(image, proposals=boxes)
        assert r.num_proposals == len(boxes) > 2000
        assert r.to_dict()["detections"] == tool[photo.stem]["detections"]


def test_batch_equals_the_tool_with_batch(det, model, capsys, tmp_path, shared_data):
    demo = shared_data("voc07-demo")
    photos = [demo / "000004.jpg", demo / "001551.jpg"]
    tool = _tool_json(model, capsys, tmp_path / "b", "--input", *photos, "--batch", "2")
    rs = det.batch([str(p) for p in photos])
    assert [r.image_size for r in rs] == [(406, 500), (375, 500)]
    assert [r.to_dict()["detections"] for r in rs] == [tool[p.stem]["detections"] for p in photos]
    assert det.batch([]) == []


def test_bad_inputs_give_one_line(det, tmp_path):
    from sppdet import Detector

    img = np.zeros((40, 50, 3), np.uint8)
    cases = [
        (lambda: det(str(tmp_path / "nope.jpg")), "nope.jpg"),
        (lambda: det(img.astype(np.float32)), "uint8"),
        (lambda: det(img[:, :, 0]), "H x W x 3"),
        (lambda: det(img, proposals=np.zeros((5, 3))), "shape (5, 3)"),
        (lambda: det(img, proposals=np.zeros(7)), "shape (7,)"),
        (lambda: det(img, proposals="boxes"), "(P, 4)"),
        (lambda: det.batch([img, img], proposals=[np.zeros((1, 4))]), "1 arrays for 2 images"),
        (lambda: Detector(det.predictor, proposals=None)(img), "proposals=None"),
        (lambda: Detector(det.predictor, proposals="magic"), "unknown method 'magic'"),
    ]
    for call, needle in cases:
        with pytest.raises(SppdetError) as e:
            call()
        assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)
    # no proposals at all, or only unusable ones (dropped as in proposal files), is a valid empty answer
    given = Detector(det.predictor, proposals=None)
    for boxes in (np.zeros((0, 4), np.float32), np.array([[0, 0, np.nan, 4], [np.inf, 1, 2, 3], [5, 5, 5, 9]])):
        r = given(img, proposals=boxes)
        assert len(r) == 0 and r.num_proposals == len(boxes)
        assert r.to_dict() == {"width": 50, "height": 40, "detections": []}


def test_importing_the_package_stays_light():
    code = "import sys, sppdet; assert 'torch' not in sys.modules and 'sppdet.api' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    import sppdet
    from sppdet.api import DetectionResult, Detector

    assert sppdet.Detector is Detector and sppdet.DetectionResult is DetectionResult
    with pytest.raises(AttributeError, match="no attribute 'Detectr'"):
        sppdet.Detectr  # noqa: B018


def test_amp_is_ignored_with_a_warning_on_cpu(model, det, caplog, shared_data):
    from sppdet import Detector

    photo = shared_data("voc07-demo", "000004.jpg")
    with caplog.at_level(logging.WARNING, logger="sppdet.infer"):
        amp = Detector.from_checkpoint(model, device="cpu", score_thresh=0.0, overrides=[ALL_BOXES, "test.amp=bf16"])
    assert any("test.amp=bf16 applies on CUDA only" in r.getMessage() for r in caplog.records)
    assert amp(str(photo)).to_dict() == det(str(photo)).to_dict()
    with pytest.raises(ConfigError, match="'test.amp' must be one of off, bf16, fp16, got 'fp8'"):
        Detector.from_checkpoint(model, device="cpu", overrides=["test.amp=fp8"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cuda_is_close_to_float32(model, amp, shared_data):
    from sppdet import Detector

    photo = str(shared_data("voc07-demo", "000004.jpg"))
    boxes = load_proposals(shared_data("voc07-demo", "000004_boxes.mat"))["000004"][0]
    ref = Detector.from_checkpoint(model, device="cuda", score_thresh=0.0, overrides=[ALL_BOXES])
    low = Detector.from_checkpoint(model, device="cuda", score_thresh=0.0, overrides=[ALL_BOXES, f"test.amp={amp}"])
    assert low.predictor.amp_dtype is not None
    a, b = ref(photo, proposals=boxes), low(photo, proposals=boxes)
    # the top detections survive mixed precision: same classes, boxes within a pixel, scores within 2e-2
    k = min(10, len(a), len(b))
    assert k > 0 and b.scores.dtype == np.float32
    assert np.abs(a.scores[:k] - b.scores[:k]).max() < 2e-2
    top = [(lab, tuple(np.round(box))) for lab, box in zip(a.labels[:k].tolist(), a.boxes[:k])]
    hits = sum(
        any(lab == lb and np.abs(np.array(box) - bb).max() <= 1.0 for lb, bb in zip(b.labels.tolist(), b.boxes))
        for lab, box in top
    )
    assert hits >= k - 1
