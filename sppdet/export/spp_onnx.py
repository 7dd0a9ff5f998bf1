"""Region SPP as traceable tensor ops: exports to ONNX (``MaxRoiPool``) and TorchScript.

:func:`sppdet.layers.spp.roi_spp` (max mode) projects each window to inclusive feature cells
(SPP-net Appendix A) and max-pools each pyramid level with exact integer bins
``[x1' + floor(i*a/n), x1' + ceil((i+1)*a/n))`` through sparse tables and autograd Functions,
which a tracer cannot follow. Here the same projection is plain float64 tensor ops, and each
level that divides no finer level is one ``torchvision.ops.roi_pool`` on the projected cells
(``spatial_scale=1``; the other levels are max-reduced from a finer grid, as ``roi_spp`` does): with
integer cell boxes its bins are ``floor(i * (a/n))`` .. ``ceil((i+1) * (a/n))`` with ``a/n``
rounded to float32, which equals the exact rule for every level this module accepts
(:func:`check_levels` verifies it for every window size up to the largest map; it fails first
for ``n = 7``, ``a = 57``). ONNX Runtime's ``MaxRoiPool`` computes the same float32 bins.

Windows of several images or scales are pooled from one stacked map ``(S, C, H, W)``: each
window carries the index of its map and that map's true size, so cells are clamped to the
map's own extent and padding is never read.

Shape shorthand: R windows, S maps, C channels, L = C * sum(n*n).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torchvision.ops import roi_pool


def project_cells(boxes: Tensor, stride: float, offset: float, feat_h: Tensor, feat_w: Tensor) -> Tensor:
    """Inclusive cells ``(R, 4)`` int64 ``(x1', y1', x2', y2')`` of ``boxes (R, 4)`` (x1, y1, x2, y2
    in the map's input pixels); ``feat_h``, ``feat_w``: ``(R,)`` sizes of each window's map.

    Same rule as :func:`sppdet.layers.spp.project_rois`: ``x1' = floor((x1 - offset)/stride) + 1``,
    ``x2' = ceil((x2 - offset)/stride) - 1`` in float64; an empty axis becomes the cell nearest
    the centre; then clamped to ``[0, size - 1]``.
    """
    r = boxes.to(torch.float64)
    out = []
    for lo, hi, size in ((r[:, 0], r[:, 2], feat_w), (r[:, 1], r[:, 3], feat_h)):
        a = torch.floor((lo - offset) / stride) + 1
        b = torch.ceil((hi - offset) / stride) - 1
        centre = torch.floor(((lo + hi) / 2 - offset) / stride + 0.5)
        empty = b < a
        top = (size - 1).to(torch.float64)
        zero = torch.zeros_like(a)
        a = torch.minimum(torch.maximum(torch.where(empty, centre, a), zero), top)
        b = torch.minimum(torch.maximum(torch.where(empty, centre, b), zero), top)
        out.append((a, b))
    (x1, x2), (y1, y2) = out
    return torch.stack([x1, y1, x2, y2], 1).to(torch.int64)


def roi_spp_traceable(
    features: Tensor,
    map_index: Tensor,
    boxes: Tensor,
    map_h: Tensor,
    map_w: Tensor,
    levels: Sequence[int],
    stride: float,
    offset: float,
) -> Tensor:
    """Max region SPP ``(R, L)`` of ``boxes (R, 4)`` (x1, y1, x2, y2, in the pixels of the input
    of map ``map_index[r]``) on ``features (S, C, H, W)``; ``map_h``, ``map_w``: ``(R,)`` true
    size of each window's map (``<= H, W``). Equals ``roi_spp(features[s:s+1], ...)`` window by
    window for levels accepted by :func:`check_levels`. Layout as ``roi_spp``: level by level,
    each ``(C, n, n)`` flattened."""
    cells = project_cells(boxes, stride, offset, map_h, map_w)
    rois = torch.cat([map_index.to(torch.int64).unsqueeze(1), cells], 1).to(features.dtype)
    grids: Dict[int, Tensor] = {}
    for n, src in plan_levels(levels).items():  # finest first
        if src is None:
            grids[n] = roi_pool(features, rois, (n, n), 1.0)
        else:  # a level-n bin is the union of r x r level-(n*r) bins: max over each block
            r = src // n
            grids[n] = grids[src].unflatten(3, (n, r)).unflatten(2, (n, r)).amax(dim=(3, 5))
    return torch.cat([grids[n].flatten(1) for n in levels], 1)


def plan_levels(levels: Sequence[int]) -> Dict[int, Optional[int]]:
    """Level -> the finer level it is max-reduced from, or ``None`` = pooled directly; finest
    first. A level-``m`` bin is exactly the union of the level-``k*m`` bins ``k*i .. k*i+k-1``
    (:mod:`sppdet.layers.spp`, "Binning"), so ``(6, 3, 2, 1)`` needs one ``roi_pool``, at 6."""
    plan: Dict[int, Optional[int]] = {}
    for n in sorted(set(int(v) for v in levels), reverse=True):
        finer = [s for s in plan if s % n == 0]
        plan[n] = min(finer) if finer else None
    return plan


def _exact_bins(a: Tensor, n: int) -> Tuple[Tensor, Tensor]:
    i = torch.arange(n, dtype=torch.int64)
    return (i * a.unsqueeze(1)) // n, ((i + 1) * a.unsqueeze(1) + n - 1) // n


def check_levels(levels: Sequence[int], max_cells: int) -> Tuple[int, ...]:
    """The levels ``n`` whose float32 ``roi_pool`` bins differ from the exact rule for some
    window of ``1..max_cells`` cells (empty: all exportable)."""
    a = torch.arange(1, max_cells + 1, dtype=torch.int64)
    bad = []
    for n in sorted(set(int(v) for v in levels)):
        size = a.to(torch.float32).unsqueeze(1) / float(n)  # roi_pool's bin size, float32
        i = torch.arange(n, dtype=torch.float32)
        start = torch.floor(i * size).to(torch.int64)
        end = torch.ceil((i + 1) * size).to(torch.int64)
        ref_start, ref_end = _exact_bins(a, n)
        if not (torch.equal(start, ref_start) and torch.equal(end, ref_end)):
            bad.append(n)
    return tuple(bad)


def roi_spp_one_map(features: Tensor, boxes: Tensor, levels: Sequence[int], stride: float, offset: float) -> Tensor:
    """:func:`roi_spp_traceable` for windows ``(R, 4)`` all on the one map ``features (1, C, H, W)``
    (``roi_spp(features, [0, *box])`` per window); ``R`` stays dynamic when traced."""
    num = boxes.shape[0]
    size = torch._shape_as_tensor(features)
    index = torch.zeros_like(boxes[:, 0])
    return roi_spp_traceable(features, index, boxes, size[2].expand(num), size[3].expand(num), levels, stride, offset)
