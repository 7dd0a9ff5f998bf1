"""Multi-scale input preparation and window-to-scale assignment.

SPP-net computes the conv feature map once per image per scale. A scale is the length of
the image's shorter side after resizing (paper: 1-scale ``{688}``, 5-scale
``{480, 576, 688, 864, 1200}``), capped so the longer side stays within ``max_size``.
Each window is pooled from the one scale where its scaled area is closest to
``target_size**2`` (224x224 in the paper; the same rule as fast-rcnn's ``_project_im_rois``).

Images of different sizes are batched without distortion: each is resized by its own
factor, then zero-padded at the bottom/right to a common size (padding never moves pixel
coordinates, so window projection is unaffected).

Shape shorthand: N images, S scales, R windows, C channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np
import torch

from ..data.transforms import normalize_image
from ..structures import box_area


def scale_factors(height: int, width: int, scales: Sequence[int], max_size: int) -> List[float]:
    """Resize factor for each target shorter side, capped so the longer side <= ``max_size``."""
    short, long = min(height, width), max(height, width)
    out = []
    for s in scales:
        f = float(s) / short
        if max_size > 0 and round(f * long) > max_size:
            f = float(max_size) / long
        out.append(f)
    return out


def resize_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Resize an HxWx3 image by ``factor`` (bilinear; area when shrinking a lot)."""
    if abs(factor - 1.0) < 1e-9:
        return image
    h, w = image.shape[:2]
    nh, nw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
    interp = cv2.INTER_AREA if factor < 0.5 else cv2.INTER_LINEAR
    return cv2.resize(image, (nw, nh), interpolation=interp)


def pad_batch(images: Sequence[torch.Tensor], size_divisible: int = 1) -> torch.Tensor:
    """Stack ``(3, H_i, W_i)`` tensors into ``(N, 3, H, W)``, zero-padding bottom/right."""
    h = max(int(im.shape[1]) for im in images)
    w = max(int(im.shape[2]) for im in images)
    if size_divisible > 1:
        h = (h + size_divisible - 1) // size_divisible * size_divisible
        w = (w + size_divisible - 1) // size_divisible * size_divisible
    out = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    for i, im in enumerate(images):
        out[i, :, : im.shape[1], : im.shape[2]].copy_(im)
    return out


def assign_scales(boxes: torch.Tensor, factors: torch.Tensor, target_size: float = 224.0) -> torch.Tensor:
    """Index of the scale at which each window's scaled area is closest to ``target_size**2``.

    Args:
        boxes: ``(R, 4)`` windows ``(x1, y1, x2, y2)`` in original image pixels.
        factors: ``(R, S)`` resize factor of each window's image at each scale.
    Returns:
        ``(R,)`` int64 scale indices (ties go to the smaller index, as ``argmin`` does).
    """
    if factors.shape[1] == 1:
        return torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
    areas = box_area(boxes).to(factors.dtype).unsqueeze(1)
    diff = (areas * factors**2 - float(target_size) ** 2).abs()
    return diff.argmin(dim=1)


def image_scale_factors(sizes: Sequence[Tuple[int, int]], scales: Sequence[int], max_size: int) -> torch.Tensor:
    """``(N, S)`` resize factors for images of ``(height, width)`` sizes."""
    return torch.tensor([scale_factors(h, w, scales, max_size) for h, w in sizes], dtype=torch.float64)


@dataclass
class ImageBatch:
    """Images prepared for the backbone.

    Attributes:
        images: one ``(N, 3, H_s, W_s)`` normalised, zero-padded tensor per scale ``s``.
        factors: ``(N, S)`` float64 resize factor of image ``i`` at scale ``s``.
        sizes: original ``(height, width)`` of each image.
    """

    images: List[torch.Tensor]
    factors: torch.Tensor
    sizes: List[Tuple[int, int]]

    def to(self, device) -> "ImageBatch":
        """The batch with its image tensors on ``device``."""
        return ImageBatch([im.to(device, non_blocking=True) for im in self.images], self.factors, self.sizes)

    def pin_memory(self) -> "ImageBatch":
        """The batch with its image tensors in pinned memory (DataLoader ``pin_memory``)."""
        return ImageBatch([im.pin_memory() for im in self.images], self.factors, self.sizes)


def prepare_image(
    image: np.ndarray, scales: Sequence[int], max_size: int, normalization: str, flip: bool = False
) -> Tuple[List[torch.Tensor], List[float]]:
    """Resize an RGB uint8 ``HxWx3`` image to each scale (optionally mirrored) and normalise.

    Returns one ``(3, H_s, W_s)`` float tensor per scale and the resize factors.
    """
    h, w = image.shape[:2]
    factors = scale_factors(h, w, scales, max_size)
    out = []
    for f in factors:
        r = resize_image(image, f)
        if flip:
            r = r[:, ::-1]
        out.append(normalize_image(np.ascontiguousarray(r), normalization))
    return out, factors


def collate_images(
    prepared: Sequence[Tuple[List[torch.Tensor], List[float]]], sizes: Sequence[Tuple[int, int]], size_divisible: int
) -> ImageBatch:
    """Pad images prepared by :func:`prepare_image` into an :class:`ImageBatch`."""
    num_scales = len(prepared[0][0])
    images = [pad_batch([p[0][s] for p in prepared], size_divisible) for s in range(num_scales)]
    factors = torch.tensor([p[1] for p in prepared], dtype=torch.float64)
    return ImageBatch(images, factors, [(int(s[0]), int(s[1])) for s in sizes])
