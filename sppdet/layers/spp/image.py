"""Image-level SPP: a whole ``(N, C, H, W)`` map, any ``H, W >= 1``, to ``(N, C * sum(n*n))``.

Binning: a segment of ``a`` cells starting at ``s`` is split into ``n`` bins; bin ``i`` covers
cells ``[s + floor(i*a/n), s + ceil((i+1)*a/n))``: over the image, exactly
``AdaptiveMaxPool2d``/``AdaptiveAvgPool2d``. ``binning="paper"`` is SPP-net's sliding window.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import BINNINGS, check_levels, check_mode, pyramid_length


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
        size = (n, None) if dim == 2 else (None, n)  # None keeps that axis
        pool = F.adaptive_max_pool2d if mode == "max" else F.adaptive_avg_pool2d
        return pool(x, size)  # type: ignore[arg-type]  # torch's stub omits None
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
    levels = check_levels(levels)
    check_mode(mode)
    if binning not in BINNINGS:
        raise ValueError(f"SPP binning must be one of {BINNINGS}, got {binning!r}")
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
        self.levels = check_levels(levels)
        self.mode = check_mode(mode)
        if binning not in BINNINGS:
            raise ValueError(f"SPP binning must be one of {BINNINGS}, got {binning!r}")
        self.binning = binning

    def output_size(self, channels: int) -> int:
        """Length of the pooled vector for ``channels`` input channels."""
        return pyramid_length(channels, self.levels)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, C * sum(n*n))``."""
        return spatial_pyramid_pool(x, self.levels, self.mode, self.binning)

    def extra_repr(self) -> str:
        """Levels, mode and binning, for ``print(module)``."""
        return f"levels={self.levels}, mode={self.mode!r}, binning={self.binning!r}"


# ---------------------------------------------------------------------------------------
# Region SPP
