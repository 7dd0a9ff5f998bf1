"""Image transforms applied before the backbone: input normalisation."""

from __future__ import annotations

from typing import Dict, Tuple, Union

import numpy as np
import torch

from ..errors import ConfigError

#: mode -> (channel order, mean, std) applied to 0..255 pixel values: (x - mean) / std.
NORM_PARAMS: Dict[str, Tuple[str, Tuple[float, ...], Tuple[float, ...]]] = {
    "imagenet": ("rgb", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),  # [0,1] mean/std * 255
    "minus_one_one": ("rgb", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    "caffe": ("bgr", (102.9801, 115.9465, 122.7717), (1.0, 1.0, 1.0)),
    "unit": ("rgb", (0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),
}
NORMALIZATIONS = tuple(NORM_PARAMS)


def check_normalization(mode: str) -> None:
    """Raise :class:`ConfigError` unless ``mode`` is one of :data:`NORMALIZATIONS`."""
    if mode not in NORM_PARAMS:
        raise ConfigError(f"model.normalization: unknown mode {mode!r} (choose from {', '.join(NORMALIZATIONS)})")


def normalize_image(image: Union[np.ndarray, torch.Tensor], mode: str) -> torch.Tensor:
    """An RGB image with 0..255 values -> normalised float32 tensor, channels first.

    ``image``: numpy ``(H, W, 3)`` (uint8 or float); torch ``(3, H, W)``, ``(H, W, 3)`` or a
    batch ``(N, 3, H, W)``. Returns ``(3, H, W)`` (``(N, 3, H, W)`` for a batch) on the input's
    device. Modes: ``imagenet`` ((x/255 - mean) / std, RGB), ``minus_one_one`` (x/127.5 - 1),
    ``caffe`` (BGR, minus the mean pixel [102.98, 115.95, 122.77]), ``unit`` (x/255).
    """
    check_normalization(mode)
    order, mean, std = NORM_PARAMS[mode]
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"normalize_image: expected an HxWx3 RGB array, got shape {image.shape}")
        chw = image.transpose(2, 0, 1)
        x = torch.from_numpy(np.ascontiguousarray(chw[::-1] if order == "bgr" else chw))  # one copy
    else:
        x = image
        if x.dim() == 3 and x.shape[0] != 3 and x.shape[-1] == 3:
            x = x.permute(2, 0, 1)
        if x.dim() not in (3, 4) or x.shape[-3] != 3:
            raise ValueError(f"normalize_image: expected 3xHxW, HxWx3 or Nx3xHxW, got {tuple(image.shape)}")
        x = (x.flip(-3) if order == "bgr" else x).contiguous()
    floating = x.dtype in (torch.float32, torch.float64)
    out = x.clone() if floating else x.to(torch.float32)  # never modify the caller's data
    shape = (3, 1, 1)
    if any(s != 1.0 for s in std):
        out.mul_(torch.tensor([1.0 / s for s in std], dtype=out.dtype, device=out.device).view(shape))
    if any(m != 0.0 for m in mean):  # (x - mean) / std == x / std - mean / std
        out.sub_(torch.tensor([m / s for m, s in zip(mean, std)], dtype=out.dtype, device=out.device).view(shape))
    return out
