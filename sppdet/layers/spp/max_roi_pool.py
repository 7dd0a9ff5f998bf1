"""Differentiable region max-SPP through torchvision's ``roi_pool``, where its bins are ours."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor
from torchvision.ops import roi_pool

from .common import bin_edges

# -- max, differentiable: torchvision's roi_pool on the projected cells ------------------
#
# Given inclusive cells (x1', y1', x2', y2') and spatial_scale 1, ``roi_pool`` bins an axis of
# a = x2' - x1' + 1 cells as [x1' + floor(i * (a/n)), x1' + ceil((i+1) * (a/n))), the rule above,
# except that a/n and the products are rounded to the feature dtype: for some (a, n) (first
# n = 7, a = 57 in float32; never for n in 1..6, 8, 9, 10, 12 up to a = 4000) the last bin then
# ends one cell late. Its forward + backward are faster than the rank-key path below (CPU,
# 256 windows on a 64 x 40 x 54 map: 18 vs 67 ms; ``tools/benchmark.py spp`` times both), so
# training uses it whenever its bins are ours exactly.

ROI_POOL_DTYPES = (torch.float32, torch.float64)


def roi_pool_bins_match(cells: Tensor, levels: Tuple[int, ...], dtype: torch.dtype) -> bool:
    """Whether torchvision ``roi_pool`` in ``dtype`` bins every window of ``cells`` as we do."""
    if dtype not in ROI_POOL_DTYPES:
        return False
    for first, last in ((cells[:, 0], cells[:, 2]), (cells[:, 1], cells[:, 3])):
        a = torch.unique(last - first + 1)
        for n in set(levels):
            i = torch.arange(n + 1, device=a.device).to(dtype)
            size = a.to(dtype).unsqueeze(1) / n  # roi_pool's bin size, in the feature dtype
            ours = bin_edges(torch.zeros_like(a), a - 1, n)  # exact, on cells 0..a-1
            if not (
                torch.equal(torch.floor(i[:-1] * size).long(), ours[0])
                and torch.equal(torch.ceil(i[1:] * size).long(), ours[1])
            ):
                return False
    return True


def roi_spp_max_roi_pool(features: Tensor, batch: Tensor, cells: Tensor, levels: Tuple[int, ...]) -> Tensor:
    """Differentiable max pyramid: one ``roi_pool`` per level on the projected cells."""

    boxes = torch.cat([batch.unsqueeze(1), cells], 1).to(features.dtype)
    return torch.cat([roi_pool(features, boxes, (n, n), 1.0).flatten(1) for n in levels], 1)
