"""Boxes: the one convention used inside sppdet, conversions at the edges, IoU, box coder.

The convention
--------------
Inside sppdet every box is a float row ``(x1, y1, x2, y2)`` in **continuous image pixel
coordinates** of the original image: the image spans ``[0, W] x [0, H]``, pixel ``(i, j)``
covers ``[i, i+1) x [j, j+1)``, ``x2 > x1``, ``y2 > y1``, and

    width = x2 - x1,  height = y2 - y1,  area = width * height   (no ``+1`` anywhere).

Foreign formats are converted when they are read and written, and only there:

============================  ================================  ============================
format                        stored as                         to ours
============================  ================================  ============================
COCO                          ``[x, y, w, h]`` (continuous)      ``x1=x, y1=y, x2=x+w, y2=y+h``
centre form                   ``[cx, cy, w, h]``                 ``x1=cx-w/2`` ...
PASCAL VOC XML / comp4        1-based inclusive pixel indices   ``x1=xmin-1, y1=ymin-1,
                              ``xmin ymin xmax ymax``           x2=xmax, y2=ymax``
R-CNN / SPP_net ``.mat``      1-based inclusive ``[y1 x1 y2 x2]`` same as VOC after reordering
fast-rcnn demo ``*_boxes.mat`` 0-based inclusive ``[x1 y1 x2 y2]`` ``x2 += 1, y2 += 1``
============================  ================================  ============================

A VOC box ``xmin=1, xmax=10`` covers pixels 1..10 (ten pixels); in our convention it is
``x1=0, x2=10``: the same ten pixels, width 10. So continuous IoU on our boxes equals the
VOC devkit's "+1" IoU on the original 1-based boxes.

Functions accept numpy arrays or torch tensors of shape ``(N, 4)`` and return the same type.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple, TypeVar, Union

import numpy as np
import torch
import torchvision

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)

#: Default R-CNN box-regression weights (dx, dy, dw, dh), as in Fast R-CNN / detectron2.
DEFAULT_BOX_WEIGHTS: Tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
#: Clamp for dw/dh before exp(), so a wild prediction cannot overflow (log(1000/16)).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def _cat(cols: Sequence, like: ArrayLike) -> ArrayLike:
    if isinstance(like, torch.Tensor):
        return torch.stack(list(cols), dim=-1)
    return np.stack(cols, axis=-1)


def _float(boxes: ArrayLike) -> ArrayLike:
    if isinstance(boxes, torch.Tensor):
        return boxes if boxes.is_floating_point() else boxes.float()
    arr = np.asarray(boxes)
    return arr if arr.dtype.kind == "f" else arr.astype(np.float32)


def xywh_to_xyxy(boxes: ArrayLike) -> ArrayLike:
    """COCO ``[x, y, w, h]`` -> ours ``(x1, y1, x2, y2)``."""
    b = _float(boxes)
    return _cat([b[..., 0], b[..., 1], b[..., 0] + b[..., 2], b[..., 1] + b[..., 3]], b)


def xyxy_to_xywh(boxes: ArrayLike) -> ArrayLike:
    """Ours ``(x1, y1, x2, y2)`` -> COCO ``[x, y, w, h]``."""
    b = _float(boxes)
    return _cat([b[..., 0], b[..., 1], b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]], b)


def cxcywh_to_xyxy(boxes: ArrayLike) -> ArrayLike:
    """Centre form ``[cx, cy, w, h]`` -> ours ``(x1, y1, x2, y2)``."""
    b = _float(boxes)
    hw, hh = b[..., 2] / 2, b[..., 3] / 2
    return _cat([b[..., 0] - hw, b[..., 1] - hh, b[..., 0] + hw, b[..., 1] + hh], b)


def xyxy_to_cxcywh(boxes: ArrayLike) -> ArrayLike:
    """Ours ``(x1, y1, x2, y2)`` -> centre form ``[cx, cy, w, h]``."""
    b = _float(boxes)
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    return _cat([b[..., 0] + w / 2, b[..., 1] + h / 2, w, h], b)


def voc_to_xyxy(boxes: ArrayLike) -> ArrayLike:
    """VOC 1-based inclusive ``xmin ymin xmax ymax`` -> ours (``x1=xmin-1, y1=ymin-1``)."""
    b = _float(boxes)
    return _cat([b[..., 0] - 1, b[..., 1] - 1, b[..., 2], b[..., 3]], b)


def xyxy_to_voc(boxes: ArrayLike) -> ArrayLike:
    """Ours -> VOC 1-based inclusive ``xmin ymin xmax ymax`` (inverse of :func:`voc_to_xyxy`)."""
    b = _float(boxes)
    return _cat([b[..., 0] + 1, b[..., 1] + 1, b[..., 2], b[..., 3]], b)


def rcnn_mat_to_xyxy(boxes: ArrayLike) -> ArrayLike:
    """R-CNN / SPP_net ``.mat`` 1-based inclusive ``[y1 x1 y2 x2]`` -> ours."""
    b = _float(boxes)
    return voc_to_xyxy(_cat([b[..., 1], b[..., 0], b[..., 3], b[..., 2]], b))


def xyxy_to_rcnn_mat(boxes: ArrayLike) -> ArrayLike:
    """Ours -> R-CNN ``.mat`` 1-based inclusive ``[y1 x1 y2 x2]``."""
    v = xyxy_to_voc(boxes)
    return _cat([v[..., 1], v[..., 0], v[..., 3], v[..., 2]], v)


def zero_based_inclusive_to_xyxy(boxes: ArrayLike) -> ArrayLike:
    """0-based inclusive pixel indices ``[x1 y1 x2 y2]`` (fast-rcnn demo files) -> ours."""
    b = _float(boxes)
    return _cat([b[..., 0], b[..., 1], b[..., 2] + 1, b[..., 3] + 1], b)


def box_area(boxes: ArrayLike) -> ArrayLike:
    """Area ``(x2 - x1) * (y2 - y1)`` of boxes in our convention (negative sizes give 0)."""
    b = _float(boxes)
    if isinstance(b, torch.Tensor):
        return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def hflip_boxes(boxes: ArrayLike, width: float) -> ArrayLike:
    """Mirror ``(x1, y1, x2, y2)`` boxes left-right in an image ``width`` pixels wide."""
    b = _float(boxes)
    out = b.clone() if isinstance(b, torch.Tensor) else b.copy()
    out[..., 0] = width - b[..., 2]
    out[..., 2] = width - b[..., 0]
    return out


def clip_boxes(boxes: ArrayLike, width: float, height: float) -> ArrayLike:
    """Clip ``(x1, y1, x2, y2)`` boxes to the image ``[0, width] x [0, height]``."""
    b = _float(boxes)
    if isinstance(b, torch.Tensor):
        out = b.clone()
        out[..., 0::2] = out[..., 0::2].clamp(0, width)
        out[..., 1::2] = out[..., 1::2].clamp(0, height)
        return out
    out = b.copy()
    out[..., 0::2] = np.clip(out[..., 0::2], 0, width)
    out[..., 1::2] = np.clip(out[..., 1::2], 0, height)
    return out


def valid_boxes_mask(boxes: ArrayLike, min_size: float = 0.0) -> ArrayLike:
    """True for finite boxes whose width and height are both > ``min_size`` (and > 0)."""
    b = _float(boxes)
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    if isinstance(b, torch.Tensor):
        return torch.isfinite(b).all(dim=-1) & (w > min_size) & (h > min_size)
    return np.isfinite(b).all(axis=-1) & (w > min_size) & (h > min_size)


def remove_small_boxes(boxes: ArrayLike, min_size: float) -> ArrayLike:
    """Indices of boxes (ours) with width and height > ``min_size`` and finite coordinates."""
    keep = valid_boxes_mask(boxes, min_size)
    if isinstance(keep, torch.Tensor):
        return torch.nonzero(keep).flatten()
    return np.nonzero(keep)[0]


def box_iou(boxes1: ArrayLike, boxes2: ArrayLike) -> ArrayLike:
    """Pairwise IoU ``(N, M)`` of boxes in our convention (torchvision ``box_iou``)."""
    if isinstance(boxes1, torch.Tensor):
        return torchvision.ops.box_iou(_float(boxes1), _float(boxes2).to(boxes1.device))
    a = torch.as_tensor(np.asarray(boxes1, dtype=np.float64)).reshape(-1, 4)
    b = torch.as_tensor(np.asarray(boxes2, dtype=np.float64)).reshape(-1, 4)
    return torchvision.ops.box_iou(a, b).numpy()


class BoxCoder:
    """R-CNN box parameterisation (Girshick et al.), on our continuous convention.

    For a proposal ``P`` and target ``G`` with widths ``w = x2 - x1`` and centres
    ``c = x1 + w/2``::

        dx = wx * (Gcx - Pcx) / Pw     dw = ww * log(Gw / Pw)
        dy = wy * (Gcy - Pcy) / Ph     dh = wh * log(Gh / Ph)

    :meth:`encode` and :meth:`decode` are exact inverses (up to float rounding).
    ``decode`` clamps ``dw, dh`` at ``log(1000/16)`` so one wild output cannot overflow.
    """

    def __init__(self, weights: Sequence[float] = DEFAULT_BOX_WEIGHTS, scale_clamp: float = BBOX_XFORM_CLIP) -> None:
        if len(weights) != 4:
            raise ValueError("BoxCoder weights must be 4 numbers (wx, wy, ww, wh)")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, proposals: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Regression targets ``(N, 4)`` taking ``proposals`` to ``targets`` (both ours, ``(N, 4)``)."""
        wx, wy, ww, wh = self.weights
        pw = proposals[:, 2] - proposals[:, 0]
        ph = proposals[:, 3] - proposals[:, 1]
        pcx = proposals[:, 0] + 0.5 * pw
        pcy = proposals[:, 1] + 0.5 * ph
        gw = targets[:, 2] - targets[:, 0]
        gh = targets[:, 3] - targets[:, 1]
        gcx = targets[:, 0] + 0.5 * gw
        gcy = targets[:, 1] + 0.5 * gh
        return torch.stack(
            [wx * (gcx - pcx) / pw, wy * (gcy - pcy) / ph, ww * torch.log(gw / pw), wh * torch.log(gh / ph)], dim=1
        )

    def decode(self, deltas: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """Apply ``deltas (N, 4*k)`` to ``proposals (N, 4)`` (ours); returns ``(N, 4*k)`` boxes."""
        proposals = proposals.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        pw = (proposals[:, 2] - proposals[:, 0]).unsqueeze(1)
        ph = (proposals[:, 3] - proposals[:, 1]).unsqueeze(1)
        pcx = proposals[:, 0].unsqueeze(1) + 0.5 * pw
        pcy = proposals[:, 1].unsqueeze(1) + 0.5 * ph
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.scale_clamp)
        cx = dx * pw + pcx
        cy = dy * ph + pcy
        w = torch.exp(dw) * pw
        h = torch.exp(dh) * ph
        out = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=2)
        return out.reshape(deltas.shape[0], -1)


def as_boxes_tensor(boxes: Union[np.ndarray, torch.Tensor, Sequence], name: str = "boxes") -> torch.Tensor:
    """Validate and convert a box array to a float32 ``(N, 4)`` tensor (ours)."""
    t = torch.as_tensor(np.asarray(boxes, dtype=np.float32) if not isinstance(boxes, torch.Tensor) else boxes)
    if t.numel() == 0:
        return t.reshape(0, 4).float()
    if t.ndim != 2 or t.shape[1] != 4:
        raise ValueError(f"{name}: expected shape (N, 4), got {tuple(t.shape)}")
    return t.float()
