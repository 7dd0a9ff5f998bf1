"""Differentiable region max-SPP on value ranks, with a scatter backward."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from ...utils.memory import new_buffer
from .max_tables import roi_spp_max

#
# Autograd through the sparse tables would keep every table level alive and replay each
# maximum backwards (seconds per training step). Instead each map (image, channel) is sorted
# once and every cell replaced by its rank, an integer key that orders like the value and is
# unique per map: the same fast pyramid run on the keys gives, for every output, the cell
# holding its maximum. The backward pass is one ``index_add_`` of the output gradient into
# those cells (the max subgradient; among equal values the first cell in row-major order).


def _output_channels(C: int, levels: Tuple[int, ...], device: torch.device) -> Tensor:
    """Channel of every output column ``(L,)`` in the public layout."""
    return torch.cat([torch.arange(C, device=device).repeat_interleave(n * n) for n in levels])


def _max_keys(features: Tensor) -> Tuple[Tensor, Tensor]:
    """Rank keys ``(N, C, H, W)`` (int32) and ``cell_of (N*C*H*W,)``: the flat index into
    ``features`` of the cell holding key ``k`` of map ``r`` is ``cell_of[r*H*W + k]``."""
    N, C, H, W = features.shape
    HW = H * W
    # Key of a cell = its position in the ascending sort: larger value -> larger key. Sorting
    # the cells in reverse (stable) ranks the first of equal values (row-major) highest.
    flipped = features.detach().reshape(N * C, HW).flip(1)
    order = torch.sort(flipped, dim=1, stable=True).indices.neg_().add_(HW - 1)  # cell at each position
    keys = torch.empty_like(order).scatter_(1, order, torch.arange(HW, device=features.device).expand(N * C, HW))
    cell_of = order.add_(torch.arange(0, N * C * HW, HW, device=features.device).view(-1, 1)).view(-1)
    return keys.to(torch.int32 if HW < 2**31 else torch.int64).view(N, C, H, W), cell_of


class RoISPPMax(torch.autograd.Function):
    """Region max-SPP with a scatter backward (see the section comment above)."""

    @staticmethod
    def forward(ctx, features: Tensor, batch: Tensor, cells: Tensor, levels: Tuple[int, ...]) -> Tensor:
        """Max pyramid of ``features``; saves the winning rank keys for the backward pass."""
        keys, cell_of = _max_keys(features)
        best = roi_spp_max(keys, batch, cells, levels)  # (K, L) winning keys
        ctx.save_for_backward(best, cell_of, batch)
        ctx.levels, ctx.feature_shape = levels, features.shape
        return roi_spp_max(features.detach(), batch, cells, levels)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        """Scatter the output gradient into the cells that held each maximum."""
        best, cell_of, batch = ctx.saved_tensors
        N, C, H, W = ctx.feature_shape
        pos = new_buffer(cell_of, tuple(best.shape))
        torch.add((batch * (C * H * W)).view(-1, 1), _output_channels(C, ctx.levels, batch.device) * (H * W), out=pos)
        cells = torch.index_select(cell_of, 0, pos.add_(best).view(-1), out=new_buffer(cell_of, (pos.numel(),)))
        grad = grad_out.new_zeros(N * C * H * W)
        grad.index_add_(0, cells, grad_out.reshape(-1))
        return grad.view(ctx.feature_shape), None, None, None
