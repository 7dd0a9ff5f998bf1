"""Shared by the SPP layers: argument checks, pyramid length, the binning rule, chunked output.

Shape shorthand: ``N`` images, ``C`` channels, ``H x W`` feature map, ``K`` regions, ``levels`` =
the pyramid, level ``n`` = ``n x n`` bins. Every pooled vector has ``C * sum(n * n)`` numbers
laid out level by level, each level as ``(C, n, n)`` flattened (channel-major).
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
from torch import Tensor

MODES = ("max", "avg")
BINNINGS = ("adaptive", "paper")
#: Fast paths: bytes of gathered rows per chunk of RoIs on CPU (a cache-sized working set).
CPU_CHUNK_BYTES = 24 << 20


def check_levels(levels: Sequence[int]) -> Tuple[int, ...]:
    """``levels`` as a tuple of positive ints; ``ValueError`` when empty or not positive."""
    levels = tuple(int(n) for n in levels)
    if not levels or any(n < 1 for n in levels):
        raise ValueError(f"SPP levels must be a non-empty list of positive integers, got {levels}")
    return levels


def check_mode(mode: str) -> str:
    """``mode`` itself when it is ``"max"`` or ``"avg"``; ``ValueError`` otherwise."""
    if mode not in MODES:
        raise ValueError(f"SPP mode must be one of {MODES}, got {mode!r}")
    return mode


def pyramid_length(channels: int, levels: Sequence[int]) -> int:
    """Length ``C * sum(n * n)`` of one pooled vector."""
    return int(channels) * sum(n * n for n in check_levels(levels))


def bin_edges(first: Tensor, last: Tensor, n: int) -> Tuple[Tensor, Tensor]:
    """Starts and (exclusive) ends ``(K, n)`` of the ``n`` bins of inclusive cells ``first..last``."""
    a = (last - first + 1).unsqueeze(1)
    i = torch.arange(n, device=first.device).unsqueeze(0)
    start = first.unsqueeze(1) + torch.div(i * a, n, rounding_mode="floor")
    end = first.unsqueeze(1) + torch.div((i + 1) * a + n - 1, n, rounding_mode="floor")
    return start, end


def chunk_size(features: Tensor, num_rois: int, bytes_per_roi: int) -> int:
    """RoIs per chunk: all of them on GPUs, a cache-sized working set on CPU."""
    if features.device.type != "cpu":
        return max(1, num_rois)
    return min(max(1, num_rois), max(1, CPU_CHUNK_BYTES // bytes_per_roi))


def write_levels(out: Tensor, grids: Dict[int, Tensor], levels: Tuple[int, ...], start: int, stop: int) -> None:
    """Write channels-last grids ``(B, n, n, C)`` of RoIs ``start:stop`` into the output rows
    in the public layout (level by level, each ``(C, n, n)``)."""
    offset = 0
    for n in levels:
        g = grids[n]
        B, C = g.shape[0], g.shape[-1]
        out[start:stop, offset : offset + C * n * n].view(B, C, n * n).copy_(g.view(B, n * n, C).transpose(1, 2))
        offset += C * n * n


def cat_levels(grids: Dict[int, Tensor], levels: Tuple[int, ...]) -> Tensor:
    """Differentiable twin of :func:`write_levels` for all RoIs at once."""
    return torch.cat([grids[n].permute(0, 3, 1, 2).flatten(1) for n in levels], 1)
