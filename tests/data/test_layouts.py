"""Datasets as annotation tools export them: layout variants read box by box like the standard
VOC layout, the seeded split files, class discovery, the missing-image policy, and eval / detect /
tools/data.py on a folder without ImageSets."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from reliability_kit import run_in_process

from sppdet.config import load_config
from sppdet.data.build import build_dataset, build_eval_voc
from sppdet.data.dataset import DataWarning
from sppdet.data.split import load_or_make_split, read_ids, seeded_split, split_path
from sppdet.data.voc import VOC_CLASSES, discover_classes, find_voc_layout, load_voc, voc_class_counts
from sppdet.errors import DataError

BCCD_IDS = ["BloodImage_00000", "BloodImage_00001", "BloodImage_00002", "BloodImage_00003", "BloodImage_00004"]


def _copy(bccd_root, dest, ann="Annotations", img="JPEGImages", rename=None, ext=".jpg", xml_name=None):
    """BCCD_IDS copied into ``dest`` with the given folder names (``ann == img``: one folder)."""
    (dest / ann).mkdir(parents=True, exist_ok=True)
    (dest / img).mkdir(parents=True, exist_ok=True)
    for i in BCCD_IDS:
        xml = (bccd_root / "Annotations" / f"{i}.xml").read_text()
        if rename:
            xml = rename(i, xml)
        (dest / ann / f"{(xml_name or (lambda i: i))(i)}.xml").write_text(xml)
        shutil.copy(bccd_root / "JPEGImages" / f"{i}.jpg", dest / img / f"{i}{ext}")
    return dest


def _by_image(ds):
    """{image file name: (width, height, boxes, class names, difficult)} of a dataset."""
    return {
        Path(r.file_name).stem: (
            r.width,
            r.height,
            r.boxes.tolist(),
            [ds.class_names[int(k) - 1] for k in r.labels],
            r.difficult.tolist(),
        )
        for r in ds
    }


@pytest.fixture
def standard(bccd_root, tmp_path):
    root = _copy(bccd_root, tmp_path / "standard")
    return _by_image(load_voc(root, None, ["RBC", "WBC", "Platelets"]))


@pytest.mark.parametrize(
    "variant",
    [
        dict(ann="annotations", img="images"),  # labelImg / Roboflow
        dict(ann="ANNOTATIONS", img="Images"),  # case
        dict(ann="annotations", img="JPEGImages"),
        dict(ann=".", img="."),  # XMLs beside the images
        dict(ann="Annotations", img="images", xml_name=lambda i: "label_" + i[-3:]),  # XML named otherwise
        dict(ann="Annotations", img="images", ext=".JPG"),  # <filename> says .jpg, file is .JPG
        # <filename> without extension, and one naming a file that is not there (XML's own name then)
        dict(
            ann="Annotations",
            img="JPEGImages",
            rename=lambda i, t: t.replace(
                f"{i}.jpg</filename>", i + ("</filename>" if i[-1] != "0" else "x.png</filename>")
            ),
        ),
    ],
)
def test_layout_variants_read_like_the_standard_layout(bccd_root, tmp_path, standard, variant):
    root = _copy(bccd_root, tmp_path / "variant", **variant)
    ds = load_voc(root, None, ["RBC", "WBC", "Platelets"])
    got = _by_image(ds)
    assert sorted(got) == sorted(standard) == BCCD_IDS
    for name, want in standard.items():
        assert got[name] == want, name  # same size, boxes, labels, flags: box by box
    assert all(Path(r.file_name).is_file() for r in ds)


def test_layout_without_annotations_is_one_line_error(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="no Annotations/ folder and no .xml files"):
        find_voc_layout(tmp_path)


def test_class_discovery_order(tmp_path):
    root = tmp_path / "d"
    (root / "annotations").mkdir(parents=True)
    objs = {"a": ["zebra", "Apple", "apple"], "b": ["banana", "zebra", " zebra "], "c": []}
    for i, names in objs.items():
        body = "".join(
            f"<object><name>{n}</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
            for n in names
        )
        (root / "annotations" / f"{i}.xml").write_text(f"<annotation><filename>{i}.jpg</filename>{body}</annotation>")
    counts = voc_class_counts(root)
    assert counts == {"zebra": 3, "Apple": 1, "apple": 1, "banana": 1}  # names stripped, case kept
    assert discover_classes(counts) == ["Apple", "apple", "banana", "zebra"]  # sorted regardless of case
    assert discover_classes(counts) == sorted(counts, key=lambda n: (n.lower(), n))
    assert discover_classes({n: 1 for n in reversed(VOC_CLASSES)}) == list(VOC_CLASSES)  # VOC's own order


def test_seeded_split_and_split_file_round_trip(tmp_path):
    ids = [f"im{i:03d}" for i in range(57)]
    train, val = seeded_split(ids[::-1], 0.1, seed=3)
    assert (train, val) == seeded_split(ids, 0.1, seed=3)  # depends on the ids, not their order
    assert len(val) == round(57 * 0.1) and sorted(train + val) == ids and not set(train) & set(val)
    assert seeded_split(ids, 0.1, seed=4)[1] != val
    assert seeded_split(["a", "b"], 0.01, 0)[1] and seeded_split(["a", "b"], 0.0, 0)[1] == []

    paths = load_or_make_split(tmp_path / "out", ("train", "val"), ids, 0.1, 3)
    assert paths["val"] == split_path(tmp_path / "out", "val") == tmp_path / "out" / "splits" / "val.txt"
    assert read_ids(paths["train"]) == train and read_ids(paths["val"]) == val
    again = load_or_make_split(tmp_path / "out", ("train", "val"), ids + ["new"], 0.5, 9)  # reused as written
    assert read_ids(again["val"]) == val
    with pytest.raises(DataError, match="'im000' is not an annotated image"):
        load_or_make_split(tmp_path / "out", ("train", "val"), ids[1:], 0.1, 3)


def _labelimg(bccd_root, tmp_path, missing=("BloodImage_00002",)):
    root = _copy(bccd_root, tmp_path / "labelimg", ann="annotations", img="images")
    for i in missing:
        (root / "images" / f"{i}.jpg").unlink()
    return root


def test_missing_image_policy_both_ways(bccd_root, tmp_path):
    root = _labelimg(bccd_root, tmp_path, missing=("BloodImage_00002", "BloodImage_00004"))
    with pytest.raises(DataError) as e:
        load_voc(root, None, ["RBC", "WBC", "Platelets"])
    msg = str(e.value)
    assert "2 annotation file(s) without an image" in msg and "BloodImage_00002" in msg and "skip_missing" in msg
    assert "\n" not in msg
    with pytest.warns(DataWarning, match="left out 2 annotation file") as rec:
        ds = load_voc(root, None, ["RBC", "WBC", "Platelets"], skip_missing=True)
    assert len([w for w in rec if issubclass(w.category, DataWarning)]) == 1  # one line for all of them
    assert ds.ids == ["BloodImage_00000", "BloodImage_00001", "BloodImage_00003"]
    assert ds.meta["issues"]["missing_images"] == 2


def test_build_dataset_seeded_split_into_output_folder(bccd_root, tmp_path):
    root = _labelimg(bccd_root, tmp_path)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    overrides = [f"data.root={root}", f"output_dir={tmp_path / 'out'}", "data.test_split=val", "data.val_fraction=0.25"]
    with pytest.raises(DataError, match="skip_missing"):
        build_dataset(load_config(None, overrides), "train")
    cfg = load_config(None, overrides + ["data.skip_missing=true"])
    with pytest.warns(DataWarning):
        train, val = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert sorted(train.ids + val.ids) == [i for i in BCCD_IDS if i != "BloodImage_00002"]  # usable ones only
    assert len(val) == 1 and not set(train.ids) & set(val.ids)
    assert read_ids(tmp_path / "out" / "splits" / "val.txt") == val.ids
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written into the data
    counts = voc_class_counts(root, train.ids)
    assert train.class_names == val.class_names == discover_classes(counts) == ["Platelets", "RBC", "WBC"]


def test_eval_tool_on_folder_without_imagesets(bccd_root, tmp_path, capsys):
    from sppdet.evaluation.detections import ImageDetections, save_detections

    root = _labelimg(bccd_root, tmp_path, missing=())
    gt = load_voc(root, None, ["Platelets", "RBC", "WBC"])
    dets = {r.image_id: ImageDetections(r.boxes, np.linspace(1, 0.5, r.num_objects), r.labels) for r in gt}
    save_detections(dets, tmp_path / "dets.json", gt)
    code, out, err = run_in_process(
        "eval", ["--dataset", "voc", "--root", root, "--detections", tmp_path / "dets.json"], capsys
    )
    assert code == 0, err
    assert "mAP (voc07, IoU > 0.5) = 1.0000" in out  # every annotated image, classes discovered


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-iteration tiny model trained on a labelImg-style copy (seeded split, discovered classes)."""
    import torch
    from reliability_kit import tiny_config

    from sppdet.config import config_from_dict
    from sppdet.engine.train import train

    base = tmp_path_factory.mktemp("labelimg")
    bccd = Path(__file__).resolve().parents[3] / "shared" / "data" / "bccd" / "VOC"  # ../shared/data
    if not bccd.is_dir():
        pytest.skip(f"real data not available: {bccd}")
    root = _copy(bccd, base / "data", ann="annotations", img="images")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = tiny_config(
        root, base / "model", **{"train.max_iter": 2, "input.train_scales": [160], "input.test_scales": [160]}
    )
    cfg["data"].update(classes=[], test_split="val", val_fraction=0.4)
    cfg["proposals"]["max_side"] = 200
    train(config_from_dict(cfg), str(base / "model"))
    torch.set_num_threads(n)
    return root, base / "model" / "model_final.pth"


@pytest.mark.slow
def test_eval_with_weights_uses_held_out_split_and_checkpoint_classes(trained, tmp_path, capsys):
    root, weights = trained
    from sppdet.engine.checkpoint import load_checkpoint

    val = read_ids(weights.parent / "splits" / "val.txt")
    train = read_ids(weights.parent / "splits" / "train.txt")
    assert len(val) == 2 and sorted(train + val) == BCCD_IDS
    classes = load_checkpoint(weights)["class_names"]
    assert classes == discover_classes(voc_class_counts(root, train))  # discovered in training, stored
    ds = build_eval_voc(str(root), train_cfg=None)
    assert ds.ids == BCCD_IDS  # no checkpoint: every annotated image
    code, out, err = run_in_process(
        "eval", ["--weights", weights, "--dataset", "voc", "--root", root, "--out", tmp_path / "e"], capsys
    )
    assert code == 0, err
    saved = json.loads((tmp_path / "e" / "detections.json").read_text())
    assert "mAP (voc07" in out and "Platelets" in out and "WBC" in out
    assert sorted(str(k) for k in _image_ids(saved)) == sorted(val)  # only the held-out images


def _image_ids(saved):
    images = saved.get("images", saved) if isinstance(saved, dict) else saved
    if isinstance(images, dict):
        return list(images)
    return [im.get("image_id", im.get("id")) for im in images]


@pytest.mark.slow
def test_detect_on_dataset_root(trained, tmp_path, capsys):
    root, weights = trained
    code, out, err = run_in_process(
        "detect", ["--weights", weights, "--input", root, "--output", tmp_path / "d", "--no-draw"], capsys
    )
    assert code == 0, err
    assert f"{len(BCCD_IDS)} images" in out  # found in root/images


def test_data_tool_check_and_show(bccd_root, tmp_path, capsys):
    root = _labelimg(bccd_root, tmp_path)
    code, out, err = run_in_process("data", ["check", root], capsys)
    assert code == 0, err
    gt = load_voc(root, None, ["Platelets", "RBC", "WBC"], skip_missing=True)
    for k, name in enumerate(gt.class_names, 1):
        n_obj = sum(int((r.labels == k).sum()) for r in gt)
        n_img = sum(int((r.labels == k).any()) for r in gt)
        assert any(line.split() == [name, str(n_img), str(n_obj)] for line in out.splitlines()), name
    assert "problems: 1" in out and "BloodImage_00002.xml: no image" in out
    sizes = np.concatenate([np.sqrt((r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1])) for r in gt])
    assert f"large {int((sizes >= 96).sum())}" in out
    code, out, err = run_in_process("data", ["show", root, "--out", tmp_path / "show", "--max", "2"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "show").iterdir()) == [f"{i}.jpg" for i in BCCD_IDS[:2]]
    code, out, err = run_in_process("data", ["show", root], capsys)
    assert code != 0 and "--out" in err


# ---------------------------------------------------------------------------------------
# COCO exports


def _coco_export(coco_mini, dest, layout):
    """Six coco-mini images as a Roboflow (train/ + valid/, category 0 unused) or CVAT export."""
    data = json.loads((coco_mini / "annotations" / "instances_train2017.json").read_text())
    images = sorted(data["images"], key=lambda im: im["id"])[:6]
    parts = {"train": images[:4], "valid": images[4:]} if layout == "roboflow" else {"all": images}
    cats = data["categories"] + (
        [{"id": 0, "name": "objects", "supercategory": "none"}] if layout == "roboflow" else []
    )
    for part, ims in parts.items():
        ids = {im["id"] for im in ims}
        doc = dict(images=ims, categories=cats, annotations=[a for a in data["annotations"] if a["image_id"] in ids])
        if layout == "roboflow":
            folder, ann = dest / part, dest / part / "_annotations.coco.json"
        else:
            folder, ann = dest / "images", dest / "annotations" / "instances_default.json"
        folder.mkdir(parents=True, exist_ok=True)
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(json.dumps(doc))
        for im in ims:
            shutil.copy(coco_mini / "train2017" / im["file_name"], folder / im["file_name"])
    return dest


@pytest.mark.parametrize("layout", ["roboflow", "cvat"])
def test_coco_exports_from_data_root(coco_mini, tmp_path, layout):
    from sppdet.data.coco import load_coco

    root = _coco_export(coco_mini, tmp_path / "export", layout)
    cfg = load_config(
        "configs/custom_coco.yaml", [f"data.root={root}", f"output_dir={tmp_path / 'out'}", "data.val_fraction=0.34"]
    )
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    full = load_coco(coco_mini / "annotations" / "instances_train2017.json", coco_mini / "train2017")
    seen = train.ids + (val.ids if layout == "cvat" else [])  # one json: its categories in use
    used = [
        n for n in full.class_names if any(n == full.class_names[int(k) - 1] for i in seen for k in full.get(i).labels)
    ]
    assert train.class_names == val.class_names == used  # categories with annotations, by id
    assert "objects" not in train.class_names  # Roboflow's unused category 0
    assert len(train) == 4 and len(val) == 2 and not set(train.ids) & set(val.ids)
    for ds in (train, val):
        for r in ds:
            ref = full.get(r.image_id)
            names = [ds.class_names[int(k) - 1] for k in r.labels]
            keep = [full.class_names[int(k) - 1] in ds.class_names for k in ref.labels]
            assert names == [full.class_names[int(k) - 1] for k, ok in zip(ref.labels, keep) if ok]
            np.testing.assert_array_equal(r.boxes, ref.boxes[keep])
    if layout == "cvat":  # one json: seeded split files in the output folder
        assert read_ids(tmp_path / "out" / "splits" / "val.txt") == val.ids


@pytest.mark.parametrize("with_valid", [True, False])
def test_roboflow_voc_export_one_folder_per_split(bccd_root, tmp_path, standard, with_valid):
    root = tmp_path / "roboflow"
    _copy(bccd_root, root / "train", ann=".", img=".")
    if with_valid:
        (root / "valid").mkdir()
        shutil.move(str(root / "train" / "BloodImage_00004.xml"), root / "valid" / "BloodImage_00004.xml")
        shutil.move(str(root / "train" / "BloodImage_00004.jpg"), root / "valid" / "BloodImage_00004.jpg")
    cfg = load_config("configs/custom_voc.yaml", [f"data.root={root}", f"output_dir={tmp_path / 'out'}"])
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    if with_valid:
        assert (train.ids, val.ids) == (BCCD_IDS[:4], ["BloodImage_00004"])
    else:
        assert sorted(train.ids + val.ids) == BCCD_IDS and len(val) == 1  # seeded split of train/
        assert read_ids(tmp_path / "out" / "splits" / "val.txt") == val.ids
    got = {**_by_image(train), **_by_image(val)}
    assert got == standard


def test_coco_missing_image_policy_both_ways(coco_mini, tmp_path):
    from sppdet.data.coco import load_coco

    root = _coco_export(coco_mini, tmp_path / "export", "cvat")
    ann = root / "annotations" / "instances_default.json"
    gone = sorted((root / "images").iterdir())[0]
    gone.unlink()
    with pytest.raises(DataError, match=rf"1 image\(s\) missing from .*{gone.name} not found.*skip_missing"):
        load_coco(ann, root / "images")
    with pytest.warns(DataWarning, match="skipped .*1 image"):
        ds = load_coco(ann, root / "images", skip_missing=True)
    assert len(ds) == 5 and ds.meta["issues"]["missing_images"] == 1
    assert all(Path(r.file_name).name != gone.name for r in ds)
