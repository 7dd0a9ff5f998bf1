"""Region max-SPP without autograd: 2-D sparse tables, RoIs in chunks.

A level-``m`` bin is the union of the level-``k*m`` bins ``k*i .. k*i+k-1``, so coarser levels
are reduced from a finer grid; the levels that divide no finer one are read from the tables.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ...utils.memory import new_buffer
from .common import bin_edges, chunk_size, pyramid_length, write_levels


def plan_levels(levels: Tuple[int, ...]) -> Dict[int, Optional[int]]:
    """Max pooling: level -> the finer level it is reduced from, or ``None`` = computed
    directly. Finest first; each level reads the smallest finer level that it divides."""
    plan: Dict[int, Optional[int]] = {}
    for n in sorted(set(levels), reverse=True):
        finer = [s for s in plan if s % n == 0]
        plan[n] = min(finer) if finer else None
    return plan


# -- max: sparse tables ----------------------------------------------------------------
#
# T[kx, ky][y, x] = max of the map over rows [y, y + 2^ky) and columns [x, x + 2^kx). A bin of
# rows [ys, ye) and columns [xs, xe) with ky = floor(log2(ye - ys)), kx = floor(log2(xe - xs))
# is covered exactly by four such (overlapping) windows, at rows {ys, ye - 2^ky} and columns
# {xs, xe - 2^kx}: every bin costs 4 row gathers of C channels whatever its size.


def _floor_log2(v: Tensor) -> Tensor:
    return torch.frexp(v.to(torch.float64))[1].long() - 1


def _max_tables(features: Tensor, kx_count: int, ky_count: int) -> Tensor:
    """Sparse tables ``(N, KX, KY, H, W, C)``, channels last, filled in place (no autograd).

    Only entries whose window fits in the map are meaningful; the others are never read and
    are left uninitialised.
    """
    N, C, H, W = features.shape
    t = new_buffer(features, (N, kx_count, ky_count, H, W, C))
    t[:, 0, 0].copy_(features.permute(0, 2, 3, 1))
    for k in range(1, kx_count):
        s, src = 1 << (k - 1), t[:, k - 1, 0]
        torch.maximum(src[:, :, : W - s], src[:, :, s:], out=t[:, k, 0, :, : W - s])
    for k in range(1, ky_count):  # all column widths at once
        s, src = 1 << (k - 1), t[:, :, k - 1]
        torch.maximum(src[:, :, : H - s], src[:, :, s:], out=t[:, :, k, : H - s])
    return t


def _table_depth(size: int, levels: Sequence[int]) -> int:
    """Number of power-of-two window sizes needed on an axis of ``size`` cells: a bin of level
    ``n`` is at most ``min(size, ceil(size/n) + 1)`` cells long."""
    longest = max(min(size, -(-size // n) + 1) for n in levels)
    return longest.bit_length()


def _corner_rows(batch: Tensor, cells: Tensor, n: int, shape: Tuple[int, int, int, int]) -> Tensor:
    """Flat table rows ``(K, 4, n*n)`` of the four windows covering each bin of level ``n``."""
    kx_count, ky_count, H, W = shape
    xs, xe = bin_edges(cells[:, 0], cells[:, 2], n)
    ys, ye = bin_edges(cells[:, 1], cells[:, 3], n)
    kx, ky = _floor_log2(xe - xs), _floor_log2(ye - ys)
    x = torch.stack([xs, xe - torch.pow(2, kx)], 1)  # (K, 2, n): bin column j
    y = torch.stack([ys, ye - torch.pow(2, ky)], 1)  # (K, 2, n): bin row i
    table = (batch.view(-1, 1, 1) * kx_count + kx.unsqueeze(1)) * ky_count + ky.unsqueeze(2)  # (K, i, j)
    rows = (table[:, None, None] * H + y[:, :, None, :, None]) * W + x[:, None, :, None, :]  # (K, 2, 2, i, j)
    return rows.reshape(len(batch), 4, n * n)


def _max_over(t: Tensor, dim: int) -> Tensor:
    return torch.maximum(t.select(dim, 0), t.select(dim, 1)) if t.shape[dim] == 2 else t.amax(dim)


def _reduce_grid(grid: Tensor, n: int, m: int) -> Tensor:
    """Level ``m`` from level ``n`` (``n % m == 0``) by max: ``(B, n, n, C) -> (B, m, m, C)``."""
    B, C, r = grid.shape[0], grid.shape[-1], n // m
    q = _max_over(grid.reshape(B * n * m, r, C), 1)  # columns: (B, n, m, C)
    return _max_over(q.reshape(B * m, r, m * C), 1).reshape(B, m, m, C)  # rows


def _max_chunk(
    table: Tensor,
    corners: Dict[int, Tensor],
    plan: Dict[int, Optional[int]],
    buffers: Dict[int, Tuple[Tensor, Tensor]],
    start: int,
    stop: int,
) -> Dict[int, Tensor]:
    """Every level ``(B, n, n, C)`` (channels last) for RoIs ``start:stop``; ``buffers`` holds,
    per directly computed level, preallocated gather and grid tensors."""
    C, B = table.shape[1], stop - start
    grids: Dict[int, Tensor] = {}
    for n, src in plan.items():  # finest first
        if src is not None:
            grids[n] = _reduce_grid(grids[src], src, n)
            continue
        gathered, grid = buffers[n][0][: B * 4 * n * n], buffers[n][1][:B]
        torch.index_select(table, 0, corners[n][start:stop].reshape(-1), out=gathered)
        torch.amax(gathered.view(B, 4, n * n, C), 1, out=grid.view(B, n * n, C))
        grids[n] = grid
    return grids


def roi_spp_max(features: Tensor, batch: Tensor, cells: Tensor, levels: Tuple[int, ...]) -> Tensor:
    """Max pyramid without autograd: in-place tables, RoIs in chunks written straight into the
    output (the differentiable twin is :class:`RoISPPMax`)."""
    N, C, H, W = features.shape
    K = len(batch)
    plan = plan_levels(levels)
    direct = [n for n, src in plan.items() if src is None]
    shape = (_table_depth(W, direct), _table_depth(H, direct), H, W)
    table = _max_tables(features, shape[0], shape[1]).reshape(-1, C)
    corners = {n: _corner_rows(batch, cells, n, shape) for n in direct}
    out = new_buffer(features, (K, pyramid_length(C, levels)))
    per_roi = 4 * sum(n * n for n in direct) * C * features.element_size()
    chunk = chunk_size(features, K, per_roi)
    buffers = {
        n: (new_buffer(features, (chunk * 4 * n * n, C)), new_buffer(features, (chunk, n, n, C))) for n in direct
    }
    for start in range(0, K, chunk):
        stop = min(K, start + chunk)
        write_levels(out, _max_chunk(table, corners, plan, buffers, start, stop), levels, start, stop)
    return out
