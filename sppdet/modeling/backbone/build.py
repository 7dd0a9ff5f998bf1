"""``build_backbone``: the backbone a :class:`ModelConfig` describes, weights loaded, frozen."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict

from torch import nn

from ...config import ModelConfig
from .base import Backbone
from .mobilenet import build_mobilenet_v2
from .resnet import resnet_builder
from .tiny import build_tiny
from .vgg import build_vgg16
from .weights import check_enum_normalization, load_weights
from .zf import build_zf5

log = logging.getLogger("sppdet.backbone")

BACKBONES: Dict[str, Callable[[ModelConfig], Backbone]] = {
    "tiny": build_tiny,
    "zf5": build_zf5,
    "vgg16": build_vgg16,
    "resnet18": resnet_builder("resnet18"),
    "resnet50": resnet_builder("resnet50"),
    "mobilenet_v2": build_mobilenet_v2,
}


def build_backbone(cfg: ModelConfig, weights_follow: bool = False) -> Backbone:
    """Build, load weights into and freeze the backbone described by ``cfg`` (a ModelConfig; its
    values were checked when it was made, see :mod:`sppdet.config`). ``weights_follow``: trained
    weights (a checkpoint) are loaded next, so random initial weights are not worth a warning."""
    backbone = BACKBONES[cfg.backbone](cfg)
    backbone.normalization = cfg.normalization
    if cfg.weights:
        source = load_weights(backbone, cfg.weights)
        if not isinstance(source, Path):
            check_enum_normalization(source, cfg.normalization)
    elif cfg.frozen_bn and not weights_follow and any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules()):
        log.warning(
            "model.frozen_bn is true with random weights (model.weights: ''): the %s backbone's "
            "batch-norms stay identity; set model.frozen_bn: false to train them",
            cfg.backbone,
        )
    return backbone.freeze(cfg.freeze_at, cfg.frozen_bn)
