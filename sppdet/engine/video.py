"""Detect objects in a video file or a camera: frames -> detector -> annotated video + json.

``run_video(detector, "clip.mp4", out, every=N)`` reads the frames with OpenCV (any file
it decodes, or ``cam:K`` for camera ``K``), runs the detector on every ``N``-th frame (its own
proposals) and writes into ``out``:

* ``clip.json``: the sppdet detections json with a ``video`` header (source, fps, frame count,
  ``every``) and one entry per processed frame: ``image_id`` ``clip_<frame>``, ``frame`` (index
  from 0), ``time`` (seconds), ``width``, ``height``, ``detections``. It is written as it goes
  (:class:`~sppdet.evaluation.writer.DetectionsWriter`: journal per frame, the json refreshed
  atomically every :data:`~sppdet.engine.detect.REFRESH_SECONDS`);
* ``clip.mp4`` (``--no-draw``: none): every frame, with the latest processed frame's
  detections drawn, at the input's frame rate. It is encoded into ``.clip.partial.mp4`` and
  renamed at the end, so a ``clip.mp4`` that exists is complete.

``resume=True`` after a crash or ``kill -9``: frames already in the journal are not run through
the model again (their detections are redrawn from the journal); the video is re-encoded
from the start, which costs a small fraction of detection time. Memory is flat in the length
of the video: one frame and its detections at a time (resuming also holds the done frames'
detections, a few hundred bytes each).

A camera runs until it stops delivering frames or Ctrl-C, which ends the run normally.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import SppdetError
from ..evaluation.writer import DetectionsWriter
from ..fileio import make_output_dir
from . import detect as det_mod
from .detect import DetectorLike, DetectSummary, annotate, output_names

log = logging.getLogger("sppdet.video")

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"}
CAMERA = re.compile(r"^cam:(\d+)$")
#: Frame rate assumed when a file or camera reports none.
DEFAULT_FPS = 30.0


def is_video_input(inputs: Sequence[str]) -> bool:
    """True when an input names a video file (by extension) or a camera (``cam:K``)."""
    return any(CAMERA.match(str(p)) or Path(str(p)).suffix.lower() in VIDEO_EXTENSIONS for p in inputs)


def open_video(spec: str) -> Tuple[cv2.VideoCapture, str, float, Optional[int], bool]:
    """``(capture, output name, fps, frame count or None, is_camera)`` for a file or ``cam:K``."""
    m = CAMERA.match(spec)
    if m:
        cap = cv2.VideoCapture(int(m.group(1)))
        if not cap.isOpened():
            raise SppdetError(f"--input {spec}: camera {m.group(1)} cannot be opened")
        name, camera = f"cam{m.group(1)}", True
    else:
        path = Path(spec)
        if not path.exists():
            raise SppdetError(f"--input {spec}: no such file")
        if not path.is_file():
            raise SppdetError(f"--input {spec}: not a file")
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise SppdetError(f"--input {spec}: OpenCV cannot read this file as a video")
        name, camera = output_names([path])[0], False
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not 0.0 < fps <= 1000.0:
        log.warning("%s: no valid frame rate (%s); assuming %g fps", spec, fps, DEFAULT_FPS)
        fps = DEFAULT_FPS
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return cap, name, fps, (count if count > 0 and not camera else None), camera


def run_video(
    detector: DetectorLike,
    spec: str,
    output_dir: str,
    every: int = 1,
    draw: bool = True,
    resume: bool = False,
    codec: str = "mp4v",
) -> DetectSummary:
    """Detect on every ``every``-th frame of the video file or camera ``spec`` (see the module notes)."""
    if every < 1:
        raise SppdetError(f"--every {every}: must be 1 or more")
    out = make_output_dir(output_dir, "--output")
    cap, name, fps, total, camera = open_video(spec)
    if camera and resume:
        raise SppdetError("--resume: a camera cannot be resumed")
    video_path = out / f"{name}.mp4"
    if not camera and video_path.resolve() == Path(spec).resolve():
        raise SppdetError(
            f"--output {out}: the annotated video would overwrite the input {spec}; choose another folder"
        )
    header = {"video": {"source": spec, "fps": fps, "frames": total, "every": every}}
    writer = DetectionsWriter(
        out / f"{name}.json", detector.class_names, header=header, refresh_seconds=det_mod.REFRESH_SECONDS
    )
    done: Dict[int, Dict] = {}
    for e in writer.reset(resume):
        if not isinstance(e.get("frame"), int):
            raise SppdetError(f"{writer.path}: entry '{e.get('image_id')}' has no frame index; cannot resume a video")
        done[e["frame"]] = e
    last_done = max(done, default=-1)
    if done:
        log.info("resuming: %d processed frames up to frame %d already done", len(done), last_done)
    summary = DetectSummary(done_before=len(done))
    tmp = out / f".{name}.partial.mp4"
    vw: Optional[cv2.VideoWriter] = None
    bar = tqdm(total=total, desc="detect", unit="frame", mininterval=1.0)
    t_start = time.time()
    current = None  # detections drawn on the frames until the next processed one
    i = -1
    try:
        while True:
            i += 1
            selected = i % every == 0
            needs_pixels = draw or (selected and i > last_done)
            try:
                ok, frame = cap.read() if needs_pixels else (cap.grab(), None)
            except KeyboardInterrupt:
                if not camera:
                    raise
                break  # Ctrl-C ends a camera run normally
            if not ok:
                break
            if selected and i <= last_done:
                current = _from_journal(done.get(i))
            elif selected:
                assert frame is not None
                rgb = np.ascontiguousarray(frame[:, :, ::-1])
                current = detector.batch([rgb])[0]
                t = (time.time() - t_start) if camera else i / fps
                writer.process(f"{name}_{i:06d}", current, None, rgb.shape[1], rgb.shape[0], frame=i, time=round(t, 3))
                summary.images += 1
                summary.detections += len(current)
            if draw:
                assert frame is not None
                if vw is None:
                    vw = _video_writer(tmp, codec, fps, frame.shape[1], frame.shape[0])
                vis = (
                    frame if current is None else annotate(frame[:, :, ::-1], current, detector.class_names)[:, :, ::-1]
                )
                vw.write(np.ascontiguousarray(vis))
            bar.update(1)
        bar.close()
        if i == 0 and not done:
            raise SppdetError(f"--input {spec}: no frame could be decoded (not a video, or an empty one)")
        summary.seconds = time.time() - t_start
        writer.finish()
        if vw is not None:
            vw.release()
            vw = None
            os.replace(tmp, video_path)
    finally:
        cap.release()
        writer.close()
        if vw is not None:
            vw.release()
    log.info("%s: %d frames read, %d processed now", spec, i, summary.images)
    return summary


def _video_writer(path: Path, codec: str, fps: float, width: int, height: int) -> cv2.VideoWriter:
    path.unlink(missing_ok=True)  # a leftover, or a planted symlink: never written through
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*codec), fps, (width, height))
    if not vw.isOpened():
        raise SppdetError(f"{path}: OpenCV cannot write a '{codec}' video here")
    return vw


class _Journalled:
    """A journal entry seen as detections (boxes, scores, labels arrays)."""

    def __init__(self, e: Dict) -> None:
        self.boxes = np.asarray(e["boxes"], dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(e["scores"], dtype=np.float32)
        self.labels = np.asarray(e["labels"], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.boxes)


def _from_journal(e: Optional[Dict]) -> Optional[_Journalled]:
    return None if e is None else _Journalled(e)
