"""The bad-input catalogue (docs/bad_input.md), end to end: each bad input given to the tools as a
user would, and what must come out: exit code 2 (1 for skipped images) with one ``error: ...``
line naming the file or field, or exit code 0 with a ``warning`` that says what was skipped or
repaired; never a traceback, never silent garbage.

The tools run in this process (``run_tool`` on their ``main``) for speed; a few run as real
subprocesses at the end. The readers' own unit tests (tests/data, tests/proposals,
tests/test_config.py) cover the finer cases.
"""

import json
import math
import os
import re
import shutil
import time

import cv2
import numpy as np
import pytest
import torch
from reliability_kit import (
    assert_clean_success,
    assert_user_error,
    clone,
    jpeg_header,
    make_sample,
    png_header,
    run_in_process,
    run_subprocess,
    tiny_config,
    write_config,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The sample set (6 train, 3 test images), a shared proposal cache and a tiny trained model."""
    from sppdet.config import config_from_dict
    from sppdet.engine.train import train

    base = tmp_path_factory.mktemp("badinput")
    voc = make_sample(base / "sample")
    cache = base / "proposal_cache"  # every clone of the set has the same ids: proposals computed once
    cfg = tiny_config(voc, base / "model", **{"proposals.cache_dir": str(cache)})
    train(config_from_dict(cfg), str(base / "model"))
    return {
        "base": base,
        "voc": voc,
        "cache": cache,
        "weights": base / "model" / "model_final.pth",
        "coco_ann": base / "sample" / "coco" / "annotations" / "instances_train.json",
    }


def _config(env, tmp_path, voc=None, name="cfg.yaml", **extra):
    cfg = tiny_config(
        voc or env["voc"], tmp_path / "out", **{"proposals.cache_dir": str(env["cache"]), "train.max_iter": 2, **extra}
    )
    return write_config(tmp_path / name, cfg)


def _broken_set(env, tmp_path, edit):
    """A copy of the sample VOC folder, changed by ``edit(voc_root)``."""
    voc = clone(env["voc"], tmp_path / "voc")
    edit(voc)
    return voc


def _edit_xml(voc, image_id, fn):
    p = voc / "Annotations" / f"{image_id}.xml"
    p.write_text(fn(p.read_text()))


def _first_box(new):
    return lambda text: re.sub(r"<bndbox>.*?</bndbox>", f"<bndbox>{new}</bndbox>", text, count=1, flags=re.S)


def _box(x1, y1, x2, y2):
    return f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"


# ---------------------------------------------------------------------------------------
# Images (tools/detect.py)


def _detect(env, capsys, inputs, out, *extra):
    return run_in_process(
        "detect", ["--weights", env["weights"], "--input", *inputs, "--output", out, "--no-draw", *extra], capsys
    )


@pytest.mark.parametrize(
    "name, make, needle",
    [
        ("truncated.jpg", lambda src: src.read_bytes()[: src.stat().st_size // 2], "truncated JPEG"),
        ("garbage.jpg", lambda src: b"this is not an image" * 10, "cannot decode image"),
        ("empty.jpg", lambda src: b"", "image file is empty"),
        ("huge.png", lambda src: png_header(20000, 20000), "20000x20000 = 400 megapixels"),
        ("huge.jpg", lambda src: jpeg_header(20000, 20000), "20000x20000 = 400 megapixels"),
    ],
)
def test_detect_skips_unreadable_image_naming_it(env, tmp_path, capsys, name, make, needle):
    bad = tmp_path / name
    bad.write_bytes(make(env["voc"] / "JPEGImages" / "000001.jpg"))
    good = env["voc"] / "JPEGImages" / "000007.jpg"
    t0 = time.time()
    code, out, err = _detect(env, capsys, [bad, good], tmp_path / "out")
    assert time.time() - t0 < 60  # the huge ones are refused from the header, never decoded
    line = assert_user_error(code, err, f"skipped {bad}", needle, exit_code=1)
    assert "error: 1 of 2 image(s) could not be processed" in err, line
    result = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [e["image_id"] for e in result["images"]] == ["000007"]  # the good image still done


def test_detect_missing_input(env, tmp_path, capsys):
    code, _, err = _detect(env, capsys, [tmp_path / "nope.jpg"], tmp_path / "out")
    assert_user_error(code, err, "--input", "nope.jpg", "no such file or folder")


def test_detect_one_pixel_image_is_skipped_with_reason(env, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "dot.png"), np.zeros((1, 1, 3), np.uint8))
    code, _, err = _detect(env, capsys, [tmp_path / "dot.png"], tmp_path / "out")
    assert_user_error(code, err, "dot.png", "1x1 pixels", exit_code=1)


@pytest.mark.parametrize(
    "name, pixels, size",
    [
        ("smaller_than_stride.png", np.full((7, 9, 3), 128, np.uint8), (9, 7)),
        ("flat.png", np.full((64, 64, 3), 90, np.uint8), (64, 64)),  # no edges: EdgeBoxes finds nothing
        ("gray.png", np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1)), (64, 48)),
        ("rgba.png", np.dstack([np.full((40, 50, 3), 200, np.uint8), np.full((40, 50), 7, np.uint8)]), (50, 40)),
        ("sixteen_bit.png", (np.arange(30 * 20, dtype=np.uint16).reshape(20, 30) * 100), (30, 20)),
        ("thin.png", np.random.default_rng(0).integers(0, 255, (2, 300, 3), dtype=np.uint8), (300, 2)),
    ],
)
def test_detect_odd_but_valid_images_work(env, tmp_path, capsys, name, pixels, size):
    assert cv2.imwrite(str(tmp_path / name), pixels)
    code, _, err = _detect(env, capsys, [tmp_path / name], tmp_path / "out", "--score-thresh", "0")
    assert_clean_success(code, err)
    entry = json.loads((tmp_path / "out" / "detections.json").read_text())["images"][0]
    assert (entry["width"], entry["height"]) == size
    for d in entry["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1] and math.isfinite(d["score"])


def test_detect_proposal_file_problems(env, tmp_path, capsys):
    props = tmp_path / "props"
    props.mkdir()
    np.save(
        props / "000007.npy",
        np.array([[np.nan, 0, 5, 5], [np.inf, 1, 2, 3], [-40, -40, 500, 900], [10, 10, 60, 50]], np.float32),
    )
    img7, img8 = env["voc"] / "JPEGImages" / "000007.jpg", env["voc"] / "JPEGImages" / "000008.jpg"
    code, _, err = _detect(env, capsys, [img7, img8], tmp_path / "out", "--proposals", props, "--score-thresh", "0")
    assert_user_error(code, err, "000008.jpg", "no proposals for image id '000008'", exit_code=1)
    entry = json.loads((tmp_path / "out" / "detections.json").read_text())["images"][0]
    assert entry["image_id"] == "000007"
    assert all(0 <= v <= 320 for d in entry["detections"] for v in d["box"])  # NaN/inf gone, rest clipped
    np.save(props / "000008.npy", np.zeros((3, 3), np.float32))
    code, _, err = _detect(env, capsys, [img8], tmp_path / "out2", "--proposals", props)
    assert_user_error(code, err, "000008.npy", "expected an (N, 4) or (N, 5) box array", "(3, 3)")


# ---------------------------------------------------------------------------------------
# Annotations and splits (tools/train.py)


@pytest.mark.parametrize(
    "edit, needles",
    [
        (lambda v: (v / "JPEGImages" / "000002.jpg").unlink(), ["no image for id '000002'"]),
        (
            lambda v: _edit_xml(v, "000001", lambda t: t.replace("</object>", "", 1)),
            ["000001.xml", "malformed XML at line"],
        ),
        (
            lambda v: _edit_xml(v, "000001", lambda t: re.sub(r"<name>\w+</name>", "<name>hexagon</name>", t, count=1)),
            ["000001.xml", "unknown class 'hexagon'"],
        ),
        (lambda v: _edit_xml(v, "000001", _first_box(_box("abc", 1, 5, 5))), ["000001.xml", "<xmin> is 'abc'"]),
        (
            lambda v: (v / "ImageSets" / "Main" / "train.txt").write_text("000001\n000099\n"),
            ["train.txt", "id '000099' has no annotation file"],
        ),
        (lambda v: (v / "ImageSets" / "Main" / "train.txt").unlink(), ["train.txt", "split file not found"]),
        (
            lambda v: (v / "JPEGImages" / "000003.jpg").write_bytes(
                (v / "JPEGImages" / "000003.jpg").read_bytes()[:3000]
            ),
            ["000003.jpg", "truncated JPEG"],
        ),
        (
            lambda v: (v / "JPEGImages" / "000003.jpg").write_bytes(jpeg_header(20000, 20000)),
            ["000003.jpg", "400 megapixels"],
        ),
    ],
    ids=[
        "missing-image",
        "malformed-xml",
        "unknown-class",
        "non-numeric-coordinate",
        "split-id-without-files",
        "missing-split-file",
        "truncated-jpeg",
        "huge-image",
    ],
)
def test_train_refuses_broken_dataset(env, tmp_path, capsys, edit, needles):
    voc = _broken_set(env, tmp_path, edit)
    (tmp_path / "cache").mkdir()  # images change here: do not reuse the shared proposal cache
    cfg = _config(env, tmp_path, voc, **{"proposals.cache_dir": str(tmp_path / "cache")})
    code, _, err = run_in_process("train", ["--config", cfg], capsys)
    assert_user_error(code, err, *needles)
    assert not (tmp_path / "out" / "model_final.pth").exists()


@pytest.mark.parametrize(
    "box, warning",
    [
        (_box(30, 40, 29, 60), "empty after clipping"),  # inverted
        (_box(30, 40, 30, 40), None),  # 1x1 in VOC's inclusive pixels: valid, kept
        (_box(30, 40, 29, 40), "empty after clipping"),  # zero width
        (_box("nan", 40, 50, 60), "non-finite coordinate"),
        (_box(500, 400, 600, 500), "empty after clipping to the 320x240 image"),  # outside the image
    ],
)
def test_train_drops_bad_boxes_with_a_warning(env, tmp_path, capsys, box, warning):
    voc = _broken_set(env, tmp_path, lambda v: _edit_xml(v, "000001", _first_box(box)))
    code, _, err = run_in_process("train", ["--config", _config(env, tmp_path, voc)], capsys)
    assert_clean_success(code, err)
    if warning:
        assert any(ln.startswith("warning: ") and "000001.xml" in ln and warning in ln for ln in err.splitlines()), err
    else:
        assert "warning: " not in err


def test_train_wrong_size_warns_and_uses_the_image(env, tmp_path, capsys):
    voc = _broken_set(
        env, tmp_path, lambda v: _edit_xml(v, "000001", lambda t: t.replace("<width>320</width>", "<width>640</width>"))
    )
    code, _, err = run_in_process("train", ["--config", _config(env, tmp_path, voc)], capsys)
    assert_clean_success(code, err)
    assert any(
        ln.startswith("warning: ") and "<size> says 640x240 but 000001.jpg is 320x240" in ln for ln in err.splitlines()
    ), err


def test_train_image_without_objects(env, tmp_path, capsys):
    voc = _broken_set(
        env, tmp_path, lambda v: _edit_xml(v, "000001", lambda t: re.sub(r"<object>.*</object>", "", t, flags=re.S))
    )
    code, _, err = run_in_process("train", ["--config", _config(env, tmp_path, voc)], capsys)
    assert_clean_success(code, err)


def test_train_all_images_without_objects_still_trains(env, tmp_path, capsys):
    def strip(v):
        for xml in (v / "Annotations").glob("*.xml"):
            xml.write_text(re.sub(r"<object>.*</object>", "", xml.read_text(), flags=re.S))

    voc = _broken_set(env, tmp_path, strip)
    code, _, err = run_in_process("train", ["--config", _config(env, tmp_path, voc)], capsys)
    assert_clean_success(code, err)


# ---------------------------------------------------------------------------------------
# COCO json (tools/eval.py: the reader runs before any model)


def _coco_case(env, tmp_path, mutate):
    data = json.loads(env["coco_ann"].read_text())
    mutate(data)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    dets = tmp_path / "dets.json"
    dets.write_text("[]")  # an empty COCO results list
    return ["--dataset", "coco", "--ann", path, "--images", env["voc"] / "JPEGImages", "--detections", dets]


@pytest.mark.parametrize(
    "mutate, needles",
    [
        (lambda d: d.pop("images"), ["'images' is missing"]),
        (lambda d: d.pop("categories"), ["'categories' is missing"]),
        (lambda d: d["annotations"][0].pop("bbox"), ["annotations[0] has no 'bbox'"]),
        (lambda d: d["images"][0].pop("file_name"), ["images[0] has no 'file_name'"]),
        (lambda d: d["images"].append(dict(d["images"][0])), ["duplicate id 1"]),
        (lambda d: d["annotations"].append(dict(d["annotations"][0])), ["annotations[", "duplicate id"]),
        (lambda d: d["annotations"][0].update(image_id=999), ["image_id 999 is not in 'images'"]),
        (lambda d: d["annotations"][0].update(category_id=77), ["category_id 77 is not in 'categories'"]),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), ["'bbox' must be 4 numbers"]),
        (lambda d: d["images"][0].update(file_name="gone.jpg"), ["gone.jpg not found"]),
    ],
    ids=[
        "no-images",
        "no-categories",
        "no-bbox",
        "no-file-name",
        "dup-image-id",
        "dup-ann-id",
        "unknown-image",
        "unknown-category",
        "short-bbox",
        "missing-file",
    ],
)
def test_eval_refuses_broken_coco_json(env, tmp_path, capsys, mutate, needles):
    code, _, err = run_in_process("eval", _coco_case(env, tmp_path, mutate), capsys)
    assert_user_error(code, err, "instances.json", *needles)


def test_eval_truncated_coco_json(env, tmp_path, capsys):
    args = _coco_case(env, tmp_path, lambda d: None)
    ann = tmp_path / "instances.json"
    ann.write_text(ann.read_text()[:300])
    code, _, err = run_in_process("eval", args, capsys)
    assert_user_error(code, err, "instances.json", "not valid JSON")


def test_eval_coco_nan_box_dropped_with_warning(env, tmp_path, capsys):
    args = _coco_case(env, tmp_path, lambda d: d["annotations"][0].update(bbox=[float("nan"), 1, 5, 5]))
    code, out, err = run_in_process("eval", args, capsys)
    assert_clean_success(code, err)
    assert "warning: " in err and "non-finite bbox" in err and "instances.json" in err


# ---------------------------------------------------------------------------------------
# Proposal files (tools/proposals.py convert, and training on a file)


def _proposal_folder(tmp_path, arrays):
    folder = tmp_path / "props"
    folder.mkdir()
    for image_id, a in arrays.items():
        np.save(folder / f"{image_id}.npy", np.asarray(a, dtype=np.float64))
    return folder


TRAIN_IDS = ["000001", "000002", "000003", "000004", "000005", "000006"]
GOOD = [[10, 10, 100, 100], [20, 30, 200, 150], [0, 0, 320, 240]]


def _convert(env, tmp_path, capsys, arrays, *extra):
    folder = _proposal_folder(tmp_path, arrays)
    cfg = _config(env, tmp_path)
    return run_in_process(
        "proposals",
        ["convert", folder, "--out", tmp_path / "p.npz", "--dataset-config", cfg, "--split", "train", *extra],
        capsys,
    )


def test_proposals_missing_image_ids(env, tmp_path, capsys):
    code, _, err = _convert(env, tmp_path, capsys, {i: GOOD for i in TRAIN_IDS[:4]})
    assert_user_error(code, err, "props", "2 dataset images have no entry", "'000005'")
    assert not (tmp_path / "p.npz").exists()


def test_proposals_missing_ids_allowed_on_request(env, tmp_path, capsys):
    code, _, err = _convert(env, tmp_path, capsys, {i: GOOD for i in TRAIN_IDS[:4]}, "--allow-missing")
    assert_clean_success(code, err)
    assert "2 of 6 images have no proposals" in err


def test_proposals_nan_inf_negative_cleaned_and_reported(env, tmp_path, capsys):
    from sppdet.proposals.store import ProposalStore

    bad = GOOD + [[np.nan, 1, 5, 5], [1, np.inf, 5, 5], [50, 50, 40, 60], [-30, -20, 40, 50]]
    code, _, err = _convert(env, tmp_path, capsys, {i: bad for i in TRAIN_IDS})
    assert_clean_success(code, err)
    assert "dropped 18 of 42 boxes with a non-finite, empty or inverted coordinate" in err
    store = ProposalStore(tmp_path / "p.npz")
    boxes = store.boxes("000001")
    assert len(boxes) == 4 and np.isfinite(boxes).all() and boxes.min() >= 0
    assert (boxes[:, 2] <= 320).all() and (boxes[:, 3] <= 240).all()


def test_proposals_empty_arrays(env, tmp_path, capsys):
    arrays = {i: (np.zeros((0, 4)) if i == "000002" else GOOD) for i in TRAIN_IDS}
    code, _, err = _convert(env, tmp_path, capsys, arrays)
    assert_clean_success(code, err)
    assert "1 of 6 images have no proposals" in err


@pytest.mark.parametrize(
    "array, shape", [(np.zeros((3, 3)), "(3, 3)"), (np.zeros(8), "(8,)"), (np.zeros((2, 4, 1)), "(2, 4, 1)")]
)
def test_proposals_wrong_shapes(env, tmp_path, capsys, array, shape):
    arrays = {i: (array if i == "000002" else GOOD) for i in TRAIN_IDS}
    code, _, err = _convert(env, tmp_path, capsys, arrays)
    assert_user_error(code, err, "000002.npy", "expected an (N, 4) or (N, 5) box array", shape)


def test_train_on_a_dirty_proposal_file(env, tmp_path, capsys):
    bad = GOOD + [[np.nan, 1, 5, 5], [-30, -20, 40, 50]]
    arrays = {i: (np.zeros((0, 4)) if i == "000003" else bad) for i in TRAIN_IDS}
    folder = _proposal_folder(tmp_path, arrays)
    cfg = _config(env, tmp_path, **{"proposals.method": "file", "proposals.train_file": str(folder)})
    for _ in range(2):  # the second run uses the cleaned copy and repeats what was dropped
        code, _, err = run_in_process("train", ["--config", cfg], capsys)
        assert_clean_success(code, err)
        assert "dropped 5 of 25 boxes" in err and "1 of 6 images have no proposals" in err


# ---------------------------------------------------------------------------------------
# Configs and checkpoints


@pytest.mark.parametrize(
    "change, needles",
    [
        ({"train": {"base_lrr": 0.1}}, ["unknown key 'train.base_lrr'", "did you mean 'train.base_lr'"]),
        ({"train": {"max_iter": "ten"}}, ["'train.max_iter' must be an integer, got 'ten'"]),
        ({"model": {"fc_dims": 64}}, ["'model.fc_dims' must be a list"]),
        ({"data": {"exclude_difficult": "yes"}}, ["'data.exclude_difficult' must be true or false"]),
        ({"proposals": 3}, ["'proposals' must be a mapping"]),
    ],
)
def test_config_typo_or_wrong_type(env, tmp_path, capsys, change, needles):
    cfg = tiny_config(env["voc"], tmp_path / "out")
    for section, value in change.items():
        cfg[section] = {**cfg[section], **value} if isinstance(value, dict) else value
    path = write_config(tmp_path / "bad.yaml", cfg)
    code, _, err = run_in_process("train", ["--config", path], capsys)
    assert_user_error(code, err, "bad.yaml", *needles)


def test_config_bad_override(env, tmp_path, capsys):
    code, _, err = run_in_process("train", ["--config", _config(env, tmp_path), "train.max_itr=3"], capsys)
    assert_user_error(code, err, "cfg.yaml + overrides", "unknown key 'train.max_itr'")


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda good: good[: len(good) // 2], "not a readable PyTorch checkpoint"),
        (lambda good: good[:-100], "not a readable PyTorch checkpoint"),
        (lambda good: b"", "checkpoint file is empty"),
        (lambda good: b"garbage" * 50, "not a readable PyTorch checkpoint"),
    ],
    ids=["half", "tail-cut", "empty", "garbage"],
)
def test_detect_with_corrupt_checkpoint(env, tmp_path, capsys, make, needle):
    bad = tmp_path / "model.pth"
    bad.write_bytes(make(env["weights"].read_bytes()))
    code, _, err = run_in_process(
        "detect",
        ["--weights", bad, "--input", env["voc"] / "JPEGImages" / "000007.jpg", "--output", tmp_path / "out"],
        capsys,
    )
    assert_user_error(code, err, str(bad), needle)


def test_detect_with_a_foreign_checkpoint(env, tmp_path, capsys):
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 1, 1)}, other)
    code, _, err = run_in_process(
        "detect",
        ["--weights", other, "--input", env["voc"] / "JPEGImages" / "000007.jpg", "--output", tmp_path / "out"],
        capsys,
    )
    assert_user_error(code, err, str(other), "not an sppdet checkpoint")


def test_resume_from_a_checkpoint_of_another_config(env, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(env["base"] / "model" / "last.pth", out / "last.pth")
    cfg = _config(env, tmp_path)
    code, _, err = run_in_process("train", ["--config", cfg, "--resume", "model.fc_dims=[16, 16]"], capsys)
    assert_user_error(
        code,
        err,
        "last.pth",
        "--resume: the checkpoint was trained with model.fc_dims=[32, 32]",
        "the config says [16, 16]",
    )
    code, _, err = run_in_process(
        "train", ["--config", cfg, "--resume", "data.classes=[cross, star, triangle, square, circle]"], capsys
    )
    assert_user_error(code, err, "last.pth", "checkpoint classes", "differ from the dataset's")


def test_eval_model_on_a_dataset_with_other_classes(env, tmp_path, capsys):
    cfg = _config(env, tmp_path, **{"data.classes": ["cross", "star", "triangle", "square", "circle"]})
    code, _, err = run_in_process("eval", ["--config", cfg, "--weights", env["weights"]], capsys)
    assert_user_error(code, err, str(env["weights"]), "checkpoint classes", "differ from the dataset's")


# ---------------------------------------------------------------------------------------
# Output folders that cannot be written


def test_output_folder_under_a_file(env, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    image = env["voc"] / "JPEGImages" / "000007.jpg"
    cases = [
        ("detect", ["--weights", env["weights"], "--input", image, "--output", blocker / "out"]),
        ("train", ["--config", _config(env, tmp_path), "--output", blocker / "out"]),
        ("eval", ["--config", _config(env, tmp_path), "--weights", env["weights"], "--out", blocker / "out"]),
        ("proposals", ["convert", next(env["cache"].glob("*.npz")), "--out", blocker / "p.npz"]),
        ("proposals", ["compute", "--images", env["voc"] / "JPEGImages", "--out", blocker / "p.npz"]),
    ]
    for tool, argv in cases:
        t0 = time.time()
        code, _, err = run_in_process(tool, argv, capsys)
        assert_user_error(code, err, str(blocker))
        assert time.time() - t0 < 30, f"{tool} did work before failing on its output folder"


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="running as root: chmod cannot make a folder unwritable (the under-a-file test covers uncreatable folders)",
)
def test_output_folder_without_permission(env, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run_in_process(
            "detect",
            [
                "--weights",
                env["weights"],
                "--input",
                env["voc"] / "JPEGImages" / "000007.jpg",
                "--output",
                locked / "out",
            ],
            capsys,
        )
        assert_user_error(code, err, "locked", "permission denied")
    finally:
        locked.chmod(0o700)


# ---------------------------------------------------------------------------------------
# A few real subprocesses (what a user's shell sees)


@pytest.mark.slow  # 25 s measured (load 13-19 on 2 cores)
def test_subprocess_detect_folder_with_a_corrupt_image(env, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(env["voc"] / "JPEGImages" / "000007.jpg", folder / "ok.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    r = run_subprocess(
        "detect", ["--weights", env["weights"], "--input", folder, "--output", tmp_path / "out", "--device", "cpu"]
    )
    assert_user_error(r.returncode, r.stderr, "broken.jpg", exit_code=1)
    assert "1 images" in r.stdout and (tmp_path / "out" / "ok.jpg").is_file()


@pytest.mark.slow  # 23 s measured (load 13-19 on 2 cores)
def test_subprocess_train_broken_annotation(env, tmp_path):
    voc = _broken_set(env, tmp_path, lambda v: _edit_xml(v, "000002", lambda t: t[: len(t) // 2]))
    r = run_subprocess("train", ["--config", _config(env, tmp_path, voc)])
    assert_user_error(r.returncode, r.stderr, "000002.xml", "malformed XML")


@pytest.mark.slow  # 28 s measured (load 13-19 on 2 cores)
def test_subprocess_eval_broken_coco(env, tmp_path):
    args = _coco_case(env, tmp_path, lambda d: d["images"].append(dict(d["images"][2])))
    r = run_subprocess("eval", args)
    assert_user_error(r.returncode, r.stderr, "instances.json", "duplicate id 3")


@pytest.mark.slow  # 25 s measured (load 13-19 on 2 cores)
def test_subprocess_train_bad_image_read_in_a_loader_worker(env, tmp_path):
    """torch re-raises a worker's error with the worker's traceback in its text: one line still."""

    def truncate(v):
        data = (v / "JPEGImages" / "000002.jpg").read_bytes()
        (v / "JPEGImages" / "000002.jpg").write_bytes(data[: len(data) // 2])

    voc = _broken_set(env, tmp_path, truncate)
    props = _proposal_folder(tmp_path, {i: GOOD for i in TRAIN_IDS})  # no proposal run reads the image
    cfg = _config(
        env,
        tmp_path,
        voc,
        **{"proposals.method": "file", "proposals.train_file": str(props), "train.workers": 2, "train.max_iter": 6},
    )
    r = run_subprocess("train", ["--config", cfg])
    line = assert_user_error(r.returncode, r.stderr, "000002.jpg", "truncated JPEG")
    assert line.startswith(f"error: {voc}") and "Original Traceback" not in r.stderr
