"""Crops of ground-truth boxes equal hand-cut crops; ImageFolder trees are read as labelled."""

import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

from sppdet.classification.config import ClassifierDataConfig
from sppdet.classification.data import CropSet, crop_window, image_folder_samples, load_crop_set
from sppdet.errors import DataError

BCCD_CLASSES = ["RBC", "WBC", "Platelets"]


def test_crop_window_by_hand():
    # box 10.5..20.2 wide 9.7: floor/ceil -> [10, 21); context 0.5 adds 4.85: 25.05 -> 26
    assert crop_window((10.5, 3.0, 20.2, 8.0), 100, 50) == (10, 3, 21, 8)
    assert crop_window((10.5, 3.0, 20.2, 8.0), 100, 50, context=0.5) == (5, 0, 26, 11)
    assert crop_window((90.0, 40.0, 100.0, 50.0), 100, 50, context=1.0) == (80, 30, 100, 50)  # clipped


def _hand_crops(bccd_root, image_id, context):
    """Independent reference: parse the XML ourselves, 1-based inclusive VOC pixels, cv2 read."""
    root = ET.parse(bccd_root / "Annotations" / f"{image_id}.xml").getroot()
    image = cv2.imread(str(bccd_root / "JPEGImages" / f"{image_id}.jpg"))[:, :, ::-1]
    H, W = image.shape[:2]
    out = []
    for obj in root.iter("object"):
        b = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (float(b.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax"))
        x1, y1, x2, y2 = max(xmin - 1, 0), max(ymin - 1, 0), min(xmax, W), min(ymax, H)
        dx, dy = context * (x2 - x1), context * (y2 - y1)
        c = image[max(int(np.floor(y1 - dy)), 0) : min(int(np.ceil(y2 + dy)), H),
                  max(int(np.floor(x1 - dx)), 0) : min(int(np.ceil(x2 + dx)), W)]  # fmt: skip
        out.append((BCCD_CLASSES.index(obj.find("name").text.strip()), c))
    return out


@pytest.mark.parametrize("context", [0.0, 0.2])
def test_voc_crops_equal_hand_cut_crops(bccd_root, tmp_path, context):
    ids = ["BloodImage_00000", "BloodImage_00001"]
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "two.txt").write_text("\n".join(ids) + "\n")
    for sub in ("Annotations", "JPEGImages"):
        (tmp_path / sub).symlink_to(bccd_root / sub)
    dcfg = ClassifierDataConfig(format="voc", root=str(tmp_path), classes=BCCD_CLASSES, crop_context=context)
    crops = load_crop_set(dcfg, "test", split_name="two")
    expected = [c for i in ids for c in _hand_crops(bccd_root, i, context)]
    assert len(crops) == len(expected) > 30
    for k, (label, ref) in enumerate(expected):
        assert crops.labels[k] == label
        np.testing.assert_array_equal(crops.crops[k], ref)


def test_image_folder_reading(tmp_path):
    rng = np.random.default_rng(0)
    written = {}
    for cls, n in (("cat", 2), ("dog", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            img = rng.integers(0, 256, size=(10 + i, 20 + 3 * i, 3), dtype=np.uint8)
            path = tmp_path / cls / f"{i}.png"
            cv2.imwrite(str(path), img[:, :, ::-1])  # RGB on disk
            written[str(path)] = (cls, img)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    samples, names = image_folder_samples(tmp_path)
    assert names == ["cat", "dog"]
    assert [s.label for s in samples] == [0, 0, 1, 1, 1]
    crops = CropSet(samples, names)
    for s, crop in zip(samples, crops.crops):
        cls, img = written[s.path]
        assert names[s.label] == cls
        np.testing.assert_array_equal(crop, img)
    # a fixed class order from the config wins over the sorted folder names
    assert [s.label for s in image_folder_samples(tmp_path, ["dog", "cat"])[0]] == [0, 0, 0, 1, 1]


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="image folder not found"):
        image_folder_samples(tmp_path / "nope")
    (tmp_path / "bird").mkdir()
    with pytest.raises(DataError, match="no images"):
        image_folder_samples(tmp_path)
    with pytest.raises(DataError, match="not one of the classes"):
        image_folder_samples(tmp_path, ["cat"])
