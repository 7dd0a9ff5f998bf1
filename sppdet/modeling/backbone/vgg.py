"""VGG-16 conv layers (torchvision layout)."""

from __future__ import annotations

from collections import OrderedDict
from typing import List, Union

from torch import nn

from ...config import ModelConfig
from .base import Backbone, init_convs


def build_vgg16(cfg: ModelConfig) -> Backbone:
    """torchvision ``vgg16().features`` up to relu5_3 (indices 0..29; pool5 at 30 cut).

    Built directly (same indices as torchvision) to skip allocating the 120M-parameter
    classifier. Stages: conv1_x (features.0-4), conv2_x (5-9), conv3_x (10-16), conv4_x
    (17-23), conv5_x (24-29)."""
    plan: List[Union[int, str]] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    seq: List[nn.Module] = []
    stages: List[List[str]] = []
    block: List[str] = []
    cin = 3
    for v in plan:
        if v == "M":
            seq.append(nn.MaxPool2d(2, 2))
            stages.append(block)
            block = []
        else:
            block.append(f"features.{len(seq)}")
            seq += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=True)]
            cin = int(v)
    stages.append(block)
    features = nn.Sequential(*seq)
    init_convs(features)
    return Backbone(
        "vgg16",
        OrderedDict(features=features),
        stages,
        512,
        reduce_channels=cfg.reduce_channels,
        truncated_prefixes=("features.30.",),
    )
