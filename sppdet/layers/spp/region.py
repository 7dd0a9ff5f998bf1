"""Region SPP: every window of ``rois`` pooled to a fixed-length vector; picks the backend."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from . import max_numba
from .avg import roi_spp_avg
from .common import check_levels, check_mode, pyramid_length
from .max_rank import RoISPPMax
from .max_roi_pool import roi_pool_bins_match
from .max_tables import roi_spp_max
from .max_train import roi_spp_max_train
from .projection import project_rois


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
    Max on a CPU float32 map (numba installed): numba kernels that pool each window's finest
    levels from the channels-last map and reduce the others from that grid
    (:mod:`.max_numba`); elsewhere 2-D sparse tables (4 gathers per bin, independent of the
    window size) for the levels that divide no finer level, the others reduced from a finer
    grid. The values are the same on every path. Avg: a float64 summed-area
    table (4 lookups per bin). Differentiable w.r.t. ``features``. Without autograd (no grad
    mode, or ``features`` not requiring grad) RoIs are processed in cache-sized chunks written
    straight into the output: the same numbers, much less memory traffic.
    Example::

        >>> feats = torch.randn(1, 256, 43, 58)
        >>> rois = torch.tensor([[0, 10.0, 20.0, 300.0, 200.0]])
        >>> roi_spp(feats, rois).shape
        torch.Size([1, 12800])
    """
    levels = check_levels(levels)
    check_mode(mode)
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
        return roi_spp_avg(features, batch, cells, levels)
    if torch.is_grad_enabled() and features.requires_grad:
        if max_numba.applies(features):
            return max_numba.RoISPPMaxNumba.apply(features, batch, cells, levels)
        if roi_pool_bins_match(cells, levels, features.dtype):
            return roi_spp_max_train(features, batch, cells, levels)
        return RoISPPMax.apply(features, batch, cells, levels)
    if max_numba.applies(features):
        return max_numba.roi_spp_max_numba(features, batch, cells, levels)
    return roi_spp_max(features, batch, cells, levels)


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
        self.levels = check_levels(levels)
        self.mode = check_mode(mode)
        if not stride > 0:
            raise ValueError(f"RoISpatialPyramidPool: stride must be > 0, got {stride}")
        self.stride = stride
        self.offset = offset

    def output_size(self, channels: int) -> int:
        """Length of the pooled vector for ``channels`` input channels."""
        return pyramid_length(channels, self.levels)

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        """``features (N, C, H, W)``, ``rois (K, 5)`` -> ``(K, C * sum(n*n))`` (see :func:`roi_spp`)."""
        return roi_spp(features, rois, self.levels, self.stride, self.offset, self.mode)

    def extra_repr(self) -> str:
        """Levels, stride, offset and mode, for ``print(module)``."""
        return f"levels={self.levels}, stride={self.stride}, offset={self.offset}, mode={self.mode!r}"
