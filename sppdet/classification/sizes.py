"""Input sizes of the classifier: warped squares, native sizes in buckets, and the multi-size
schedule of the paper (section 3.1: alternate training sizes, e.g. 224 and 180).

A *batch plan* is a list of :class:`Batch` (crop indices + one ``(height, width)``): every
image of a batch is resized to that size, so the batch stacks into one tensor.

* warp: every crop is resized to a ``s x s`` square.
* native: crop ``(h, w)`` at scale ``f`` becomes ``(h*f, w*f)`` with each side rounded to a
  multiple of ``bucket_step`` (the size bucket) and kept within ``[min_side, max_side]`` (the
  longer side is capped first, keeping the aspect ratio). Crops of one bucket are batched
  together, so the distortion is at most half a bucket step per side.

Multi-size: the size (warp) or scale (native) of epoch ``e`` / batch ``b`` is
``values[e % n]`` / ``values[b % n]``, ``b`` counting batches over the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from .config import ClassifierInputConfig

Size = Tuple[int, int]


@dataclass(frozen=True)
class Batch:
    """Crop indices resized to one ``size = (height, width)``."""

    indices: Tuple[int, ...]
    size: Size


def schedule_value(icfg: ClassifierInputConfig, epoch: int, batch: int) -> Union[int, float]:
    """The training size (warp) or scale (native) of global batch ``batch`` in ``epoch``."""
    values: Sequence[Union[int, float]] = icfg.sizes if icfg.mode == "warp" else icfg.scales
    step = epoch if icfg.alternate == "epoch" else batch
    return values[step % len(values)]


def native_size(height: int, width: int, scale: float, icfg: ClassifierInputConfig) -> Size:
    """The bucket ``(height, width)`` of a native crop at ``scale`` (see the module notes)."""
    h, w = height * scale, width * scale
    longer = max(h, w)
    if longer > icfg.max_side:
        h, w = h * icfg.max_side / longer, w * icfg.max_side / longer
    step = icfg.bucket_step

    def side(v: float) -> int:
        rounded = int(round(v / step)) * step
        return int(min(max(rounded, icfg.min_side, 1), icfg.max_side))

    return side(h), side(w)


def target_sizes(sizes: np.ndarray, value: Union[int, float], icfg: ClassifierInputConfig) -> List[Size]:
    """Per crop (native ``(h, w)`` rows of ``sizes``) its input size at this size/scale."""
    if icfg.mode == "warp":
        s = int(value)
        return [(s, s)] * len(sizes)
    return [native_size(int(h), int(w), float(value), icfg) for h, w in sizes]


def bucket_batches(
    indices: Sequence[int], sizes: Sequence[Size], batch_size: int, rng: np.random.Generator | None = None
) -> List[Batch]:
    """Group ``indices`` by their size (``sizes[k]`` belongs to ``indices[k]``) into batches of
    at most ``batch_size``. With ``rng``: shuffled within buckets and in batch order;
    without: in the order given, bucket by bucket (for testing)."""
    groups: Dict[Size, List[int]] = {}
    order = rng.permutation(len(indices)) if rng is not None else np.arange(len(indices))
    for k in order:
        groups.setdefault(sizes[k], []).append(int(indices[k]))
    batches = [
        Batch(tuple(idx[i : i + batch_size]), size)
        for size, idx in groups.items()
        for i in range(0, len(idx), batch_size)
    ]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def plan_epoch(
    native: np.ndarray,
    indices: Sequence[int],
    icfg: ClassifierInputConfig,
    batch_size: int,
    epoch: int,
    first_batch: int,
    rng: np.random.Generator,
) -> List[Batch]:
    """One training epoch's batches (shuffled). With ``alternate: batch`` the buckets are made at
    the first size/scale and each batch is then resized to its own one in turn."""
    first = schedule_value(icfg, epoch, first_batch)
    batches = bucket_batches(indices, target_sizes(native[list(indices)], first, icfg), batch_size, rng)
    if icfg.alternate == "epoch" or len(icfg.sizes if icfg.mode == "warp" else icfg.scales) == 1:
        return batches
    out = []
    for b, batch in enumerate(batches):
        value = schedule_value(icfg, epoch, first_batch + b)
        if icfg.mode == "warp":
            size: Size = (int(value), int(value))
        else:  # the bucket size at the first scale, rescaled: all crops of a batch stay together
            ratio = float(value) / float(first)
            size = native_size(batch.size[0], batch.size[1], ratio, icfg)
        out.append(Batch(batch.indices, size))
    return out


def eval_batches(native: np.ndarray, icfg: ClassifierInputConfig, batch_size: int) -> List[Batch]:
    """Batches of every crop at the test size/scale, unshuffled."""
    value: Union[int, float] = icfg.test_size if icfg.mode == "warp" else icfg.test_scale
    return bucket_batches(range(len(native)), target_sizes(native, value, icfg), batch_size)


def resize(crop: np.ndarray, size: Size) -> np.ndarray:
    """``crop (h, w, 3)`` resized to ``size = (height, width)`` (area filter when shrinking)."""
    h, w = size
    if crop.shape[:2] == (h, w):
        return crop
    shrink = h * w < crop.shape[0] * crop.shape[1]
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def make_batch(crops: Sequence[np.ndarray], batch: Batch, rng: np.random.Generator | None = None) -> torch.Tensor:
    """``uint8 (B, 3, H, W)`` of the batch's crops at its size; ``rng``: random h/v flips."""
    out = np.empty((len(batch.indices), batch.size[0], batch.size[1], 3), dtype=np.uint8)
    for j, i in enumerate(batch.indices):
        im = resize(crops[i], batch.size)
        if rng is not None:
            if rng.random() < 0.5:
                im = im[:, ::-1]
            if rng.random() < 0.5:
                im = im[::-1]
        out[j] = im
    return torch.from_numpy(out).permute(0, 3, 1, 2)
