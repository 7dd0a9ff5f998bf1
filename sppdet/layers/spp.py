"""Spatial pyramid pooling: image-level SPP and region SPP (SPP-net, He et al. 2014).

Shape shorthand
---------------
``N`` images, ``C`` channels, ``H x W`` feature map, ``K`` regions, ``levels`` = the pyramid,
level ``n`` = ``n x n`` bins. Every pooled vector has ``C * sum(n * n)`` numbers laid out level
by level in the given order, each level as ``(C, n, n)`` flattened (channel-major), i.e. what
``torch.cat([p.reshape(len(p), -1) for p in per_level], 1)`` gives for ``p`` of shape
``(*, C, n, n)``.

Binning
-------
A segment of ``a`` cells starting at ``s`` is split into ``n`` bins; bin ``i`` covers cells
``[s + floor(i*a/n), s + ceil((i+1)*a/n))``. Bins are never empty (even when ``a < n``; then
cells repeat) and, over the image, this is exactly ``AdaptiveMaxPool2d``/``AdaptiveAvgPool2d``.
A level-``m`` bin is the union of the level-``k*m`` bins ``k*i .. k*i+k-1`` (their first start
is ``floor(k*i*a/(k*m)) = floor(i*a/m)``, their last end ``ceil((i+1)*a/m)``, and consecutive
bins touch or overlap), so for max pooling coarser levels are reduced from a finer grid.

Region projection (SPP-net, Appendix A)
---------------------------------------
Feature cell ``j`` is centred at image coordinate ``stride * j + offset``. A window
``(x1, y1, x2, y2)`` in image pixels maps to the inclusive cells
``x1' = floor((x1 - offset) / stride) + 1`` .. ``x2' = ceil((x2 - offset) / stride) - 1``
(same for ``y``); see :func:`project_rois`.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .spp_backward import roi_spp_max_train

__all__ = [
    "pyramid_length",
    "paper_pool_params",
    "spatial_pyramid_pool",
    "SpatialPyramidPool",
    "project_rois",
    "roi_spp",
    "RoISpatialPyramidPool",
]

_MODES = ("max", "avg")
_BINNINGS = ("adaptive", "paper")
#: Fast max path: bytes of gathered table rows per chunk of RoIs on CPU.
_CPU_CHUNK_BYTES = 24 << 20
#: CPU buffers at least this large are advised as transparent huge pages (see _new_buffer).
_HUGE_PAGE_MIN_BYTES = 4 << 20
_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14
_madvise = None  # libc madvise, resolved on first use; False where unavailable


def _check_levels(levels: Sequence[int]) -> Tuple[int, ...]:
    levels = tuple(int(n) for n in levels)
    if not levels or any(n < 1 for n in levels):
        raise ValueError(f"SPP levels must be a non-empty list of positive integers, got {levels}")
    return levels


def _check_mode(mode: str) -> str:
    if mode not in _MODES:
        raise ValueError(f"SPP mode must be one of {_MODES}, got {mode!r}")
    return mode


def pyramid_length(channels: int, levels: Sequence[int]) -> int:
    """Length ``C * sum(n * n)`` of one pooled vector."""
    return int(channels) * sum(n * n for n in _check_levels(levels))


# ---------------------------------------------------------------------------------------
# Image-level SPP


def paper_pool_params(size: int, n: int) -> Optional[Tuple[int, int]]:
    """SPP-net's pooling window for one axis: ``(win, stride) = (ceil(a/n), floor(a/n))``.

    Returns ``None`` when that rule does not give exactly ``n`` bins: ``a < n`` (stride 0) or
    ``a mod n > floor(a/n)`` (e.g. ``a=10, n=6`` gives 9 bins, ``a=11, n=4`` gives 5).
    :class:`SpatialPyramidPool` then uses adaptive binning on that axis for that level.
    """
    win, stride = -(-size // n), size // n
    if stride < 1 or (size - win) // stride + 1 != n:
        return None
    return win, stride


def _pool_axis(x: Tensor, n: int, dim: int, mode: str, binning: str) -> Tensor:
    """Pool ``x (N, C, H, W)`` to ``n`` bins along ``dim`` (2 = H, 3 = W), other axis kept."""
    params = paper_pool_params(x.shape[dim], n) if binning == "paper" else None
    if params is None:
        size = (n, None) if dim == 2 else (None, n)
        pool = F.adaptive_max_pool2d if mode == "max" else F.adaptive_avg_pool2d
        return pool(x, size)
    windows = x.unfold(dim, *params)  # (..., n, ..., win): a view
    return windows.amax(-1) if mode == "max" else windows.mean(-1)


def spatial_pyramid_pool(
    x: Tensor, levels: Sequence[int] = (4, 2, 1), mode: str = "max", binning: str = "adaptive"
) -> Tensor:
    """Pool a whole map ``x (N, C, H, W)``, any ``H, W >= 1``, to ``(N, C * sum(n*n))``.

    ``binning="adaptive"``: bin ``i`` of level ``n`` spans ``[floor(i*H/n), ceil((i+1)*H/n))``
    (same for ``W``), identical to ``nn.AdaptiveMaxPool2d`` / ``nn.AdaptiveAvgPool2d``.

    ``binning="paper"``: SPP-net's sliding window ``win = ceil(a/n)``, ``stride = floor(a/n)``
    per axis (``a = H`` or ``W``; 13x13 with ``n = 3``: window 5, stride 4). Where that rule
    does not give exactly ``n`` bins (:func:`paper_pool_params` returns ``None``: ``a < n``, or
    e.g. ``a=10, n=6``, ``a=11, n=4``) that axis of that level falls back to adaptive binning,
    so the output length never changes. Pooling is done one axis at a time, which is exact for
    max and for average (every row of a bin has the same number of cells).
    """
    levels = _check_levels(levels)
    _check_mode(mode)
    if binning not in _BINNINGS:
        raise ValueError(f"SPP binning must be one of {_BINNINGS}, got {binning!r}")
    if x.dim() != 4 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"spatial_pyramid_pool: expected (N, C, H, W) with H, W >= 1, got {tuple(x.shape)}")
    outs = []
    for n in levels:
        if binning == "adaptive":
            pool = F.adaptive_max_pool2d if mode == "max" else F.adaptive_avg_pool2d
            p = pool(x, n)
        else:
            p = _pool_axis(_pool_axis(x, n, 2, mode, binning), n, 3, mode, binning)
        outs.append(p.reshape(x.shape[0], -1))
    return torch.cat(outs, 1)


class SpatialPyramidPool(nn.Module):
    """Image-level SPP layer: ``(N, C, H, W)`` with any ``H, W >= 1`` -> ``(N, C * sum(n*n))``.

    See :func:`spatial_pyramid_pool` for the two binnings. Example::

        >>> spp = SpatialPyramidPool(levels=(4, 2, 1))
        >>> spp(torch.randn(2, 256, 13, 17)).shape
        torch.Size([2, 5376])
    """

    def __init__(self, levels: Sequence[int] = (4, 2, 1), mode: str = "max", binning: str = "adaptive") -> None:
        super().__init__()
        self.levels = _check_levels(levels)
        self.mode = _check_mode(mode)
        if binning not in _BINNINGS:
            raise ValueError(f"SPP binning must be one of {_BINNINGS}, got {binning!r}")
        self.binning = binning

    def output_size(self, channels: int) -> int:
        return pyramid_length(channels, self.levels)

    def forward(self, x: Tensor) -> Tensor:
        return spatial_pyramid_pool(x, self.levels, self.mode, self.binning)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, mode={self.mode!r}, binning={self.binning!r}"


# ---------------------------------------------------------------------------------------
# Region SPP


def project_rois(rois: Tensor, stride: float, offset: float, feat_h: int, feat_w: int) -> Tensor:
    """Inclusive feature-cell boxes ``(K, 4)`` int64 ``(x1', y1', x2', y2')`` of ``rois (K, 5)``.

    ``x1' = floor((x1 - offset)/stride) + 1``, ``x2' = ceil((x2 - offset)/stride) - 1`` (same
    for ``y``), computed in float64. Per axis, in this order:

    1. if ``x2' < x1'`` (a window narrower than about one cell) both become the cell nearest
       the window centre, ``floor(((x1 + x2)/2 - offset)/stride + 0.5)``;
    2. both are clamped to ``[0, feat_w - 1]``.

    Clamping is monotone, so the region stays non-empty; a window entirely outside the map
    gets the border cell nearest to it.
    """
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"rois: expected shape (K, 5) = (batch index, x1, y1, x2, y2), got {tuple(rois.shape)}")
    r = rois[:, 1:].detach().to(torch.float64)
    out = []
    for lo, hi, size in ((r[:, 0], r[:, 2], feat_w), (r[:, 1], r[:, 3], feat_h)):
        a = torch.floor((lo - offset) / stride) + 1
        b = torch.ceil((hi - offset) / stride) - 1
        centre = torch.floor(((lo + hi) / 2 - offset) / stride + 0.5)
        empty = b < a
        a = torch.where(empty, centre, a).clamp(0, size - 1)
        b = torch.where(empty, centre, b).clamp(0, size - 1)
        out.append((a.long(), b.long()))
    (x1, x2), (y1, y2) = out
    return torch.stack([x1, y1, x2, y2], 1)


def _bin_edges(first: Tensor, last: Tensor, n: int) -> Tuple[Tensor, Tensor]:
    """Starts and (exclusive) ends ``(K, n)`` of the ``n`` bins of inclusive cells ``first..last``."""
    a = (last - first + 1).unsqueeze(1)
    i = torch.arange(n, device=first.device).unsqueeze(0)
    start = first.unsqueeze(1) + torch.div(i * a, n, rounding_mode="floor")
    end = first.unsqueeze(1) + torch.div((i + 1) * a + n - 1, n, rounding_mode="floor")
    return start, end


def _plan_levels(levels: Tuple[int, ...]) -> Dict[int, Optional[int]]:
    """Max pooling: level -> the finer level it is reduced from, or ``None`` = computed
    directly. Finest first; each level reads the smallest finer level that it divides."""
    plan: Dict[int, Optional[int]] = {}
    for n in sorted(set(levels), reverse=True):
        finer = [s for s in plan if s % n == 0]
        plan[n] = min(finer) if finer else None
    return plan


def _new_buffer(like: Tensor, shape: Tuple[int, ...]) -> Tensor:
    """``like.new_empty(shape)``; on Linux CPU, a large buffer is advised (``madvise``) as
    transparent huge pages before it is first written. Filling fresh memory page by page is
    a large part of this layer's cost (the output alone is ~100 MB for 2000 RoIs); with huge
    pages it is several times cheaper. Only advice: nothing changes where it is ignored."""
    global _madvise
    t = like.new_empty(shape)
    nbytes = t.numel() * t.element_size()
    if t.device.type != "cpu" or nbytes < _HUGE_PAGE_MIN_BYTES or _madvise is False:
        return t
    if _madvise is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).madvise
            fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
            _madvise = fn if sys.platform.startswith("linux") else False
        except (OSError, AttributeError):
            _madvise = False
        if _madvise is False:
            return t
    start = -(-t.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
    stop = (t.data_ptr() + nbytes) // _HUGE_PAGE * _HUGE_PAGE
    if stop > start:
        _madvise(start, stop - start, _MADV_HUGEPAGE)  # failure is harmless
    return t


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
    t = _new_buffer(features, (N, kx_count, ky_count, H, W, C))
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
    xs, xe = _bin_edges(cells[:, 0], cells[:, 2], n)
    ys, ye = _bin_edges(cells[:, 1], cells[:, 3], n)
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


def _chunk_size(features: Tensor, num_rois: int, bytes_per_roi: int) -> int:
    """RoIs per chunk: all of them on GPUs, a cache-sized working set on CPU."""
    if features.device.type != "cpu":
        return max(1, num_rois)
    return min(max(1, num_rois), max(1, _CPU_CHUNK_BYTES // bytes_per_roi))


def _write_levels(out: Tensor, grids: Dict[int, Tensor], levels: Tuple[int, ...], start: int, stop: int) -> None:
    """Write channels-last grids ``(B, n, n, C)`` of RoIs ``start:stop`` into the output rows
    in the public layout (level by level, each ``(C, n, n)``)."""
    offset = 0
    for n in levels:
        g = grids[n]
        B, C = g.shape[0], g.shape[-1]
        out[start:stop, offset : offset + C * n * n].view(B, C, n * n).copy_(g.view(B, n * n, C).transpose(1, 2))
        offset += C * n * n


def _cat_levels(grids: Dict[int, Tensor], levels: Tuple[int, ...]) -> Tensor:
    """Differentiable twin of :func:`_write_levels` for all RoIs at once."""
    return torch.cat([grids[n].permute(0, 3, 1, 2).flatten(1) for n in levels], 1)


def _roi_spp_max(features: Tensor, batch: Tensor, cells: Tensor, levels: Tuple[int, ...]) -> Tensor:
    """Max pyramid without autograd: in-place tables, RoIs in chunks written straight into the
    output (the differentiable twin is :class:`_RoISPPMax`)."""
    N, C, H, W = features.shape
    K = len(batch)
    plan = _plan_levels(levels)
    direct = [n for n, src in plan.items() if src is None]
    shape = (_table_depth(W, direct), _table_depth(H, direct), H, W)
    table = _max_tables(features, shape[0], shape[1]).reshape(-1, C)
    corners = {n: _corner_rows(batch, cells, n, shape) for n in direct}
    out = _new_buffer(features, (K, pyramid_length(C, levels)))
    per_roi = 4 * sum(n * n for n in direct) * C * features.element_size()
    chunk = _chunk_size(features, K, per_roi)
    buffers = {
        n: (_new_buffer(features, (chunk * 4 * n * n, C)), _new_buffer(features, (chunk, n, n, C))) for n in direct
    }
    for start in range(0, K, chunk):
        stop = min(K, start + chunk)
        _write_levels(out, _max_chunk(table, corners, plan, buffers, start, stop), levels, start, stop)
    return out


# -- max, differentiable: the same machinery on value ranks ---------------------------
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


class _RoISPPMax(torch.autograd.Function):
    """Region max-SPP with a scatter backward (see the section comment above)."""

    @staticmethod
    def forward(ctx, features: Tensor, batch: Tensor, cells: Tensor, levels: Tuple[int, ...]) -> Tensor:
        keys, cell_of = _max_keys(features)
        best = _roi_spp_max(keys, batch, cells, levels)  # (K, L) winning keys
        ctx.save_for_backward(best, cell_of, batch)
        ctx.levels, ctx.feature_shape = levels, features.shape
        return _roi_spp_max(features.detach(), batch, cells, levels)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        best, cell_of, batch = ctx.saved_tensors
        N, C, H, W = ctx.feature_shape
        pos = _new_buffer(cell_of, tuple(best.shape))
        torch.add((batch * (C * H * W)).view(-1, 1), _output_channels(C, ctx.levels, batch.device) * (H * W), out=pos)
        cells = torch.index_select(cell_of, 0, pos.add_(best).view(-1), out=_new_buffer(cell_of, (pos.numel(),)))
        grad = grad_out.new_zeros(N * C * H * W)
        grad.index_add_(0, cells, grad_out.reshape(-1))
        return grad.view(ctx.feature_shape), None, None, None


# -- max, differentiable: torchvision's roi_pool on the projected cells ------------------
#
# Given inclusive cells (x1', y1', x2', y2') and spatial_scale 1, ``roi_pool`` bins an axis of
# a = x2' - x1' + 1 cells as [x1' + floor(i * (a/n)), x1' + ceil((i+1) * (a/n))), the rule above,
# except that a/n and the products are rounded to the feature dtype: for some (a, n) (first
# n = 7, a = 57 in float32; never for n in 1..6, 8, 9, 10, 12 up to a = 4000) the last bin then
# ends one cell late. Its forward + backward are faster than the rank-key path below (CPU,
# 256 windows on a 64 x 40 x 54 map: 18 vs 67 ms; ``tools/benchmark.py spp`` times both), so
# training uses it whenever its bins are ours exactly.

_ROI_POOL_DTYPES = (torch.float32, torch.float64)


def _roi_pool_bins_match(cells: Tensor, levels: Tuple[int, ...], dtype: torch.dtype) -> bool:
    """Whether torchvision ``roi_pool`` in ``dtype`` bins every window of ``cells`` as we do."""
    if dtype not in _ROI_POOL_DTYPES:
        return False
    for first, last in ((cells[:, 0], cells[:, 2]), (cells[:, 1], cells[:, 3])):
        a = torch.unique(last - first + 1)
        for n in set(levels):
            i = torch.arange(n + 1, device=a.device).to(dtype)
            size = a.to(dtype).unsqueeze(1) / n  # roi_pool's bin size, in the feature dtype
            ours = _bin_edges(torch.zeros_like(a), a - 1, n)  # exact, on cells 0..a-1
            if not (
                torch.equal(torch.floor(i[:-1] * size).long(), ours[0])
                and torch.equal(torch.ceil(i[1:] * size).long(), ours[1])
            ):
                return False
    return True


def _roi_spp_max_roi_pool(features: Tensor, batch: Tensor, cells: Tensor, levels: Tuple[int, ...]) -> Tensor:
    """Differentiable max pyramid: one ``roi_pool`` per level on the projected cells."""
    from torchvision.ops import roi_pool

    boxes = torch.cat([batch.unsqueeze(1), cells], 1).to(features.dtype)
    return torch.cat([roi_pool(features, boxes, (n, n), 1.0).flatten(1) for n in levels], 1)


# -- avg: integral image ---------------------------------------------------------------


def _sat_lookups(batch: Tensor, cells: Tensor, n: int, H: int, W: int) -> Tuple[Tensor, Tensor]:
    """Rows ``(K, n*n, 4)`` into the flattened summed-area table and float64 weights
    ``(+1, -1, -1, +1) / area`` whose weighted sum is each bin's mean."""
    xs, xe = _bin_edges(cells[:, 0], cells[:, 2], n)
    ys, ye = _bin_edges(cells[:, 1], cells[:, 3], n)
    x = torch.stack([xe, xs, xe, xs], -1)  # (K, n, 4), paired with the rows below
    y = torch.stack([ye, ye, ys, ys], -1)
    rows = (batch.view(-1, 1, 1, 1) * (H + 1) + y[:, :, None]) * (W + 1) + x[:, None, :]  # (K, i, j, 4)
    area = ((ye - ys)[:, :, None] * (xe - xs)[:, None, :]).to(torch.float64)
    sign = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64, device=cells.device)
    weights = sign / area.unsqueeze(-1)
    return rows.reshape(len(batch), n * n, 4), weights.reshape(len(batch), n * n, 4)


def _roi_spp_avg(features: Tensor, batch: Tensor, cells: Tensor, levels: Tuple[int, ...]) -> Tensor:
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
        return _cat_levels(chunk(0, K), levels)
    out = _new_buffer(features, (K, pyramid_length(C, levels)))
    step = _chunk_size(features, K, 2 * 8 * C * sum(n * n for n in lookups))
    for start in range(0, K, step):
        _write_levels(out, chunk(start, min(K, start + step)), levels, start, min(K, start + step))
    return out


def roi_spp(
    features: Tensor,
    rois: Tensor,
    levels: Sequence[int] = (6, 3, 2, 1),
    stride: float = 16,
    offset: float = 0.0,
    mode: str = "max",
) -> Tensor:
    """Region SPP: pool each window of ``rois`` on ``features`` to a fixed-length vector.

    Args:
        features: ``(N, C, H, W)`` conv feature maps.
        rois: ``(K, 5)`` rows ``(batch_index, x1, y1, x2, y2)`` in input-image pixels
            (continuous coordinates, ``x2 > x1``), on the same device as ``features``.
        levels: pyramid levels ``n`` (``n x n`` bins each), output in this order.
        stride, offset: cell ``j`` is centred at image coordinate ``stride * j + offset``.
        mode: ``"max"`` or ``"avg"``.

    Returns:
        ``(K, C * sum(n*n))``, each level flattened as ``(C, n, n)``.

    Each window is projected to inclusive cells with :func:`project_rois`; bin ``i`` of level
    ``n`` over ``w`` cells starting at ``x1'`` spans ``[x1' + floor(i*w/n), x1' + ceil((i+1)*w/n))``.
    Max: 2-D sparse tables (4 gathers per bin, independent of the window size) for the levels
    that divide no finer level, the others reduced from a finer grid. Avg: a float64 summed-area
    table (4 lookups per bin). Differentiable w.r.t. ``features``. Without autograd (no grad
    mode, or ``features`` not requiring grad) RoIs are processed in cache-sized chunks written
    straight into the output: the same numbers, much less memory traffic.
    Example::

        >>> feats = torch.randn(1, 256, 43, 58)
        >>> rois = torch.tensor([[0, 10.0, 20.0, 300.0, 200.0]])
        >>> roi_spp(feats, rois).shape
        torch.Size([1, 12800])
    """
    levels = _check_levels(levels)
    _check_mode(mode)
    if features.dim() != 4:
        raise ValueError(f"roi_spp: features must be (N, C, H, W), got {tuple(features.shape)}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"roi_spp: rois must be (K, 5) = (batch index, x1, y1, x2, y2), got {tuple(rois.shape)}")
    if rois.device != features.device:
        raise ValueError(f"roi_spp: rois on {rois.device} but features on {features.device}")
    if not stride > 0:
        raise ValueError(f"roi_spp: stride must be > 0, got {stride}")
    N, C, H, W = features.shape
    if len(rois) == 0:
        return features.new_zeros((0, pyramid_length(C, levels)))
    batch = rois[:, 0].detach().long()
    if not bool(torch.isfinite(rois).all()) or int(batch.min()) < 0 or int(batch.max()) >= N:
        raise ValueError(f"roi_spp: rois must be finite with batch index in [0, {N - 1}]")
    cells = project_rois(rois, stride, offset, H, W)
    if mode == "avg":
        return _roi_spp_avg(features, batch, cells, levels)
    if torch.is_grad_enabled() and features.requires_grad:
        if _roi_pool_bins_match(cells, levels, features.dtype):
            return roi_spp_max_train(features, batch, cells, levels)
        return _RoISPPMax.apply(features, batch, cells, levels)
    return _roi_spp_max(features, batch, cells, levels)


class RoISpatialPyramidPool(nn.Module):
    """Region SPP layer (see :func:`roi_spp`): ``forward(features (N, C, H, W), rois (K, 5))``
    -> ``(K, C * sum(n*n))``.

        >>> spp = RoISpatialPyramidPool(levels=(6, 3, 2, 1), stride=16)
        >>> spp(torch.randn(2, 256, 40, 50), torch.tensor([[1, 0.0, 0.0, 100.0, 50.0]])).shape
        torch.Size([1, 12800])
    """

    def __init__(
        self, levels: Sequence[int] = (6, 3, 2, 1), stride: float = 16, offset: float = 0.0, mode: str = "max"
    ) -> None:
        super().__init__()
        self.levels = _check_levels(levels)
        self.mode = _check_mode(mode)
        if not stride > 0:
            raise ValueError(f"RoISpatialPyramidPool: stride must be > 0, got {stride}")
        self.stride = stride
        self.offset = offset

    def output_size(self, channels: int) -> int:
        return pyramid_length(channels, self.levels)

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        return roi_spp(features, rois, self.levels, self.stride, self.offset, self.mode)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, stride={self.stride}, offset={self.offset}, mode={self.mode!r}"
