"""What ``tools/data.py`` needs: a dataset read with its problems listed, and its ground truth drawn."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import cv2

from ..errors import DataError
from ..fileio import atomic_write, make_output_dir
from ..visualize import draw_detections
from .coco import coco_class_counts, load_coco
from .dataset import DetectionDataset
from .image_io import read_image
from .voc import check_voc


def load_for_check(
    root: Path, images: Optional[str] = None, class_names: Optional[Sequence[str]] = None
) -> Tuple[DetectionDataset, List[str]]:
    """A VOC-style folder (:func:`~sppdet.data.voc.check_voc`) or a COCO json (images in
    ``images``, else beside the json), and one line per problem found."""
    if root.is_file() and root.suffix.lower() == ".json":
        names = list(class_names) if class_names else coco_class_counts(root)[1]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = load_coco(root, Path(images) if images else root.parent, class_names=names, skip_missing=True)
        problems = [str(w.message) for w in caught]
        if ds.meta["issues"].get("clipped_boxes"):
            problems.append(f"{ds.meta['issues']['clipped_boxes']} box(es) cross the image border (clipped)")
        return ds, problems
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder or COCO json")
    return check_voc(root, class_names)


def draw_ground_truth(dataset: DetectionDataset, out: Union[str, Path], limit: int = 50) -> int:
    """Write ``out/<image id>.jpg`` with each record's boxes and class names drawn; returns the count."""
    out = make_output_dir(out, "--out")
    records = dataset.records[:limit] if limit > 0 else dataset.records
    for r in records:
        image = read_image(r.file_name)
        vis = draw_detections(image, r.boxes, r.labels.tolist(), [-1.0] * r.num_objects, dataset.class_names)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(vis, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise DataError(f"{r.file_name}: could not encode the drawn image")
        with atomic_write(Path(out) / f"{Path(r.image_id).name}.jpg", "wb") as f:
            f.write(buf.tobytes())
    return len(records)
