"""tools/detect.py on a video: a short clip made with OpenCV's writer gives one json entry per
processed frame (``--every N``), the same detections as the Detector on the decoded frames, a
readable annotated video; an interrupted run resumes to the same result; bad inputs give one line."""

import json

import cv2
import numpy as np
import pytest
from reliability_kit import run_in_process

FPS, FRAMES, W, H = 10.0, 25, 96, 64


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 2.5 s clip: a white square moving right over a gray background."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (W, H))
    for i in range(FRAMES):
        img = np.full((H, W, 3), 60, np.uint8)
        cv2.rectangle(img, (5 + 2 * i, 10), (35 + 2 * i, 50), (250, 250, 250), -1)
        vw.write(img)
    vw.release()
    return path


def _frames(path):
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return out
        out.append(frame)


def _run(model, clip, out, capsys, *extra):
    argv = ["--weights", model, "--input", clip, "--output", out, "--device", "cpu", "--score-thresh", "0", *extra]
    return run_in_process("detect", argv, capsys)


def test_every_nth_frame_gives_one_entry_each_and_a_readable_video(model, clip, tmp_path, capsys):
    from sppdet import Detector

    code, stdout, err = _run(model, clip, tmp_path / "out", capsys, "--every", "3")
    assert code == 0, err
    assert "9 frames processed" in stdout
    data = json.loads((tmp_path / "out" / "clip.json").read_text())
    assert data["video"] == {"source": str(clip), "fps": FPS, "frames": FRAMES, "every": 3}
    frames = list(range(0, FRAMES, 3))
    assert [e["frame"] for e in data["images"]] == frames
    assert [e["time"] for e in data["images"]] == [round(f / FPS, 3) for f in frames]
    assert [e["image_id"] for e in data["images"]] == [f"clip_{f:06d}" for f in frames]
    assert all((e["width"], e["height"]) == (W, H) for e in data["images"])
    # the same detections as the library API on the decoded frames
    det = Detector.from_checkpoint(model, device="cpu", score_thresh=0.0)
    decoded = _frames(clip)
    for e in data["images"][:3]:
        r = det(np.ascontiguousarray(decoded[e["frame"]][:, :, ::-1]))
        assert r.to_dict()["detections"] == e["detections"]
    assert sum(len(e["detections"]) for e in data["images"]) > 0
    annotated = _frames(tmp_path / "out" / "clip.mp4")
    assert len(annotated) == FRAMES and annotated[0].shape == (H, W, 3)
    assert not np.array_equal(annotated[0], decoded[0])  # boxes were drawn
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.json", "clip.mp4"]


def test_interrupted_video_resumes_to_the_same_result(model, clip, tmp_path, capsys, monkeypatch):
    import sppdet.engine.detect as detect_mod
    from sppdet.api import Detector

    code, _, err = _run(model, clip, tmp_path / "ref", capsys, "--every", "2")
    assert code == 0, err
    monkeypatch.setattr(detect_mod, "REFRESH_SECONDS", 0.0)  # clip.json rewritten after every frame
    real, calls = Detector.batch, []

    def dies_after_4(self, images, proposals=None):
        calls.append(1)
        if len(calls) > 4:
            raise KeyboardInterrupt  # as if killed: nothing after this frame is written
        return real(self, images, proposals)

    monkeypatch.setattr(Detector, "batch", dies_after_4)
    code, _, _ = _run(model, clip, tmp_path / "out", capsys, "--every", "2")
    assert code == 130
    partial = json.loads((tmp_path / "out" / "clip.json").read_text())  # valid while interrupted
    assert [e["frame"] for e in partial["images"]] == [0, 2, 4, 6]
    assert not (tmp_path / "out" / "clip.mp4").exists()  # only complete videos get the final name
    monkeypatch.setattr(Detector, "batch", real)
    code, stdout, err = _run(model, clip, tmp_path / "out", capsys, "--every", "2", "--resume")
    assert code == 0, err
    assert "9 frames processed (4 done before)" in stdout
    ref = json.loads((tmp_path / "ref" / "clip.json").read_text())
    assert json.loads((tmp_path / "out" / "clip.json").read_text()) == ref
    assert len(_frames(tmp_path / "out" / "clip.mp4")) == FRAMES
    assert not any(p.name.startswith(".") for p in (tmp_path / "out").iterdir())


def test_bad_video_inputs_give_one_line(model, clip, tmp_path, capsys):
    (tmp_path / "notes.mp4").write_text("not a video\n")
    cases = [
        (["--input", tmp_path / "nope.mp4"], "nope.mp4: no such file"),
        (["--input", tmp_path / "notes.mp4"], "OpenCV cannot read this file as a video"),
        (["--input", clip, "--every", "0"], "--every 0: must be 1 or more"),
        (["--input", clip, clip.parent / "x.jpg"], "one video (or cam:K) at a time"),
        (["--input", clip, "--proposals", clip], "--proposals: applies to images"),
        (["--input", clip, "--output-same"], "would overwrite the input"),
    ]
    for args, needle in cases:
        out = clip.parent if "--output-same" in args else tmp_path / "o"
        args = [a for a in args if a != "--output-same"]
        argv = ["--weights", model, "--output", out, "--device", "cpu", *args]
        code, _, err = run_in_process("detect", argv, capsys)
        lines = [x for x in err.splitlines() if x.startswith("error:")]
        assert code == 2 and len(lines) == 1 and needle in lines[0], err
        assert "Traceback" not in err
