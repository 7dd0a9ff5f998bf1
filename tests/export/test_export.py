"""tools/export.py end to end: the ONNX file (run by onnxruntime) and the TorchScript file give
the Python inference path's detections (sppdet.engine.infer.Predictor, which tools/detect.py and
the Detector API call) on real photos with their real Selective Search proposals."""

import numpy as np
import pytest
import torch
from reliability_kit import assert_clean_success, assert_user_error, run_in_process

from sppdet.config import load_config
from sppdet.engine.checkpoint import save_checkpoint
from sppdet.engine.infer import Predictor, load_predictor
from sppdet.errors import ConfigError
from sppdet.export import build_exportable

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")

BASE = [
    "model.backbone=tiny",
    "model.tiny_width=8",
    "model.frozen_bn=false",
    "model.dropout=0.0",
    "model.fc_dims=[64, 64]",
    "model.spp_levels=[6, 3, 2, 1]",
    "test.score_thresh=0.2",
    "test.max_detections=300",
]


def _checkpoint(path, extra=()):
    """A random-weight model whose boxes move and whose scores spread, saved as a checkpoint."""
    cfg = load_config(None, BASE + list(extra))
    from sppdet.modeling.detector import build_detector

    torch.manual_seed(0)
    model = build_detector(cfg, 3).eval()
    with torch.no_grad():
        model.head.bbox_pred.bias.uniform_(-0.5, 0.5)
        model.head.cls_score.weight.normal_(0, 0.3)
    save_checkpoint(path, model=model, cfg=cfg, class_names=["a", "b", "c"])
    return path


def _photos(shared_data):
    from sppdet.data.image_io import read_image
    from sppdet.proposals.io import load_proposals

    folder = shared_data("voc07-demo")
    for name in ("000004", "001551"):
        yield read_image(folder / f"{name}.jpg"), load_proposals(folder / f"{name}_boxes.mat")[name][0]


def assert_same_detections(ref, boxes, scores, labels):
    """One-to-one: every reference detection has an exported one with the same label, box within
    1e-2 px and score within 1e-4 (greedy in score order; equal scores may come in either order)."""
    assert len(scores) == len(ref.scores) > 0
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and labels.dtype == np.int64
    free = np.ones(len(scores), bool)
    for b, s, lab in zip(ref.boxes, ref.scores, ref.labels):
        ok = free & (labels == lab) & (np.abs(boxes - b).max(1) <= 1e-2) & (np.abs(scores - s) <= 1e-4)
        assert ok.any(), f"no exported detection matches {b} {s} {lab}"
        free[np.argmax(ok)] = False
    np.testing.assert_array_equal(np.sort(scores)[::-1], scores)  # sorted by score, as the Python path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    weights = _checkpoint(base / "model.pth", ["input.test_scales=[400]"])
    return weights, base


def test_onnx_and_torchscript_equal_the_python_path(exported, shared_data, capsys):
    weights, base = exported
    for fmt, name in (("onnx", "model.onnx"), ("torchscript", "model.pt")):
        code, out, err = run_in_process("export", ["--weights", weights, "--format", fmt, "--out", base / name], capsys)
        assert_clean_success(code, err)
        assert (base / name).stat().st_size > 0
    onnx = pytest.importorskip("onnx")
    onnx.checker.check_model(str(base / "model.onnx"))
    predictor = load_predictor(str(weights), device="cpu")
    sess = ort.InferenceSession(str(base / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image", "proposals"]
    assert [o.name for o in sess.get_outputs()] == ["boxes", "scores", "labels"]
    script = torch.jit.load(str(base / "model.pt"))
    for image, props in _photos(shared_data):  # 406x500 and 375x500 with 2,888 / 2,057 windows
        ref = predictor.predict(image, props)
        assert_same_detections(ref, *sess.run(None, {"image": image, "proposals": props}))
        with torch.no_grad():
            out = script(torch.from_numpy(image), torch.from_numpy(props))
        assert_same_detections(ref, *(t.numpy() for t in out))


def test_onnx_proposals_outside_or_empty(exported, shared_data):
    """Windows outside the image, empty, NaN or none at all: dropped as the Python path drops them;
    images smaller than one feature cell."""
    weights, base = exported
    if not (base / "model.onnx").exists():
        pytest.skip("needs the file of test_onnx_and_torchscript_equal_the_python_path")
    sess = ort.InferenceSession(str(base / "model.onnx"), providers=["CPUExecutionProvider"])
    image, props = next(_photos(shared_data))
    odd = np.array([[-50, -50, -10, -10], [600, 10, 700, 90], [30, 30, 30, 80], [np.nan, 1, 50, 50]], np.float32)
    mixed = np.concatenate([props[:300], odd])
    ref = load_predictor(str(weights), device="cpu").predict(image, mixed)
    assert_same_detections(ref, *sess.run(None, {"image": image, "proposals": mixed}))
    for tiny, boxes in (((9, 7), [[0, 0, 7, 9], [1, 1, 5, 6]]), ((300, 2), [[0, 0, 2, 300], [0, 10, 1, 100]])):
        crop, windows = image[: tiny[0], : tiny[1]].copy(), np.array(boxes, np.float32)  # smaller than a cell
        ref = load_predictor(str(weights), device="cpu").predict(crop, windows)
        assert_same_detections(ref, *sess.run(None, {"image": crop, "proposals": windows}))
    for none in (np.zeros((0, 4), np.float32), odd[:3]):
        boxes, scores, labels = sess.run(None, {"image": image, "proposals": none})
        assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)


@pytest.mark.slow
def test_multi_scale_and_flip_export(tmp_path, shared_data):
    """Three test scales (each window pooled at its best scale), test.flip and a truncated-SVD
    fc6, in both formats."""
    from sppdet.export import export_model

    weights = _checkpoint(
        tmp_path / "ms.pth", ["input.test_scales=[200, 320, 480]", "test.flip=true", "test.svd_rank_fc6=16"]
    )
    export_model(weights, "onnx", tmp_path / "ms.onnx")
    export_model(weights, "torchscript", tmp_path / "ms.pt")
    predictor = load_predictor(str(weights), device="cpu")
    sess = ort.InferenceSession(str(tmp_path / "ms.onnx"), providers=["CPUExecutionProvider"])
    script = torch.jit.load(str(tmp_path / "ms.pt"))
    image, props = list(_photos(shared_data))[1]
    ref = predictor.predict(image, props)
    assert_same_detections(ref, *sess.run(None, {"image": image, "proposals": props}))
    with torch.no_grad():
        assert_same_detections(ref, *(t.numpy() for t in script(torch.from_numpy(image), torch.from_numpy(props))))


def test_bad_inputs_give_one_line(exported, tmp_path, capsys):
    weights, _ = exported
    out = tmp_path / "m.onnx"
    code, _, err = run_in_process(
        "export", ["--weights", tmp_path / "nope.pth", "--format", "onnx", "--out", out], capsys
    )
    assert_user_error(code, err, "nope.pth", "not found")
    code, _, err = run_in_process("export", ["--weights", weights, "--format", "tflite", "--out", out], capsys)
    assert_user_error(code, err, "--format", "tflite")
    argv = ["--weights", weights, "--format", "onnx", "--out", out, "model.spp_mode=avg"]
    code, _, err = run_in_process("export", argv, capsys)
    assert_user_error(code, err, "model.spp_mode")
    assert not out.exists()


def test_unexportable_configs_are_refused(exported):
    weights, _ = exported
    p = load_predictor(str(weights), device="cpu")
    with pytest.raises(ConfigError, match="train.paper.scorer"):
        build_exportable(Predictor(p.model, p.cfg, p.class_names, "cpu", scorer=object()))
    cfg = load_config(None, BASE + ["model.spp_levels=[7, 2, 1]"])
    from sppdet.modeling.detector import build_detector

    with pytest.raises(ConfigError, match=r"model.spp_levels: level\(s\) \[7\]"):
        build_exportable(Predictor(build_detector(cfg, 3).eval(), cfg, ["a", "b", "c"]))
