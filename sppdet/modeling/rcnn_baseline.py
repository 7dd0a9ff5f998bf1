"""R-CNN mode: the baseline SPP-net is compared with, on the same backbone and fc weights.

R-CNN (Girshick et al. 2014) crops every window out of the image, warps it to a fixed
``crop_size x crop_size`` input and runs the whole conv stack on each warped window; SPP-net
runs the conv stack once per image and pools each window from the shared map. This module
runs an :class:`~sppdet.modeling.detector.SPPDetector`'s own backbone, SPP layer and head in
R-CNN's way, so that the two modes differ only in where the conv features come from:

1. **context**: each window is enlarged so that, once warped, it carries ``context`` pixels
   of surrounding image on every side (R-CNN's ``padding = 16``): a window of width ``w``
   grows by ``context * w / (crop_size - 2 * context)`` on the left and on the right (same
   for the height). ``context = 0`` warps the window alone.
2. **warp**: the enlarged window is resampled bilinearly (anisotropically) to
   ``crop_size x crop_size``; output pixel ``(r, c)`` is centred on image point
   ``(x1 + (c + 0.5) * w / crop_size, y1 + (r + 0.5) * h / crop_size)`` in our continuous
   coordinates. Parts outside the image read 0, which after normalisation is the mean pixel
   (``imagenet``/``caffe``), R-CNN's fill. (R-CNN resizes the in-image part of the window with
   ``imresize``; one bilinear sample per pixel, without anti-aliasing, is cv2's ``INTER_LINEAR``.)
3. **conv**: the backbone runs on the warped windows, ``batch_size`` at a time.
4. **pool5**: R-CNN's pool5 is a fixed-size pooling of the map of a ``crop_size`` input. To
   reuse the SPP model's fc weights unchanged, the same pyramid pooling is applied to each
   window's whole map, i.e. to one RoI ``(0, 0, crop_size, crop_size)`` in the warped frame,
   projected like any SPP window (ZF-5: cells 0..13 of the 15 x 15 map of a 224 input; cell
   14 is centred outside the window). For a ``crop_size`` image and that window, without
   context, R-CNN mode therefore gives exactly SPP mode's vector (tested).

Shape shorthand: R windows, B windows per conv batch, S = ``crop_size``, D = SPP vector length.

Example::

    rcnn = RCNNBaseline(model)                        # model: an SPPDetector
    image = rcnn.prepare(image_rgb)                   # (3, H, W), original resolution
    out = rcnn(image, boxes)                          # same dict as model.head: cls_logits...
"""

from __future__ import annotations

from typing import Dict, Iterator

import cv2
import numpy as np
import torch
from torch import nn
from torchvision.ops import roi_align

from ..data.transforms import normalize_image
from .detector import SPPDetector
from .features import ImageBatch

#: R-CNN's warped input size and context padding (pixels of the warped frame, per side).
CROP_SIZE = 224
CONTEXT = 16


def context_boxes(boxes: torch.Tensor, crop_size: int = CROP_SIZE, context: int = CONTEXT) -> torch.Tensor:
    """Enlarge ``(R, 4)`` windows so that warped to ``crop_size`` they keep ``context`` pixels
    of surroundings per side: each side moves out by ``context * size / (crop_size - 2*context)``."""
    if context <= 0:
        return boxes.clone()
    if 2 * context >= crop_size:
        raise ValueError(f"context {context} leaves no room in a {crop_size} px crop")
    scale = context / float(crop_size - 2 * context)
    pad_x = (boxes[:, 2] - boxes[:, 0]) * scale
    pad_y = (boxes[:, 3] - boxes[:, 1]) * scale
    return torch.stack([boxes[:, 0] - pad_x, boxes[:, 1] - pad_y, boxes[:, 2] + pad_x, boxes[:, 3] + pad_y], 1)


def warp_windows(
    image: torch.Tensor, boxes: torch.Tensor, crop_size: int = CROP_SIZE, context: int = CONTEXT
) -> torch.Tensor:
    """Warped windows ``(R, 3, S, S)`` of a normalised image ``(3, H, W)`` (see module docs).

    One bilinear sample per output pixel, at its centre; samples outside the image read 0
    (the border pixel within one pixel of it). On the CPU each window is one
    ``cv2.warpAffine`` (sample positions quantised to 1/32 px; output channels-last, which
    the backbone prefers); elsewhere ``roi_align`` with ``aligned=True`` and
    ``sampling_ratio=1``, the same affine warp. The two differ only next to the border.
    """
    if image.dim() == 4:
        image = image[0]
    boxes = boxes.to(device=image.device, dtype=torch.float32)
    if boxes.numel() == 0:
        return image.new_zeros((0, image.shape[0], crop_size, crop_size))
    windows = context_boxes(boxes, crop_size, context)
    if image.device.type != "cpu" or image.dtype != torch.float32:
        return roi_align(
            image[None],
            [windows.to(image.dtype)],
            output_size=(crop_size, crop_size),
            spatial_scale=1.0,
            sampling_ratio=1,
            aligned=True,
        )

    # one replicated pixel around the image, as roi_align clamps samples less than 1 px outside
    src = cv2.copyMakeBorder(image.permute(1, 2, 0).contiguous().numpy(), 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    out = np.empty((len(windows), crop_size, crop_size, image.shape[0]), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(windows.double().tolist()):
        sx, sy = (x2 - x1) / crop_size, (y2 - y1) / crop_size
        # crop pixel index (c, r) -> image pixel index (x1 + (c + 0.5) sx - 0.5, ...), + 1 for the border
        m = np.array([[sx, 0.0, x1 + 0.5 * sx + 0.5], [0.0, sy, y1 + 0.5 * sy + 0.5]])
        cv2.warpAffine(
            src,
            m,
            (crop_size, crop_size),
            dst=out[i],
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        )
    return torch.from_numpy(out).permute(0, 3, 1, 2)


class RCNNBaseline(nn.Module):
    """An :class:`SPPDetector` run R-CNN's way: warp each window, conv per window, pool5, fc.

    ``forward(image (3, H, W) normalised, boxes (R, 4) in that image's pixels)`` returns the
    head's dict (``cls_logits (R, K+1)``, ``bbox_deltas (R, 4K)``, ``fc7 (R, F)``). The steps
    are also exposed one by one (:meth:`warp`, :meth:`conv`, :meth:`pool`) for timing.
    """

    def __init__(
        self, detector: SPPDetector, crop_size: int = CROP_SIZE, context: int = CONTEXT, batch_size: int = 32
    ) -> None:
        super().__init__()
        self.detector = detector
        self.crop_size = int(crop_size)
        self.context = int(context)
        self.batch_size = max(1, int(batch_size))

    def prepare(self, image_rgb: np.ndarray) -> torch.Tensor:
        """Normalise an RGB uint8 ``HxWx3`` image at its own resolution: ``(3, H, W)``."""
        return normalize_image(np.ascontiguousarray(image_rgb), self.detector.normalization)

    def warp(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``(R, 3, S, S)`` warped windows with context."""
        return warp_windows(image, boxes, self.crop_size, self.context)

    def conv(self, crops: torch.Tensor) -> torch.Tensor:
        """The backbone on warped windows: ``(B, C, h, w)``, run exactly as SPP mode runs it
        (:meth:`SPPDetector.conv_features`, with its CPU-inference fast path)."""
        n = len(crops)
        batch = ImageBatch([crops], crops.new_ones((n, 1), dtype=torch.float64), [(self.crop_size,) * 2] * n)
        return self.detector.conv_features(batch)[0]

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """pool5: the SPP pyramid over each window's whole map, ``(B, D)``."""
        n = features.shape[0]
        rois = features.new_zeros((n, 5))
        rois[:, 0] = torch.arange(n, dtype=features.dtype, device=features.device)
        rois[:, 3:] = float(self.crop_size)
        return self.detector.spp(features, rois)

    def batches(self, image: torch.Tensor, boxes: torch.Tensor) -> Iterator[torch.Tensor]:
        """pool5 vectors ``(B, D)`` of consecutive batches of windows."""
        for i in range(0, len(boxes), self.batch_size):
            yield self.pool(self.conv(self.warp(image, boxes[i : i + self.batch_size])))

    def window_features(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """pool5 vectors ``(R, D)`` of every window."""
        if len(boxes) == 0:
            return image.new_zeros((0, self.detector.spp_dim))
        return torch.cat(list(self.batches(image, boxes)))

    def forward(self, image: torch.Tensor, boxes: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Head outputs for every window of ``boxes`` on ``image``, R-CNN style (warped crops)."""
        outs = [self.detector.head(pooled) for pooled in self.batches(image, boxes)]
        if not outs:
            return self.detector.head(image.new_zeros((0, self.detector.spp_dim)))
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
