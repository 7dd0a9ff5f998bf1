"""Classify image files with a trained classifier: whole images at the test size/scale."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Sequence, Tuple, Union

import torch

from ..data.image_io import read_image
from ..errors import DataError
from .config import ClassifierInputConfig
from .data import IMAGE_EXTS
from .model import SPPClassifier
from .sizes import Batch, make_batch, native_size

PathLike = Union[str, os.PathLike]


def expand_inputs(inputs: Sequence[PathLike]) -> List[Path]:
    """Files as given, folders as their image files (recursive, sorted); a missing path is a DataError."""
    files: List[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise DataError(f"{p}: no image files in this folder")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return files


@torch.no_grad()
def predict_files(
    model: SPPClassifier,
    class_names: Sequence[str],
    icfg: ClassifierInputConfig,
    files: Sequence[PathLike],
    topk: int = 3,
    device: Any = "cpu",
) -> List[Tuple[str, List[Tuple[str, float]]]]:
    """Per file its ``topk`` ``(class, probability)`` pairs, most likely first."""
    model.eval()
    k = max(1, min(topk, len(class_names)))
    results = []
    for f in files:
        image = read_image(f, icfg.max_image_pixels or None)
        h, w = image.shape[:2]
        size = (icfg.test_size, icfg.test_size) if icfg.mode == "warp" else native_size(h, w, icfg.test_scale, icfg)
        probs = torch.softmax(model(make_batch([image], Batch((0,), size)).to(device)), 1)[0].cpu()
        top = torch.topk(probs, k)
        results.append((str(f), [(class_names[int(i)], float(p)) for p, i in zip(top.values, top.indices)]))
    return results
