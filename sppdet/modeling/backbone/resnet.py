"""torchvision ResNets up to layer3."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torchvision

from ...config import ModelConfig
from .base import Backbone


def resnet_builder(arch: str) -> Callable[[ModelConfig], Backbone]:
    """A builder of torchvision ResNet ``arch`` (e.g. ``"resnet50"``) cut after layer3."""

    def build(cfg: ModelConfig) -> Backbone:
        """torchvision ResNet up to layer3 (stride 16). Stages: stem (conv1, bn1), layer1..3."""
        net = getattr(torchvision.models, arch)(weights=None)
        keys = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]
        layers = OrderedDict((k, getattr(net, k)) for k in keys)
        out = (
            net.layer3[-1].conv3.out_channels if hasattr(net.layer3[-1], "conv3") else net.layer3[-1].conv2.out_channels
        )
        stages = [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"]]
        return Backbone(arch, layers, stages, out, reduce_channels=cfg.reduce_channels, truncated_prefixes=("layer4.",))

    return build
