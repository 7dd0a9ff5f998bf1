"""ZF-5 (SPP-net's network) and its within-channel LRN."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ...config import ModelConfig
from .base import Backbone, init_convs


class WithinChannelLRN(nn.Module):
    """Caffe's ``LRN`` with ``norm_region: WITHIN_CHANNEL`` (used by ZF-5):
    ``x / (1 + alpha * mean_{size x size}(x^2))^beta`` (zero padding counted in the mean).

    ``nn.LocalResponseNorm`` normalises *across* channels, which is not what the ZF-5 weights
    were trained with."""

    def __init__(self, size: int = 3, alpha: float = 5e-5, beta: float = 0.75) -> None:
        super().__init__()
        self.size, self.alpha, self.beta = size, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x (N, C, H, W)`` within each channel; same shape."""
        sq = F.avg_pool2d(x * x, self.size, stride=1, padding=self.size // 2, count_include_pad=True)
        return x * sq.mul(self.alpha).add(1.0).pow(-self.beta)

    def extra_repr(self) -> str:
        """Size, alpha and beta, for ``print(module)``."""
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}"


def build_zf5(cfg: ModelConfig) -> Backbone:
    """ZF-5 as used by SPP-net (and released with py-faster-rcnn as ``ZF.v2.caffemodel``).

    ======  ===========================  ======  =======  =========
    layer   op                           stride  padding  channels
    ======  ===========================  ======  =======  =========
    conv1   7x7 conv + ReLU              2       3        96
    norm1   LRN within channel, 3x3      1       -        96
    pool1   3x3 max (ceil, like Caffe)   2       1        96
    conv2   5x5 conv + ReLU              2       2        256
    norm2   LRN within channel, 3x3      1       -        256
    pool2   3x3 max (ceil)               2       1        256
    conv3   3x3 conv + ReLU              1       1        384
    conv4   3x3 conv + ReLU              1       1        384
    conv5   3x3 conv + ReLU              1       1        256
    ======  ===========================  ======  =======  =========

    Padding is floor(k/2) everywhere (paper, Appendix A), so the total stride is 16 and cell
    ``j`` is centred on pixel ``16j``. SPP replaces pool5. LRN: alpha 5e-5, beta 0.75.
    Stage k (``freeze_at``) = conv k with its LRN/pool. Converted Caffe weights use
    ``normalization: caffe`` and keys ``conv{k}.weight`` / ``conv{k}.bias``.
    """
    layers = OrderedDict(
        conv1=nn.Conv2d(3, 96, 7, 2, 3),
        relu1=nn.ReLU(inplace=True),
        norm1=WithinChannelLRN(),
        pool1=nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True),
        conv2=nn.Conv2d(96, 256, 5, 2, 2),
        relu2=nn.ReLU(inplace=True),
        norm2=WithinChannelLRN(),
        pool2=nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True),
        conv3=nn.Conv2d(256, 384, 3, 1, 1),
        relu3=nn.ReLU(inplace=True),
        conv4=nn.Conv2d(384, 384, 3, 1, 1),
        relu4=nn.ReLU(inplace=True),
        conv5=nn.Conv2d(384, 256, 3, 1, 1),
        relu5=nn.ReLU(inplace=True),
    )
    for m in layers.values():
        init_convs(m)
    stages = [["conv1", "norm1", "pool1"], ["conv2", "norm2", "pool2"], ["conv3"], ["conv4"], ["conv5"]]
    return Backbone("zf5", layers, stages, 256, reduce_channels=cfg.reduce_channels)
