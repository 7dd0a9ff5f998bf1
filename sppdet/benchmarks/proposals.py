"""Proposal benchmark: generator speed on one core, and random access into a large store.

``python tools/benchmark.py proposals [--repeat N]`` times, on the real 500 x 375 VOC photo
``../shared/data/voc07-demo/001551.jpg`` with OpenCV limited to one thread:

* Selective Search "fast" (R-CNN settings, ``max_side`` 500) and EdgeBoxes (gradient edges),
  wall-clock (interleaved rounds, median) and CPU seconds (``time.process_time``, median);
* reading one image's boxes from a 1,000-image x 2,000-box native store (open + one ``get``).

The goals are in docs/benchmarks.md (compare them with ``wall_min_s``, the fastest round,
least disturbed by other load). Recall is measured with ``tools/proposals.py recall`` (it
needs a dataset and minutes of compute).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np

from ..errors import SppdetError
from . import time_interleaved

DEMO_IMAGE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "voc07-demo" / "001551.jpg"


def _cpu_seconds(fn, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        runs.append(time.process_time() - start)
    return round(statistics.median(runs), 3)


def _store_access(num_images: int = 1000, boxes_per_image: int = 2000) -> Dict[str, Any]:
    from ..proposals.store import ProposalStore, save_proposals

    rng = np.random.default_rng(0)
    ids = [f"{i:06d}" for i in range(num_images)]
    boxes = [rng.uniform(0, 500, (boxes_per_image, 4)).astype(np.float32) for _ in ids]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.npz"
        save_proposals(path, ids, boxes)
        start = time.perf_counter()
        store = ProposalStore(path)
        opened = time.perf_counter()
        store.get(ids[num_images // 2])
        got = time.perf_counter()
        for i in ids[:200]:
            store.get(i)
        per_get = (time.perf_counter() - got) / 200
        size_mb = path.stat().st_size / 1e6
    return {
        "images": num_images,
        "boxes_per_image": boxes_per_image,
        "file_mb": round(size_mb, 1),
        "open_ms": round((opened - start) * 1000, 2),
        "first_get_ms": round((got - opened) * 1000, 3),
        "get_ms": round(per_get * 1000, 4),
    }


def run(args: Any) -> Dict[str, Any]:
    """Time the generators on the demo photo (one OpenCV thread) and store access."""
    import cv2

    from ..config import ProposalConfig
    from ..data.image_io import read_image
    from ..proposals.build import compute_proposals

    repeat = int(getattr(args, "repeat", 5) or 5)
    if not DEMO_IMAGE.is_file():
        raise SppdetError(f"{DEMO_IMAGE}: benchmark image not found (../shared/data/voc07-demo)")
    image = read_image(DEMO_IMAGE)
    cfg = ProposalConfig(max_side=500, max_per_image=2000)
    old_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        fns = {m: (lambda m=m: compute_proposals(image, m, cfg)) for m in ("ss-fast", "edgeboxes")}
        wall = time_interleaved(fns, repeat=repeat)
        cpu = {m: _cpu_seconds(fn, max(1, repeat // 2)) for m, fn in fns.items()}
        counts = {m: int(len(fn()[0])) for m, fn in fns.items()}
    finally:
        cv2.setNumThreads(old_threads)
    generators = {
        m: {
            "wall_median_s": round(wall[m]["median_ms"] / 1000, 3),
            "wall_min_s": round(wall[m]["min_ms"] / 1000, 3),
            "cpu_median_s": cpu[m],
            "boxes": counts[m],
        }
        for m in fns
    }
    return {
        "image": str(DEMO_IMAGE.name),
        "image_size": [int(image.shape[1]), int(image.shape[0])],
        "opencv_threads": 1,
        "max_side": cfg.max_side,
        "generators": generators,
        "store": _store_access(),
    }
