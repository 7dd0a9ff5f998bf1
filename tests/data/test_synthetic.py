"""The generated sample set: deterministic, complete-or-absent, readable by both readers alike."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sppdet.cli import run_tool
from sppdet.data import synthetic
from sppdet.data.coco import load_coco
from sppdet.data.image_io import read_image
from sppdet.data.synthetic import MANIFEST, SAMPLE_CLASSES, generate_sample_dataset
from sppdet.data.voc import load_voc
from sppdet.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(num_train=8, num_test=4, seed=5)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "sample"
    return out, generate_sample_dataset(out, **SMALL)


def _files(root: Path):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_info(sample):
    out, info = sample
    assert info["generated"] and info["num_train"] == 8 and info["num_test"] == 4
    assert info["class_names"] == list(SAMPLE_CLASSES) and len(SAMPLE_CLASSES) >= 4
    main = out / "voc" / "ImageSets" / "Main"
    assert (main / "train.txt").read_text().split() == [f"{i:06d}" for i in range(1, 9)]
    assert (main / "test.txt").read_text().split() == [f"{i:06d}" for i in range(9, 13)]
    assert (main / "trainval.txt").read_text() == (main / "train.txt").read_text()
    assert len(list((out / "voc" / "JPEGImages").glob("*.jpg"))) == 12
    assert Path(info["coco_train_ann"]).is_file() and Path(info["coco_test_ann"]).is_file()
    assert (out / MANIFEST).is_file()
    assert not list(out.parent.glob(".sample.*"))  # no temporary folders left behind


def test_same_seed_same_bytes_other_seed_differs(sample, tmp_path):
    out, _ = sample
    again = generate_sample_dataset(tmp_path / "again", **SMALL)
    assert again["generated"]
    assert _files(out) == _files(tmp_path / "again")
    other = generate_sample_dataset(tmp_path / "other", num_train=8, num_test=4, seed=6)
    assert other["generated"]
    a = (out / "voc/JPEGImages/000001.jpg").read_bytes()
    assert a != (tmp_path / "other/voc/JPEGImages/000001.jpg").read_bytes()


@pytest.mark.parametrize("split", ["train", "test"])
def test_voc_and_coco_readers_agree(sample, split):
    out, info = sample
    voc = load_voc(out / "voc", split, SAMPLE_CLASSES)
    coco = load_coco(info[f"coco_{split}_ann"], info["image_dir"])
    assert coco.class_names == voc.class_names and coco.category_ids == [1, 2, 3, 4, 5]
    assert len(voc) == len(coco) == (8 if split == "train" else 4)
    for v, c in zip(voc, coco):
        assert int(v.image_id) == c.coco_id
        assert Path(v.file_name) == Path(c.file_name)
        assert (v.width, v.height) == (c.width, c.height) == (320, 240)
        np.testing.assert_array_equal(v.boxes, c.boxes)
        np.testing.assert_array_equal(v.labels, c.labels)
        np.testing.assert_array_equal(v.difficult, c.iscrowd)  # difficult <-> iscrowd
    assert voc.meta["issues"]["dropped_boxes"] == coco.meta["issues"]["dropped_boxes"] == 0


def test_content_is_varied_and_boxes_valid(sample):
    out, _ = sample
    ds = load_voc(out / "voc", None, SAMPLE_CLASSES)
    counts = [r.num_objects for r in ds]
    assert min(counts) >= 1 and max(counts) <= 6 and sum(counts) >= 2 * len(ds)
    boxes = np.concatenate([r.boxes for r in ds])
    labels = np.concatenate([r.labels for r in ds])
    assert len(set(labels.tolist())) >= 4
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (w >= 10).all() and (h >= 10).all() and (boxes >= 0).all()
    assert (boxes[:, 2] <= 320).all() and (boxes[:, 3] <= 240).all()
    assert np.array_equal(boxes, np.round(boxes))  # integer pixel boxes
    assert max(w.max(), h.max()) > 80 and min(w.min(), h.min()) < 40  # small and large objects
    img = read_image(ds[0].file_name)
    assert img.shape == (240, 320, 3) and img.std() > 10


def test_box_is_tight_around_drawn_object():
    img, ann = synthetic.render_sample_image(seed=1, index=2)
    rng = np.random.default_rng([1, 2])
    synthetic._background(rng, synthetic._load_photos(), 320, 240)
    objects = synthetic._place_objects(rng, 320, 240)
    assert len(objects) == len(ann["boxes"])
    for o, box in zip(objects, ann["boxes"]):
        x1, y1, x2, y2 = box.astype(int)
        vis = o["visible"]
        assert vis[y1:y2, x1:x2].sum() == vis.sum()  # every visible pixel inside
        assert vis[y1:y2, x1].any() and vis[y1:y2, x2 - 1].any() and vis[y1, x1:x2].any() and vis[y2 - 1, x1:x2].any()


def test_idempotent_force_and_param_change(tmp_path):
    out = tmp_path / "s"
    generate_sample_dataset(out, num_train=2, num_test=1)
    stamp = (out / MANIFEST).stat().st_mtime_ns
    assert not generate_sample_dataset(out, num_train=2, num_test=1)["generated"]
    assert (out / MANIFEST).stat().st_mtime_ns == stamp
    assert generate_sample_dataset(out, num_train=2, num_test=1, force=True)["generated"]
    info = generate_sample_dataset(out, num_train=3, num_test=1)  # other parameters: regenerated
    assert info["generated"] and len(list((out / "voc/JPEGImages").glob("*.jpg"))) == 4
    (out / "voc/JPEGImages/000001.jpg").unlink()  # damaged set: regenerated
    assert generate_sample_dataset(out, num_train=3, num_test=1)["generated"]


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = synthetic.render_sample_image
    monkeypatch.setattr(synthetic, "render_sample_image", crash)
    with pytest.raises(KeyboardInterrupt):
        generate_sample_dataset(tmp_path / "s", num_train=3, num_test=1)
    assert list(tmp_path.iterdir()) == []


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(DataError, match="not an sppdet sample set"):
        generate_sample_dataset(tmp_path, num_train=1, num_test=0)
    assert (tmp_path / "mine.txt").read_text() == "precious"


@pytest.mark.slow  # 22 s measured (load 13-19 on 2 cores)
def test_tool_runs_as_a_user_would(tmp_path):
    out = tmp_path / "tool"
    cmd = [
        sys.executable,
        str(REPO_ROOT / "tools" / "make_sample_data.py"),
        "--out",
        str(out),
        "--num-train",
        "2",
        "--num-test",
        "1",
        "--seed",
        "3",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    assert '"generated": true' in run.stdout and (out / MANIFEST).is_file()


def test_tool_user_error_is_one_line(tmp_path, capsys):
    # in-process (a second interpreter start costs seconds of torch import)
    spec = importlib.util.spec_from_file_location("make_sample_data", REPO_ROOT / "tools" / "make_sample_data.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    (tmp_path / "keep.txt").write_text("x")
    assert run_tool(tool.main, ["--out", str(tmp_path), "--num-train", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not an sppdet sample set" in err and "Traceback" not in err
