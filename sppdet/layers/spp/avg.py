"""Region average-SPP from a float64 summed-area table (differentiable)."""

from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...utils.memory import new_buffer
from .common import bin_edges, cat_levels, chunk_size, pyramid_length, write_levels


def _sat_lookups(batch: Tensor, cells: Tensor, n: int, H: int, W: int) -> Tuple[Tensor, Tensor]:
    """Rows ``(K, n*n, 4)`` into the flattened summed-area table and float64 weights
    ``(+1, -1, -1, +1) / area`` whose weighted sum is each bin's mean."""
    xs, xe = bin_edges(cells[:, 0], cells[:, 2], n)
    ys, ye = bin_edges(cells[:, 1], cells[:, 3], n)
    x = torch.stack([xe, xs, xe, xs], -1)  # (K, n, 4), paired with the rows below
    y = torch.stack([ye, ye, ys, ys], -1)
    rows = (batch.view(-1, 1, 1, 1) * (H + 1) + y[:, :, None]) * (W + 1) + x[:, None, :]  # (K, i, j, 4)
    area = ((ye - ys)[:, :, None] * (xe - xs)[:, None, :]).to(torch.float64)
    sign = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64, device=cells.device)
    weights = sign / area.unsqueeze(-1)
    return rows.reshape(len(batch), n * n, 4), weights.reshape(len(batch), n * n, 4)


def roi_spp_avg(features: Tensor, batch: Tensor, cells: Tensor, levels: Tuple[int, ...]) -> Tensor:
    """Average pyramid from a float64 summed-area table: each bin is 4 weighted lookups fused
    in one ``embedding_bag`` per level. Differentiable; without autograd, RoIs are processed
    in chunks written straight into the output."""
    N, C, H, W = features.shape
    K = len(batch)
    sat = features.permute(0, 2, 3, 1).to(torch.float64).cumsum(1).cumsum(2)
    sat = F.pad(sat, (0, 0, 1, 0, 1, 0)).reshape(-1, C)  # (N*(H+1)*(W+1), C), zero first row/col
    lookups = {n: _sat_lookups(batch, cells, n, H, W) for n in set(levels)}

    def chunk(start: int, stop: int) -> Dict[int, Tensor]:
        grids = {}
        for n, (rows, weights) in lookups.items():
            mean = F.embedding_bag(
                rows[start:stop].reshape(-1, 4), sat, per_sample_weights=weights[start:stop].reshape(-1, 4), mode="sum"
            )
            grids[n] = mean.to(features.dtype).view(stop - start, n, n, C)
        return grids

    if torch.is_grad_enabled() and features.requires_grad:
        return cat_levels(chunk(0, K), levels)
    out = new_buffer(features, (K, pyramid_length(C, levels)))
    step = chunk_size(features, K, 2 * 8 * C * sum(n * n for n in lookups))
    for start in range(0, K, step):
        write_levels(out, chunk(start, min(K, start + step)), levels, start, min(K, start + step))
    return out
