"""OpenCV's uint8 image resize written as traceable tensor ops (for the exported graph).

The Python inference path resizes with ``cv2.resize`` (:func:`sppdet.modeling.features.resize_image`):
``INTER_LINEAR`` for factors >= 0.5, ``INTER_AREA`` below. The exported graph must produce the
same pixels from the raw image, so:

* :func:`resize_linear` reproduces OpenCV's fixed-point bilinear kernel bit for bit (checked
  against ``cv2.resize`` in tests): 11-bit coefficients ``round(w * 2048)`` computed in float32,
  an exact integer horizontal pass, and the vector vertical pass
  ``((b0 * (S0 >> 4)) >> 16) + ((b1 * (S1 >> 4)) >> 16) + 2) >> 2``. Border rows keep their
  fractional weights on the clamped row (both taps read the same row; each product is floored
  separately), border columns get weight 1 on the edge pixel, as OpenCV does.
* :func:`resize_area` is the exact box average (float64) rounded to the nearest integer. OpenCV
  sums float32 weights, so a pixel whose mean lies within ~1e-5 of ``k + 0.5`` may come out one
  grey level apart (rare; only for factors < 0.5, i.e. images shrunk more than 2x).

All sizes are tensors so a traced graph keeps ``H`` and ``W`` dynamic.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

#: OpenCV's INTER_RESIZE_COEF_BITS: bilinear weights are integers in units of 1/2048.
_COEF_SCALE = 2048.0


def _linear_taps(src: Tensor, dst: Tensor, zero_border: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Source indices ``(i0, i1)`` and integer weights ``(c0, c1)`` of each of ``dst`` outputs."""
    scale = 1.0 / (dst.to(torch.float64) / src.to(torch.float64))  # OpenCV: 1 / inv_scale
    d = _arange(dst)
    f = ((d + 0.5) * scale - 0.5).to(torch.float32)
    i = torch.floor(f)
    frac = f - i
    i = i.to(torch.int64)
    last = src.to(torch.int64) - 1
    if zero_border:
        frac = torch.where((i < 0) | (i >= last), torch.zeros_like(frac), frac)
    c0 = torch.round((1.0 - frac) * _COEF_SCALE).to(torch.int32)
    c1 = torch.round(frac * _COEF_SCALE).to(torch.int32)
    zero = torch.zeros_like(i)
    i0 = torch.minimum(torch.maximum(i, zero), last)
    i1 = torch.minimum(torch.maximum(i + 1, zero), last)
    return i0, i1, c0, c1


def _arange(n: Tensor) -> Tensor:
    """``0 .. n-1`` as float64 for a 1-element integer tensor ``n`` (stays dynamic when traced)."""
    return torch.arange(n[0], dtype=torch.float64)  # type: ignore[call-overload]  # a tensor end stays dynamic


def resize_linear(image: Tensor, out_h: Tensor, out_w: Tensor) -> Tensor:
    """``cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR)`` for a uint8
    ``(H, W, 3)`` tensor; ``out_h``, ``out_w`` are 1-element int64 tensors. Returns uint8."""
    h, w = image_size(image)
    y0, y1, a0, a1 = _linear_taps(h, out_h, zero_border=False)
    x0, x1, b0, b1 = _linear_taps(w, out_w, zero_border=True)
    p = image.to(torch.int32)
    rows = p.index_select(1, x0) * b0.view(1, -1, 1) + p.index_select(1, x1) * b1.view(1, -1, 1)  # x 2048
    s0 = torch.div(rows.index_select(0, y0), 16, rounding_mode="floor")
    s1 = torch.div(rows.index_select(0, y1), 16, rounding_mode="floor")
    v = torch.div(s0 * a0.view(-1, 1, 1), 65536, rounding_mode="floor") + torch.div(
        s1 * a1.view(-1, 1, 1), 65536, rounding_mode="floor"
    )
    return torch.div(v + 2, 4, rounding_mode="floor").clamp(0, 255).to(torch.uint8)


def _area_axis(x: Tensor, src: Tensor, dst: Tensor, dim: int) -> Tensor:
    """Box-average ``x`` (float64) along ``dim`` from ``src`` to ``dst`` samples: output ``k``
    is the mean over ``[k * s, min((k + 1) * s, src))`` with ``s = src / dst``."""
    scale = 1.0 / (dst.to(torch.float64) / src.to(torch.float64))
    k = _arange(dst)
    lo = k * scale
    hi = torch.minimum((k + 1.0) * scale, src.to(torch.float64))
    csum = torch.cumsum(x, dim)
    csum = torch.cat([torch.zeros_like(x.narrow(dim, 0, 1)), csum], dim)  # csum[j] = sum of the first j

    def integral(t: Tensor) -> Tensor:  # integral of the piecewise-constant signal over [0, t)
        j = torch.floor(t).to(torch.int64)
        jc = torch.minimum(j, src.to(torch.int64) - 1)
        frac = (t - j.to(torch.float64)).clamp(min=0.0)
        shape = [1] * x.dim()
        shape[dim] = -1
        return csum.index_select(dim, j) + x.index_select(dim, jc) * frac.view(shape)

    shape = [1] * x.dim()
    shape[dim] = -1
    return (integral(hi) - integral(lo)) / (hi - lo).view(shape)


def resize_area(image: Tensor, out_h: Tensor, out_w: Tensor) -> Tensor:
    """Area (box-average) resize of a uint8 ``(H, W, 3)`` tensor, like ``cv2.INTER_AREA`` when
    shrinking (see the module docstring for the rare one-level difference). Returns uint8."""
    h, w = image_size(image)
    x = _area_axis(image.to(torch.float64), w, out_w, 1)
    x = _area_axis(x, h, out_h, 0)
    return torch.round(x).clamp(0, 255).to(torch.uint8)


def image_size(image: Tensor) -> Tuple[Tensor, Tensor]:
    """``(H, W)`` of an ``(H, W, 3)`` image as 1-element int64 tensors (dynamic in a traced graph).

    Not 0-d: the ONNX exporter computes arithmetic on 0-d tensors in float32 whatever their
    dtype, which would change OpenCV's float64 sample positions."""
    shape = torch._shape_as_tensor(image)
    return shape[0:1], shape[1:2]


def scale_factor(h: Tensor, w: Tensor, scale: int, max_size: int) -> Tensor:
    """1-element float64 resize factor: shorter side to ``scale``, longer side capped at ``max_size``
    (:func:`sppdet.modeling.features.scale_factors` for tensors)."""
    short = torch.minimum(h, w).to(torch.float64)
    long = torch.maximum(h, w).to(torch.float64)
    # tensor numerators: ``number / tensor`` is computed as ``number * (1 / tensor)``, one more rounding
    f = torch.full_like(short, float(scale)) / short
    if max_size > 0:
        f = torch.where(torch.round(f * long) > max_size, torch.full_like(long, float(max_size)) / long, f)
    return f


def resize_to_factor(image: Tensor, factor: Tensor) -> Tensor:
    """Resize a uint8 ``(H, W, 3)`` image by ``factor`` as :func:`sppdet.modeling.features.resize_image`
    does: output ``max(1, round(H * f)) x max(1, round(W * f))``, bilinear, area below 0.5."""
    h, w = image_size(image)
    out_h = torch.round(h.to(torch.float64) * factor).to(torch.int64).clamp(min=1)
    out_w = torch.round(w.to(torch.float64) * factor).to(torch.int64).clamp(min=1)
    lin = resize_linear(image, out_h, out_w)
    area = resize_area(image, out_h, out_w)
    return torch.where(factor < 0.5, area, lin)
