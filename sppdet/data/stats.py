"""Dataset statistics for ``tools/data.py check``: images, objects per class, box sizes.

Box size is ``sqrt(w * h)`` in image pixels (boxes ``(x1, y1, x2, y2)``, width ``x2 - x1``),
binned by powers of two; COCO's small / medium / large (area below 32², below 96², above)
are counted too, since detectors differ most there.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from .dataset import DetectionDataset

#: Upper edges of the box-size bins (pixels of sqrt(area)); the last bin is open.
SIZE_EDGES = (16, 32, 64, 128, 256, 512)


def dataset_summary(dataset: DetectionDataset) -> Dict:
    """Counts of ``dataset``: images, empty images, per-class images/objects, size histogram."""
    k = dataset.num_classes
    objects = np.zeros(k, dtype=np.int64)
    images = np.zeros(k, dtype=np.int64)
    sizes: List[np.ndarray] = []
    empty = 0
    for r in dataset:
        if r.num_objects == 0:
            empty += 1
            continue
        labels = np.asarray(r.labels) - 1
        np.add.at(objects, labels, 1)
        images[np.unique(labels)] += 1
        wh = r.boxes[:, 2:] - r.boxes[:, :2]
        sizes.append(np.sqrt(wh[:, 0] * wh[:, 1]))
    side = np.concatenate(sizes) if sizes else np.zeros(0)
    bins = np.searchsorted(np.asarray(SIZE_EDGES, dtype=np.float64), side, side="right")
    return {
        "images": len(dataset),
        "images_without_objects": empty,
        "objects": int(objects.sum()),
        "classes": {
            n: {"images": int(images[i]), "objects": int(objects[i])} for i, n in enumerate(dataset.class_names)
        },
        "size_histogram": [int((bins == b).sum()) for b in range(len(SIZE_EDGES) + 1)],
        "coco_sizes": {
            "small": int((side < 32).sum()),
            "medium": int(((side >= 32) & (side < 96)).sum()),
            "large": int((side >= 96).sum()),
        },
    }


def format_summary(summary: Dict, problems: Sequence[str]) -> str:
    """The report ``tools/data.py check`` prints."""
    lines = [
        f"images: {summary['images']} ({summary['images_without_objects']} without objects), "
        f"objects: {summary['objects']}, classes: {len(summary['classes'])}",
        "",
        f"{'class':<20} {'images':>8} {'objects':>8}",
    ]
    for name, c in summary["classes"].items():
        lines.append(f"{name:<20} {c['images']:>8} {c['objects']:>8}")
    lines += ["", "box size sqrt(w*h) in pixels:"]
    edges = (0,) + SIZE_EDGES
    total = max(1, summary["objects"])
    for b, count in enumerate(summary["size_histogram"]):
        label = f"{edges[b]}-{SIZE_EDGES[b]}" if b < len(SIZE_EDGES) else f">={SIZE_EDGES[-1]}"
        lines.append(f"  {label:>9} {count:>7}  {'#' * int(round(40 * count / total))}")
    cs = summary["coco_sizes"]
    lines.append(f"  COCO sizes: small {cs['small']}, medium {cs['medium']}, large {cs['large']}")
    lines += ["", f"problems: {len(problems)}"] + [f"  {p}" for p in problems]
    return "\n".join(lines)
