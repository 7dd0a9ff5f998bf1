"""Region projection (SPP-net, Appendix A): image windows -> inclusive feature cells.

Feature cell ``j`` is centred at image coordinate ``stride * j + offset``. A window
``(x1, y1, x2, y2)`` in image pixels maps to the inclusive cells
``x1' = floor((x1 - offset) / stride) + 1`` .. ``x2' = ceil((x2 - offset) / stride) - 1``
(same for ``y``).
"""

from __future__ import annotations

import torch
from torch import Tensor


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
