"""Differentiable region max-SPP for training: one ``roi_pool`` with argmax, a scatter backward.

The pyramid's bins nest: with bin ``i`` of level ``n`` over ``a`` cells spanning
``[floor(i*a/n), ceil((i+1)*a/n))``, the bins ``k*i .. k*i+k-1`` of level ``k*n`` cover
exactly bin ``i`` of level ``n`` (their union starts at ``floor(k*i*a/(k*n))`` and ends at
``ceil((k*i+k)*a/(k*n))``, with no gap between neighbours). So a level that divides a finer
one is the max over ``k x k`` blocks of the finer grid, and its maximising cell is one of the
finer grid's. Only the levels that divide no finer level (for ``{6, 3, 2, 1}``: 6) are pooled
from the map, by torchvision's ``roi_pool`` kernel (which also returns each bin's maximising
cell); the others are block maxima of those grids.

Backward: the coarser levels' gradients flow back into the finest grid through
``max_pool2d``/``amax`` (autograd), and the finest grid's go to their maximising cells (the
max subgradient) in one ``index_add_`` into the flat map: one kernel call instead of a
``roi_pool`` backward pass per level. Used by :func:`sppdet.layers.spp.roi_spp` where
``roi_pool``'s bins are the paper's (``roi_pool_bins_match``); same outputs as one ``roi_pool``
per level, and the same gradients up to the choice among tied maxima.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
import torchvision  # noqa: F401  (registers torch.ops.torchvision)
from torch import Tensor
from torch.autograd.function import once_differentiable


def level_sources(levels: Tuple[int, ...]) -> Dict[int, Optional[int]]:
    """Level -> the finer level it is a block maximum of, or None (pooled from the map).
    Finest first; a level reads the smallest finer level that it divides."""
    plan: Dict[int, Optional[int]] = {}
    for n in sorted(set(levels), reverse=True):
        finer = [s for s in plan if s % n == 0]
        plan[n] = min(finer) if finer else None
    return plan


class RoIPoolArgmax(torch.autograd.Function):
    """``apply(features (N, C, H, W), boxes (K, 5), n)`` -> ``(K, C, n, n)``: torchvision's
    ``roi_pool`` forward kernel (``spatial_scale = 1``: ``boxes`` hold inclusive feature cells
    ``(batch index, x1', y1', x2', y2')``), and a backward that is one ``index_add_`` of the
    output gradient into each bin's maximising cell."""

    @staticmethod
    def forward(ctx, features: Tensor, boxes: Tensor, n: int) -> Tensor:
        out, arg = torch.ops.torchvision.roi_pool(features, boxes, 1.0, n, n)
        N, C, H, W = features.shape
        plane = boxes[:, 0].long().mul(C).view(-1, 1) + torch.arange(C, device=features.device).view(1, -1)
        flat = arg.view(len(boxes), C, n * n).long().add_(plane.mul_(H * W).unsqueeze(-1))  # cell in the flat map
        ctx.save_for_backward(flat)
        ctx.feature_shape = features.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        (flat,) = ctx.saved_tensors
        N, C, H, W = ctx.feature_shape
        grad = grad_out.new_zeros(N * C * H * W)
        grad.index_add_(0, flat.view(-1), grad_out.reshape(-1))
        return grad.view(N, C, H, W), None, None


def roi_spp_max_train(features: Tensor, batch: Tensor, cells: Tensor, levels: Tuple[int, ...]) -> Tensor:
    """Differentiable max pyramid of the windows ``cells (K, 4)`` (inclusive feature cells,
    int64) of images ``batch (K,)``: see the module docstring."""
    boxes = torch.cat([batch.unsqueeze(1), cells], 1).to(features.dtype)
    grids: Dict[int, Tensor] = {}
    for n, src in level_sources(levels).items():
        if src is None:
            grids[n] = RoIPoolArgmax.apply(features, boxes, n)
        elif n == 1:  # max (not amax): a tie's gradient goes to the first cell, not split
            grids[n] = grids[src].flatten(2).max(-1)[0]
        else:  # block maxima of the finer grid (autograd routes their gradient to its bins)
            grids[n] = F.max_pool2d(grids[src], src // n, src // n)
    return torch.cat([grids[n].flatten(1) for n in levels], 1)
