"""PASCAL VOC reader: real BCCD counts, the messy-file policy, the writer, build_dataset."""

import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from sppdet.config import load_config
from sppdet.data.build import build_dataset
from sppdet.data.dataset import DataWarning, ImageRecord
from sppdet.data.voc import VOC_CLASSES, load_voc, write_voc_annotation
from sppdet.errors import ConfigError, DataError

BCCD_CLASSES = ["RBC", "WBC", "Platelets"]
_OBJ = re.compile(r"<object>(.*?)</object>", re.S)


def _tag(text, tag):
    m = re.search(rf"<{tag}>\s*(.*?)\s*</{tag}>", text, re.S)
    return m.group(1) if m else None


def _regex_objects(xml_path):
    """Objects of one XML by plain regex: (name, difficult, truncated, (xmin, ymin, xmax, ymax))."""
    out = []
    for body in _OBJ.findall(Path(xml_path).read_text()):
        coords = tuple(float(_tag(body, t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        out.append((_tag(body, "name"), _tag(body, "difficult") == "1", _tag(body, "truncated") == "1", coords))
    return out


# ---------------------------------------------------------------------------------------
# Real files: BCCD


@pytest.mark.parametrize("split, n_images", [("train", 205), ("val", 87)])
def test_bccd_real_counts(bccd_root, split, n_images):
    ids = (bccd_root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    expected = {i: _regex_objects(bccd_root / "Annotations" / f"{i}.xml") for i in ids}
    ds = load_voc(bccd_root, split, BCCD_CLASSES)

    assert len(ds) == n_images == len(ids)
    assert ds.ids == ids
    want = Counter(name for objs in expected.values() for name, *_ in objs)
    got = Counter(ds.class_names[int(lab) - 1] for r in ds for lab in r.labels)
    assert got == want  # nothing dropped from the real files
    assert sum(r.difficult.sum() for r in ds) == sum(d for o in expected.values() for _, d, _, _ in o)
    assert sum(r.truncated.sum() for r in ds) == sum(t for o in expected.values() for _, _, t, _ in o)
    for r in ds:
        objs = expected[r.image_id]
        assert (r.width, r.height) == (640, 480)
        assert Path(r.file_name).is_file() and Path(r.file_name).parent.name == "JPEGImages"
        voc = np.array([c for *_, c in objs], dtype=np.float32)
        np.testing.assert_array_equal(r.boxes, voc - [1, 1, 0, 0])  # 1-based inclusive -> ours
        assert (r.boxes[:, :2] >= 0).all() and (r.boxes[:, 2] <= 640).all() and (r.boxes[:, 3] <= 480).all()
    assert ds.meta["issues"]["dropped_boxes"] == 0


def test_bccd_known_counts_and_quirks(bccd_root):
    train = load_voc(bccd_root, "train", BCCD_CLASSES)
    val = load_voc(bccd_root, "val", BCCD_CLASSES)
    count = lambda ds: Counter(ds.class_names[int(lab) - 1] for r in ds for lab in r.labels)  # noqa: E731
    assert count(train) == {"RBC": 2382, "WBC": 214, "Platelets": 209}
    assert count(val) == {"RBC": 968, "WBC": 87, "Platelets": 83}
    everything = load_voc(bccd_root, None, BCCD_CLASSES)  # no split: every XML
    assert len(everything) == 292 == len(list((bccd_root / "Annotations").glob("*.xml")))
    boxes = np.concatenate([r.boxes for r in everything])
    widths = boxes[:, 2] - boxes[:, 0]
    assert (widths == 1).sum() == 2  # two real `xmin == xmax` clicks: one pixel wide, kept
    touching = ((boxes[:, 0] == 0) | (boxes[:, 2] == 640) | (boxes[:, 1] == 0) | (boxes[:, 3] == 480)).sum()
    assert touching > 100  # many boxes touch the border; none needed clipping
    assert everything.meta["issues"]["clipped_boxes"] == 0


# ---------------------------------------------------------------------------------------
# Messy files written here


def _xml(objects="", size=(64, 48), filename="img.jpg", extra=""):
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    return (
        f"<annotation><folder>VOC</folder><filename>{filename}</filename>"
        f"<path>/home/someone/else/{filename}</path>{size_xml}{extra}{objects}</annotation>"
    )


def _obj(name, box, difficult=None, truncated=None):
    flags = "".join(f"<{t}>{v}</{t}>" for t, v in (("difficult", difficult), ("truncated", truncated)) if v is not None)
    coords = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return f"<object><name>{name}</name>{flags}<bndbox>{coords}</bndbox></object>"


def _voc_root(tmp_path, files, image_size=(64, 48), split=None):
    """A VOC folder with one real JPEG per id and the given XML texts."""
    root = tmp_path / "VOC"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id, text in files.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(text)
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), np.zeros((image_size[1], image_size[0], 3), np.uint8))
    if split:
        (root / "ImageSets" / "Main" / f"{split[0]}.txt").write_text("\n".join(split[1]) + "\n")
    return root


def test_voc_one_based_conversion_and_flags(tmp_path):
    root = _voc_root(tmp_path, {"img": _xml(_obj("cat", (1, 1, 10, 20), 1, 0) + _obj("dog", (5, 6, 7, 8)))})
    r = load_voc(root, None, ["cat", "dog"])[0]
    np.testing.assert_array_equal(r.boxes, [[0, 0, 10, 20], [4, 5, 7, 8]])  # xmin=1..xmax=10: ten pixels
    assert r.labels.tolist() == [1, 2]
    assert r.difficult.tolist() == [True, False] and r.truncated.tolist() == [False, False]  # missing -> 0


def test_border_boxes_clipped_and_empty_ones_dropped_with_warning(tmp_path):
    objs = (
        _obj("cat", (-5, 0, 70, 48))  # past the left/right border: clipped
        + _obj("cat", (80, 10, 90, 20))  # wholly outside: empty after clip
        + _obj("dog", (30, 10, 10, 20))  # inverted
        + _obj("dog", ("nan", 1, 5, 5))  # NaN
        + _obj("dog", (2, 2, 6, 6))
    )
    root = _voc_root(tmp_path, {"messy": _xml(objs)})
    with pytest.warns(DataWarning) as rec:
        ds = load_voc(root, "", ["cat", "dog"])
    msg = str(rec[0].message)
    assert "messy.xml" in msg and "object 1" in msg and "object 2" in msg and "object 3" in msg
    r = ds[0]
    np.testing.assert_array_equal(r.boxes, [[0, 0, 64, 48], [1, 1, 6, 6]])
    assert ds.meta["issues"]["clipped_boxes"] >= 1 and ds.meta["issues"]["dropped_boxes"] == 3


def test_class_name_spaces_and_case(tmp_path):
    root = _voc_root(tmp_path, {"a": _xml(_obj("  Cat \n", (1, 1, 5, 5)) + _obj("DOG", (1, 1, 5, 5)))})
    assert load_voc(root, None, ["cat", "dog"])[0].labels.tolist() == [1, 2]


def test_unknown_class_error_or_skip(tmp_path):
    root = _voc_root(tmp_path, {"u": _xml(_obj("cat", (1, 1, 5, 5)) + _obj("zebra", (1, 1, 5, 5)))})
    with pytest.raises(DataError, match="zebra") as e:
        load_voc(root, None, ["cat"])
    assert "u.xml" in str(e.value)
    ds = load_voc(root, None, ["cat"], skip_unknown=True)
    assert ds[0].labels.tolist() == [1] and ds.meta["issues"]["skipped_unknown"] == 1


def test_default_classes_are_voc20(tmp_path):
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[-1] == "tvmonitor"
    root = _voc_root(tmp_path, {"p": _xml(_obj("person", (1, 1, 5, 5)))})
    assert load_voc(root)[0].labels.tolist() == [15]


def test_doctype_and_entities_refused(tmp_path):
    bomb = '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>' + _xml(
        _obj("&lol2;", (1, 1, 5, 5))
    )
    root = _voc_root(tmp_path, {"bomb": bomb})
    with pytest.raises(DataError, match="DOCTYPE") as e:
        load_voc(root, None, ["cat"])
    assert "bomb.xml" in str(e.value)


def test_malformed_xml_names_file_and_line(tmp_path):
    root = _voc_root(tmp_path, {"broken": "<annotation>\n<filename>x.jpg</filename>\n<object><name>cat</nam>\n"})
    with pytest.raises(DataError, match=r"broken\.xml.*line 3"):
        load_voc(root, None, ["cat"])


def test_size_trusts_the_image(tmp_path):
    root = _voc_root(
        tmp_path,
        {
            "wrong": _xml(_obj("cat", (1, 1, 90, 90)), size=(100, 100)),
            "nosize": _xml(_obj("cat", (1, 1, 5, 5)), size=None),
            "zero": _xml(_obj("cat", (1, 1, 5, 5)), size=(0, 0)),
        },
    )
    with pytest.warns(UserWarning, match=r"wrong\.xml: <size> says 100x100 but wrong\.jpg is 64x48"):
        ds = load_voc(root, None, ["cat"])
    for r in ds:
        assert (r.width, r.height) == (64, 48)
    np.testing.assert_array_equal(ds.get("wrong").boxes, [[0, 0, 64, 48]])  # clipped to the real image
    assert ds.meta["issues"]["size_mismatch"] == 3


def test_stale_path_ignored_and_image_fallback(tmp_path):
    root = _voc_root(tmp_path, {"img7": _xml(_obj("cat", (1, 1, 5, 5)), filename="renamed.png")})
    r = load_voc(root, None, ["cat"])[0]
    assert Path(r.file_name) == root / "JPEGImages" / "img7.jpg"
    (root / "JPEGImages" / "img7.jpg").unlink()
    with pytest.raises(DataError, match="img7"):
        load_voc(root, None, ["cat"])


def test_split_errors(tmp_path):
    root = _voc_root(tmp_path, {"a": _xml(), "b": _xml()}, split=("train", ["a", "ghost"]))
    with pytest.raises(DataError, match="ghost") as e:
        load_voc(root, "train", ["cat"])
    assert "train.txt" in str(e.value)
    with pytest.raises(DataError, match="split file not found.*train"):
        load_voc(root, "val", ["cat"])
    (root / "ImageSets/Main/dup.txt").write_text("a\nb\na\n")
    with pytest.raises(DataError, match="twice"):
        load_voc(root, "dup", ["cat"])
    (root / "ImageSets/Main/ok.txt").write_text("b  1\n\na -1\n")  # per-class list format
    assert load_voc(root, "ok", ["cat"]).ids == ["b", "a"]


def test_image_without_objects_kept(tmp_path):
    root = _voc_root(tmp_path, {"empty": _xml()})
    r = load_voc(root, None, ["cat"])[0]
    assert r.num_objects == 0 and r.boxes.shape == (0, 4)


def test_writer_round_trip(tmp_path):
    root = _voc_root(tmp_path, {"w": _xml()})
    rec = ImageRecord(
        "w",
        str(root / "JPEGImages" / "w.jpg"),
        64,
        48,
        boxes=[[0, 0, 64, 48], [3, 4, 10.5, 20]],
        labels=[2, 1],
        difficult=[False, True],
        truncated=[True, False],
    )
    write_voc_annotation(root / "Annotations" / "w.xml", rec, ["cat", "dog"])
    back = load_voc(root, None, ["cat", "dog"])[0]
    np.testing.assert_array_equal(back.boxes, rec.boxes)
    for k in ("labels", "difficult", "truncated"):
        np.testing.assert_array_equal(getattr(back, k), getattr(rec, k))
    text = (root / "Annotations" / "w.xml").read_text()
    assert "<xmin>1</xmin>" in text and "<xmax>64</xmax>" in text  # 1-based inclusive on disk


# ---------------------------------------------------------------------------------------
# build_dataset (VOC side)


def test_build_dataset_voc(tmp_path):
    root = _voc_root(tmp_path, {"a": _xml(_obj("RBC", (1, 1, 5, 5))), "b": _xml()}, split=("t", ["b"]))
    cfg = load_config(None, [f"data.root={root}", "data.train_split=''", "data.test_split=t", "data.classes=[RBC]"])
    assert build_dataset(cfg, "train").ids == ["a", "b"]
    assert build_dataset(cfg, "test").ids == ["b"]
    discovered = build_dataset(load_config(None, [f"data.root={root}", "data.train_split=''"]), "train")
    assert discovered.class_names == ["RBC"]  # empty data.classes: found in the training XMLs
    with pytest.raises(ConfigError, match="data.root"):
        build_dataset(load_config(None, [f"data.root={tmp_path / 'nowhere'}"]), "train")
    with pytest.raises(ConfigError, match="data.format"):
        build_dataset(load_config(None, ["data.format=yolo"]), "train")
