"""Region max-SPP on CPU float32 maps with numba kernels: forward, argmax and scatter backward.

The torch paths (:mod:`.max_tables`, :mod:`.max_train`) run a dozen ops per call, each a pass
over large intermediate tensors; here one kernel does the whole pyramid of a window while its
cells are in cache. The map is read channels last (``(N, H, W, C)`` contiguous), so the inner
loop runs over channels and vectorises.

Forward, per window (``prange`` over windows): every level that divides no finer level
(:func:`.max_train.level_sources`; for ``{6, 3, 2, 1}`` only 6) is the max over each bin's
cells, bin ``i`` of ``n`` over ``a`` cells from ``s`` spanning
``[s + floor(i*a/n), s + ceil((i+1)*a/n))`` (the rule of the other paths, in integers); the
other levels are maxima over ``k x k`` blocks of their source grid (the bins nest, see
:mod:`.max_train`). Max is exact, so the values equal the torch paths'.

Training saves, per bin and channel, the cell (``y * W + x``) holding a direct level's maximum,
or the winning bin of the source grid for a derived level. Ties: the first maximal cell of a
bin in row-major order, and for a derived level the first maximal finer bin of its block in
row-major order; the rules of torchvision ``roi_pool``, ``max_pool2d`` and ``max`` on which
:mod:`.max_train` relies, so the gradient goes to the same cells.

Backward (``prange`` over ranges of channels: each map element is written by one thread): per
window in order, each derived level's gradient is added to its winning finer bin, coarsest
level first (a level-6 bin gets ``(g_6 + t_2) + t_3``, as autograd sums it in
:mod:`.max_train`), then each direct bin's total to its maximising cell, bins in row-major
order, as ``index_add_`` does. So for the default levels the gradient is bitwise that of
:mod:`.max_train` (with several direct levels, equal up to float rounding). NaN in the map:
unspecified.

Used where :func:`applies`: numba importable (:data:`HAVE_NUMBA`), a CPU float32 map, not
traced, not in a forked child. Kernels are compiled on first use (seconds) and cached on disk
(``cache=True``) where numba finds a writable cache directory. numba runs as many threads as
torch (``torch.get_num_threads()``) at each call.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ...utils.memory import new_buffer
from .common import pyramid_length
from .max_train import level_sources

try:
    import numba
    from numba import prange
except ImportError:  # the torch paths take over
    numba = None  # type: ignore[assignment]
    prange = range  # type: ignore[assignment,misc]

#: Whether the numba kernels are used: numba importable and the environment variable
#: ``SPPDET_NUMBA`` not ``0`` (tests switch it off to run the torch paths).
HAVE_NUMBA = numba is not None and os.environ.get("SPPDET_NUMBA", "1") != "0"
#: The process that imported this module. A child forked from it (after OpenMP threads were
#: started, by torch or by these kernels) hangs or aborts in an OpenMP parallel region, so
#: forked children take the torch paths.
_PID = os.getpid()


def _jit(fn: Callable) -> Any:
    """``numba.njit(parallel=True)``, cached on disk where numba finds a writable cache directory:
    numba refuses ``cache=True`` at decoration time when none is (a read-only install), and the
    kernels then compile in memory on first use instead."""
    if numba is None:
        return fn
    try:
        return numba.njit(parallel=True, cache=True, nogil=True)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(parallel=True, cache=False, nogil=True)(fn)


def applies(features: Tensor) -> bool:
    """Whether the numba kernels handle this map: numba importable, CPU, float32, not traced
    (``torch.jit.trace`` records torch ops), not in a forked child."""
    return (
        HAVE_NUMBA
        and features.device.type == "cpu"
        and features.dtype == torch.float32
        and not torch.jit.is_tracing()
        and os.getpid() == _PID
    )


def threading_layer() -> str:
    """numba's threading layer (``"omp"``, ``"tbb"``, ``"workqueue"``); empty before the first
    kernel call or without numba."""
    try:
        return numba.threading_layer() if numba is not None else ""
    except ValueError:  # no parallel kernel has run yet
        return ""


# -- kernels ------------------------------------------------------------------------------
# Plan arrays (int64), unique levels finest first: ``sizes[u]`` = n, ``sources[u]`` = index of
# the source level or -1 (direct), ``offsets[u]`` = first row of the level's bins in a window's
# ``(bins, C)`` grid. Output: requested level ``p`` is unique level ``out_level[p]`` written at
# column ``out_col[p]``, laid out ``(C, n, n)``; ``repeat[p]`` = 1 where that level came earlier.


def _max_into(v, a, row, cell, C, with_arg, zero):  # pragma: no cover (numba)
    """``v = max(v, row)`` per channel; with ``with_arg``, ``a`` keeps the cell of each maximum.

    Cells are visited in increasing order, so "the cell of the last strict improvement" is a
    running max: plain stores, which vectorise far better than a conditional store (masked)."""
    if with_arg:
        for c in range(C):
            new, old = row[c], v[c]
            a[c] = max(a[c], cell if new > old else zero)
            v[c] = np.maximum(new, old)
    else:
        for c in range(C):
            v[c] = np.maximum(row[c], v[c])


def _pool_window(x, b, x1, y1, x2, y2, sizes, sources, offsets, vals, arg, with_arg):  # pragma: no cover (numba)
    """Fill ``vals (bins, C)`` (and ``arg``, when ``with_arg``) for one window."""
    W, C = x.shape[2], x.shape[3]
    w, h = x2 - x1 + 1, y2 - y1 + 1
    zero = np.int32(0)
    for u in range(len(sizes)):
        n, o = sizes[u], offsets[u]
        if sources[u] < 0:
            for i in range(n):
                ys, ye = y1 + (i * h) // n, y1 + ((i + 1) * h + n - 1) // n
                for j in range(n):
                    xs, xe = x1 + (j * w) // n, x1 + ((j + 1) * w + n - 1) // n
                    v = vals[o + i * n + j]
                    a = arg[o + i * n + j]
                    first = x[b, ys, xs]
                    for c in range(C):
                        v[c] = first[c]
                    if with_arg:
                        cell0 = ys * W + xs
                        for c in range(C):
                            a[c] = cell0
                    for y in range(ys, ye):
                        for xx in range(xs + 1 if y == ys else xs, xe):
                            _max_into(v, a, x[b, y, xx], np.int32(y * W + xx), C, with_arg, zero)
        else:
            s, so = sizes[sources[u]], offsets[sources[u]]
            r = s // n
            for i in range(n):
                for j in range(n):
                    v = vals[o + i * n + j]
                    a = arg[o + i * n + j]
                    q0 = (r * i) * s + r * j
                    for c in range(C):
                        v[c] = vals[so + q0, c]
                    if with_arg:
                        for c in range(C):
                            a[c] = q0
                    for di in range(r):
                        for dj in range(1 if di == 0 else 0, r):
                            q = (r * i + di) * s + r * j + dj
                            _max_into(v, a, vals[so + q], np.int32(q), C, with_arg, zero)  # q increases too


def _write_out(vals, C, out_row, sizes, offsets, out_level, out_col):  # pragma: no cover (numba)
    """Copy a window's grid ``vals (bins, C)`` into its output row in the public layout."""
    for p in range(len(out_level)):
        u = out_level[p]
        nn, o, col = sizes[u] * sizes[u], offsets[u], out_col[p]
        for c in range(C):
            for q in range(nn):
                out_row[col + c * nn + q] = vals[o + q, c]


def _forward_kernel(x, batch, cells, sizes, sources, offsets, out_level, out_col, repeat, out):  # pragma: no cover
    """Inference: ``out (K, L)`` from the channels-last map ``x (N, H, W, C)``."""
    bins = offsets[-1] + sizes[-1] * sizes[-1]
    for k in prange(len(batch)):
        vals = np.empty((bins, x.shape[3]), x.dtype)
        arg = np.empty((bins, 0), np.int32)
        _pool_window(
            x, batch[k], cells[k, 0], cells[k, 1], cells[k, 2], cells[k, 3], sizes, sources, offsets, vals, arg, False
        )
        _write_out(vals, x.shape[3], out[k], sizes, offsets, out_level, out_col)


def _forward_argmax_kernel(
    x, batch, cells, sizes, sources, offsets, out_level, out_col, repeat, out, arg
):  # pragma: no cover
    """Training: ``out (K, L)`` and ``arg (K, bins, C)`` int32 (see the module docstring)."""
    bins = offsets[-1] + sizes[-1] * sizes[-1]
    for k in prange(len(batch)):
        vals = np.empty((bins, x.shape[3]), x.dtype)
        _pool_window(
            x, batch[k], cells[k, 0], cells[k, 1], cells[k, 2], cells[k, 3], sizes, sources, offsets, vals, arg[k], True
        )
        _write_out(vals, x.shape[3], out[k], sizes, offsets, out_level, out_col)


def _backward_kernel(
    grad_out, batch, arg, sizes, sources, offsets, out_level, out_col, repeat, grad, jobs
):  # pragma: no cover
    """Add ``grad_out (K, L)`` into ``grad (N, C, H*W)`` (zeros) through ``arg (K, bins, C)``.

    ``jobs`` ranges of channels in parallel; each streams through the windows in order (reading
    ``grad_out`` and ``arg`` row by row, not plane by plane, which is several times faster)."""
    C = grad.shape[1]
    bins = arg.shape[1]
    per = (C + jobs - 1) // jobs
    for job in prange(jobs):
        c0, c1 = job * per, min(C, job * per + per)
        t = np.empty((max(0, c1 - c0), bins), grad.dtype)  # the job's gradients, channel by channel
        for k in range(len(batch)):
            g, a, planes = grad_out[k], arg[k], grad[batch[k]]
            for p in range(len(out_level)):  # every output's gradient
                u = out_level[p]
                nn, o, col = sizes[u] * sizes[u], offsets[u], out_col[p]
                for c in range(c0, c1):
                    tc, src = t[c - c0], col + c * nn
                    if repeat[p]:  # a level listed twice: both gradients count
                        for q in range(nn):
                            tc[o + q] += g[src + q]
                    else:
                        for q in range(nn):
                            tc[o + q] = g[src + q]
            for c in range(c0, c1):
                tc, plane = t[c - c0], planes[c]
                for u in range(len(sizes) - 1, -1, -1):  # coarsest first: into the winning finer bin
                    if sources[u] >= 0:
                        so = offsets[sources[u]]
                        for q in range(offsets[u], offsets[u] + sizes[u] * sizes[u]):
                            tc[so + a[q, c]] += tc[q]
                for u in range(len(sizes)):  # direct levels: into the maximising cells, bins in order
                    if sources[u] < 0:
                        for q in range(offsets[u], offsets[u] + sizes[u] * sizes[u]):
                            plane[a[q, c]] += tc[q]


_max_into = numba.njit(inline="always")(_max_into) if numba is not None else _max_into
_pool_window = numba.njit(inline="always")(_pool_window) if numba is not None else _pool_window
_write_out = numba.njit(inline="always")(_write_out) if numba is not None else _write_out
_forward = _jit(_forward_kernel)
_forward_argmax = _jit(_forward_argmax_kernel)
_backward = _jit(_backward_kernel)


# -- torch glue ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _plan(levels: Tuple[int, ...], C: int) -> Tuple[np.ndarray, ...]:
    """The plan arrays of the kernels (see above) for ``levels``."""
    plan = level_sources(levels)
    order = list(plan)
    sizes = np.array(order, np.int64)
    sources = np.array([order.index(src) if src is not None else -1 for src in plan.values()], np.int64)
    offsets = np.cumsum([0] + [n * n for n in order[:-1]]).astype(np.int64)
    out_level = np.array([order.index(n) for n in levels], np.int64)
    out_col = np.cumsum([0] + [C * n * n for n in levels[:-1]]).astype(np.int64)
    repeat = np.array([n in levels[:p] for p, n in enumerate(levels)], np.int64)
    return sizes, sources, offsets, out_level, out_col, repeat


def _threads() -> None:
    """numba's threads follow torch's (``OMP_NUM_THREADS=1`` runs stay single-threaded).

    numba's OpenMP layer shares the OpenMP runtime with torch, and starting its pool (first
    call) sets that runtime's thread count to all cores: torch's count is put back."""
    n = torch.get_num_threads()
    numba.set_num_threads(max(1, min(n, getattr(numba.config, "NUMBA_NUM_THREADS"))))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _strided(grad_out: Tensor) -> np.ndarray:
    """``grad_out`` as numpy, without copying a broadcast gradient (``loss = out.sum()``: every
    stride 0); the kernel is compiled for such strided arrays too."""
    return grad_out.numpy() if grad_out.dim() == 2 and grad_out.stride(1) in (0, 1) else grad_out.contiguous().numpy()


def _inputs(features: Tensor, batch: Tensor, cells: Tensor) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = features.detach().permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C)
    return x, batch.to(torch.int64).contiguous().numpy(), cells.to(torch.int64).contiguous().numpy()


def roi_spp_max_numba(features: Tensor, batch: Tensor, cells: Tensor, levels: Tuple[int, ...]) -> Tensor:
    """Max pyramid ``(K, L)`` of the windows ``cells (K, 4)`` (inclusive feature cells, int64)
    of images ``batch (K,)``, without autograd."""
    C = features.shape[1]
    x, b, c = _inputs(features, batch, cells)
    out = new_buffer(features, (len(b), pyramid_length(C, levels)))
    _threads()
    _forward(x, b, c, *_plan(levels, C), out.numpy())
    return out


class RoISPPMaxNumba(torch.autograd.Function):
    """``apply(features, batch, cells, levels)``: :func:`roi_spp_max_numba` with the argmax saved
    and a scatter backward (module docstring)."""

    @staticmethod
    def forward(ctx, features: Tensor, batch: Tensor, cells: Tensor, levels: Tuple[int, ...]) -> Tensor:
        N, C, H, W = features.shape
        x, b, c = _inputs(features, batch, cells)
        plan = _plan(levels, C)
        bins = int(plan[2][-1] + plan[0][-1] ** 2)
        out = torch.empty((len(b), pyramid_length(C, levels)), dtype=features.dtype)
        arg = torch.empty((len(b), bins, C), dtype=torch.int32)
        _threads()
        _forward_argmax(x, b, c, *plan, out.numpy(), arg.numpy())
        ctx.save_for_backward(arg, torch.from_numpy(b))
        ctx.plan, ctx.feature_shape = plan, features.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        arg, batch = ctx.saved_tensors
        N, C, H, W = ctx.feature_shape
        grad = torch.zeros((N, C, H, W), dtype=grad_out.dtype)
        _threads()
        jobs = min(C, numba.get_num_threads())
        _backward(_strided(grad_out), batch.numpy(), arg.numpy(), *ctx.plan, grad.view(N, C, H * W).numpy(), jobs)
        return grad, None, None, None
