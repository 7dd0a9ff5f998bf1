"""Projection geometry of a conv net: feature cell ``j`` <-> image ``stride * j + offset``."""

from __future__ import annotations

from typing import Any, Iterator, Tuple

from torch import nn


def spatial_layers(module: nn.Module) -> Iterator[nn.Module]:
    """Conv/pool layers in registration order (= forward order for every backbone here).

    ResNet ``downsample`` shortcuts are skipped: they share the main path's geometry.
    """
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        yield module
        return
    for name, child in module.named_children():
        if name == "downsample":
            continue
        if isinstance(child, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            yield child
        elif isinstance(child, (nn.ConvTranspose2d, nn.Upsample, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            raise ValueError(f"feature_geometry: {type(child).__name__} has no fixed projection geometry")
        else:
            yield from spatial_layers(child)


def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def feature_geometry(module: nn.Module) -> Tuple[int, float]:
    """``(stride, offset)`` of a chain of conv/pool layers: cell ``j`` <-> image ``stride*j + offset``.

    A layer (kernel k, stride s, padding p, dilation d) moves the centre of an output cell by
    ``(d*(k-1)/2 - p)`` of its input cells; summed over layers, each scaled by the stride
    accumulated before it, plus 0.5 for pixel centres. Both axes must agree.
    """
    axes = []
    for axis in (0, 1):
        stride, centre = 1, 0.0
        layer: Any  # Conv2d / MaxPool2d / AvgPool2d: int-or-pair attributes
        for layer in spatial_layers(module):
            k = _pair(layer.kernel_size)[axis]
            s = _pair(layer.stride)[axis]
            d = _pair(getattr(layer, "dilation", 1))[axis]
            p = layer.padding
            if p == "valid":
                p = 0
            elif p == "same":
                p = d * (k - 1) / 2
            else:
                p = _pair(p)[axis]
            centre += (d * (k - 1) / 2 - p) * stride
            stride *= s
        axes.append((stride, centre + 0.5))
    if axes[0] != axes[1]:
        raise ValueError(f"feature_geometry: x and y geometry differ ({axes[1]} vs {axes[0]})")
    return axes[1]
