"""tools/detect.py's engine and the streaming writer: the writer's files equal the in-memory writers,
it resumes from a torn journal, a folder of many images is handled with bounded work per image, a
real kill -9 leaves valid files that --resume completes, tools/eval.py streams through the same
writer, and output names are unique and safe."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from reliability_kit import run_in_process  # tests/ (on sys.path via conftest.py)

from sppdet.data.dataset import DetectionDataset, ImageRecord
from sppdet.evaluation.detections import (
    ImageDetections,
    load_sppdet_detections,
    save_coco_results,
    save_comp4,
    save_detections,
)
from sppdet.evaluation.writer import DetectionsWriter


def _random_detections(rng, n_images, classes, numeric_ids):
    out = {}
    for i in range(n_images):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 200, (n, 2)).astype(np.float32)
        wh = rng.uniform(0.001, 80, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + wh], 1)
        image_id = f"{i * 7:06d}" if numeric_ids else f"img_{i}"
        out[image_id] = ImageDetections(
            boxes, rng.uniform(0, 1, n).astype(np.float32), rng.integers(1, len(classes) + 1, n).astype(np.int64)
        )
    return out


@pytest.mark.parametrize("numeric_ids", [True, False])
def test_streamed_files_equal_the_in_memory_writers(tmp_path, numeric_ids):
    classes = ["cat", "dog", "traffic light"]
    dets = _random_detections(np.random.default_rng(3), 9, classes, numeric_ids)
    records = [ImageRecord(i, f"/data/{i}.jpg", 320 + k, 240 - k) for k, i in enumerate(dets)]
    dataset = DetectionDataset(records, classes, name="detect")
    (tmp_path / "a").mkdir()
    writer = DetectionsWriter(
        tmp_path / "a" / "detections.json",
        classes,
        coco_path=tmp_path / "a" / "coco.json",
        comp4_dir=tmp_path / "a" / "comp4",
    )
    assert writer.reset() == []
    for rec in records:
        writer.process(rec.image_id, dets[rec.image_id], rec.file_name, rec.width, rec.height)
    writer.finish()
    assert not (tmp_path / "a" / ".detections.partial.jsonl").exists()

    save_detections(dets, tmp_path / "detections.json", dataset)
    save_coco_results(dets, tmp_path / "coco.json", dataset)
    save_comp4(dets, tmp_path / "comp4", dataset, split="detect")
    for name in ("detections.json", "coco.json"):
        assert json.loads((tmp_path / "a" / name).read_text()) == json.loads((tmp_path / name).read_text()), name
    for f in sorted((tmp_path / "comp4").iterdir()):
        assert (tmp_path / "a" / "comp4" / f.name).read_text() == f.read_text(), f.name
    back = load_sppdet_detections(tmp_path / "a" / "detections.json", dataset)
    assert set(back) <= set(dets)


def test_writer_resumes_from_a_torn_journal_and_from_a_finished_file(tmp_path):
    classes = ["cat", "dog"]
    dets = _random_detections(np.random.default_rng(5), 6, classes, False)
    ids = list(dets)
    writer = DetectionsWriter(tmp_path / "d.json", classes)
    writer.reset()
    for i in ids[:4]:
        writer.process(i, dets[i], f"{i}.jpg", 100, 80)
    writer.close()
    with open(writer.journal, "ab") as f:  # a crash in the middle of a line (power cut)
        f.write(b'{"image_id": "img_4", "boxes": [[1.0, 2')
    again = DetectionsWriter(tmp_path / "d.json", classes)
    assert [e["image_id"] for e in again.reset(resume=True)] == ids[:4]
    for i in ids[4:]:
        again.process(i, dets[i], f"{i}.jpg", 100, 80)
    again.finish()
    data = json.loads((tmp_path / "d.json").read_text())
    assert [e["image_id"] for e in data["images"]] == ids
    fresh = DetectionsWriter(tmp_path / "fresh.json", classes)
    fresh.reset()
    for i in ids:
        fresh.process(i, dets[i], f"{i}.jpg", 100, 80)
    fresh.finish()
    assert data == json.loads((tmp_path / "fresh.json").read_text())
    # a finished run (no journal): resuming reads the json back, values unchanged by a rewrite
    third = DetectionsWriter(tmp_path / "d.json", classes)
    assert len(third.reset(resume=True)) == 6
    third.finish()
    assert json.loads((tmp_path / "d.json").read_text()) == data


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return tiny_checkpoint


def test_folder_of_50_images_streams_results(model, tmp_path, capsys, monkeypatch):
    import sppdet.engine.detect as detect_mod

    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(50):
        img = np.clip(rng.normal(rng.integers(40, 200), 25, (64, 64, 3)), 0, 255).astype(np.uint8)
        cv2.rectangle(img, (10, 12), (40, 50), (250, 250, 250), -1)
        cv2.imwrite(str(folder / f"im{i:02d}.jpg"), img)
    writes = []
    real = DetectionsWriter.write

    def counting(self):
        writes.append(sum(1 for _ in self.entries()))  # images in the file at that moment
        real(self)

    monkeypatch.setattr(DetectionsWriter, "write", counting)
    monkeypatch.setattr(detect_mod, "REFRESH_SECONDS", 0.0)  # refresh after every batch here
    out = tmp_path / "out"
    code, stdout, err = run_in_process(
        "detect",
        [
            "--weights",
            model,
            "--input",
            folder,
            "--output",
            out,
            "--batch",
            "4",
            "--no-draw",
            "--score-thresh",
            "0",
            "--coco-json",
            "--voc-comp4",
        ],
        capsys,
    )
    assert code == 0, err
    assert "50 images" in stdout
    data = json.loads((out / "detections.json").read_text())
    assert [e["image_id"] for e in data["images"]] == [f"im{i:02d}" for i in range(50)]
    assert writes == sorted(writes) and writes[-1] == 50 and len(writes) >= 13  # refreshed while running
    assert json.loads((out / "detections_coco.json").read_text()) is not None
    assert len(list((out / "comp4").glob("comp4_det_detect_*.txt"))) == 5
    assert not (out / ".detections.partial.jsonl").exists()

    writes.clear()
    monkeypatch.setattr(detect_mod, "REFRESH_SECONDS", 3600.0)
    code, _, err = run_in_process(
        "detect", ["--weights", model, "--input", folder, "--output", tmp_path / "o2", "--no-draw"], capsys
    )
    assert code == 0, err
    assert writes == [50]  # written once at the end, not after every image


def test_output_names_unique_and_bounded():
    from sppdet.engine.detect import MAX_NAME, output_names

    files = [Path(f"d{k}/image.jpg") for k in range(300)] + [Path("image_5.png"), Path("IMAGE.jpg")]
    names = output_names(files)
    assert len({n.lower() for n in names}) == len(names) == 302
    assert names[:3] == ["image", "image_1", "image_2"] and names[300] == "image_5_1"
    long = output_names([Path("é" * 300 + ".jpg"), Path("q" * 300 + ".jpg")])
    assert all(len(n) <= MAX_NAME + 9 for n in long)


@pytest.mark.slow
def test_kill_9_leaves_valid_output_and_resume_completes_it(model, tmp_path, capsys):
    """A real ``kill -9`` in the middle of a run: the journal holds only whole lines, nothing under a
    final name is half-written, and ``--resume`` finishes with the files an uninterrupted run writes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from reliability_kit import TOOLS, child_env

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(40):
        img = np.clip(rng.normal(rng.integers(40, 200), 25, (48, 64, 3)), 0, 255).astype(np.uint8)
        cv2.rectangle(img, (8, 8), (30 + i % 20, 40), (250, 250, 250), -1)
        cv2.imwrite(str(folder / f"im{i:02d}.png"), img)
    argv = ["--weights", model, "--input", folder, "--device", "cpu", "--score-thresh", "0", "--coco-json"]
    out = tmp_path / "out"
    journal = out / ".detections.partial.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(TOOLS / "detect.py"), *map(str, argv), "--output", str(out)],
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if journal.is_file() and journal.read_bytes().count(b"\n") >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    raw = journal.read_bytes()
    assert raw.endswith(b"\n")  # one write() per line: a kill never leaves half a line
    done = [json.loads(line) for line in raw.splitlines()]
    assert 5 <= len(done) < 40
    assert all((out / f"{e['image_id']}.jpg").is_file() for e in done)  # drawn before journalled
    for name in ("detections.json", "detections_coco.json"):  # refreshed atomically: valid when present
        assert not (out / name).exists() or json.loads((out / name).read_text()) is not None

    code, stdout, err = run_in_process("detect", [*argv, "--output", out, "--resume"], capsys)
    assert code == 0, err
    assert f"{40 - len(done)} images ({len(done)} done before)" in stdout
    code, _, err = run_in_process("detect", [*argv, "--output", tmp_path / "ref"], capsys)
    assert code == 0, err
    for name in ("detections.json", "detections_coco.json"):
        assert json.loads((out / name).read_text()) == json.loads((tmp_path / "ref" / name).read_text()), name
    assert not journal.exists() and not list(out.glob(".*.tmp"))


@pytest.mark.slow  # runs the model twice and writes the HTML report
def test_eval_tool_streams_the_models_detections_through_the_writer(model, tmp_path, capsys, monkeypatch):
    """tools/eval.py --weights --out writes detections.json with the streaming writer, one image
    at a time as it is detected: the same content as the in-memory writer gives afterwards."""
    from sppdet.config import load_config
    from sppdet.data.build import build_dataset
    from sppdet.engine.infer import run_on_dataset

    config = model.parent / "config.yaml"
    seen = []
    real = DetectionsWriter.process

    def spying(self, image_id, *args, **kwargs):
        seen.append((image_id, self.journal.read_bytes().count(b"\n")))  # lines already on disk
        real(self, image_id, *args, **kwargs)

    monkeypatch.setattr(DetectionsWriter, "process", spying)
    code, stdout, err = run_in_process(
        "eval", ["--weights", model, "--config", config, "--out", tmp_path / "ev", "--device", "cpu"], capsys
    )
    assert code == 0, err
    dataset = build_dataset(load_config(str(config)), "test")
    assert seen == [(image_id, k) for k, image_id in enumerate(dataset.ids)]
    monkeypatch.setattr(DetectionsWriter, "process", real)
    save_detections(run_on_dataset(str(model), dataset, device="cpu"), tmp_path / "ref.json", dataset)
    assert json.loads((tmp_path / "ev" / "detections.json").read_text()) == json.loads(
        (tmp_path / "ref.json").read_text()
    )
    assert not list((tmp_path / "ev").glob(".*.jsonl"))
