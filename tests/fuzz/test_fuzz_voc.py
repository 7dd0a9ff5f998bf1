"""Fuzz the PASCAL VOC reader: mutated real BCCD annotation XML and split files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fuzz_kit import TIERS, expect_clean, file_mutations, run_fuzz, shared

from sppdet.data.voc import load_voc

CLASSES = ["RBC", "WBC", "Platelets"]
IMAGE_ID = "BloodImage_00000"


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    """A one-image VOC root holding a real BCCD annotation and its image."""
    src = shared("bccd", "VOC")
    root = tmp_path_factory.mktemp("voc")
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    shutil.copy(src / "JPEGImages" / f"{IMAGE_ID}.jpg", root / "JPEGImages")
    (root / "ImageSets/Main/val.txt").write_text(IMAGE_ID + "\n")
    return root


def check_dataset(ds) -> None:
    """What a loaded dataset promises: finite boxes inside the image, labels in 1..K."""
    for rec in ds:
        boxes = np.asarray(rec.boxes, dtype=np.float64).reshape(-1, 4)
        assert np.isfinite(boxes).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= rec.width).all() and (boxes[:, [1, 3]] <= rec.height).all()
        assert all(1 <= int(k) <= len(ds.class_names) for k in rec.labels)


def _load_xml(root: Path, data: bytes) -> None:
    xml = root / "Annotations" / f"{IMAGE_ID}.xml"
    xml.write_bytes(data)
    ds = expect_clean(lambda: load_voc(root, split="val", class_names=CLASSES), [xml.name, "JPEGImages"])
    if ds is not None:
        check_dataset(ds)


@pytest.mark.parametrize("tier", TIERS)
def test_voc_xml_mutations(tier, voc_root):
    original = shared("bccd", "VOC", "Annotations", f"{IMAGE_ID}.xml").read_bytes()
    run_fuzz(tier, 60, file_mutations(original), lambda data: _load_xml(voc_root, data))


@pytest.mark.parametrize("tier", TIERS)
def test_voc_split_file_mutations(tier, voc_root):
    shutil.copy(shared("bccd", "VOC", "Annotations", f"{IMAGE_ID}.xml"), voc_root / "Annotations")
    split = voc_root / "ImageSets/Main/val.txt"

    def check(data: bytes) -> None:
        split.write_bytes(data)
        ds = expect_clean(lambda: load_voc(voc_root, split="val", class_names=CLASSES), [split.name])
        if ds is not None:
            check_dataset(ds)

    try:
        run_fuzz(tier, 25, file_mutations(f"{IMAGE_ID}\n".encode()), check)
    finally:
        split.write_text(IMAGE_ID + "\n")


# Regression cases found by the fuzzer (kept explicit so they run on every change).
@pytest.mark.parametrize(
    "data",
    [
        pytest.param(f"{IMAGE_ID}\n".encode("utf-16"), id="split-utf16-bom"),
        pytest.param(f"{IMAGE_ID}\xff\n".encode("latin-1"), id="split-invalid-utf8"),
    ],
)
def test_voc_split_regressions(voc_root, shared_data, data):
    shutil.copy(shared("bccd", "VOC", "Annotations", f"{IMAGE_ID}.xml"), voc_root / "Annotations")
    split = voc_root / "ImageSets/Main/val.txt"
    split.write_bytes(data)
    try:
        expect_clean(lambda: load_voc(voc_root, split="val", class_names=CLASSES), [split.name])
    finally:
        split.write_text(IMAGE_ID + "\n")
