"""torchvision MobileNetV2 features at stride 16 or 32."""

from __future__ import annotations

from collections import OrderedDict

import torchvision

from ...config import ModelConfig
from .base import Backbone


def build_mobilenet_v2(cfg: ModelConfig) -> Backbone:
    """torchvision ``mobilenet_v2().features``: stride 16 = ``features[:14]`` (block 13 ends the
    stride-16 stage, 96 ch, linear bottleneck output); stride 32 = all of ``features`` (up to
    the 1x1 conv to 1280 ch + ReLU6, as torchvision's detection examples use; consider
    ``reduce_channels``). One freeze stage per ``features`` block (stem conv = stage 1)."""
    net = torchvision.models.mobilenet_v2(weights=None)
    n = 14 if cfg.feature_stride == 16 else len(net.features)
    features = net.features[:n]
    out = 96 if n == 14 else 1280
    truncated = tuple(f"features.{i}." for i in range(n, len(net.features)))
    return Backbone(
        "mobilenet_v2",
        OrderedDict(features=features),
        [[f"features.{i}"] for i in range(n)],
        out,
        reduce_channels=cfg.reduce_channels,
        truncated_prefixes=truncated,
    )
