"""SPP-net's image classifier (He et al. 2014, section 3): conv backbone, image-level spatial
pyramid pooling to a fixed-length vector, fc layers, class scores.

Shape shorthand: N images, C backbone channels, L = C * sum(n*n) over the pyramid levels,
K classes. Images are RGB with 0..255 values; the model applies the backbone's input
normalisation itself, so callers never normalise.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..layers import SpatialPyramidPool
from ..modeling.backbone import Backbone, build_backbone, normalize_image

Images = Union[Tensor, Sequence[Tensor]]


class SPPClassifier(nn.Module):
    """Backbone + image-level SPP + fc layers + a K-way linear layer (softmax on the logits).

    ``forward(images)`` takes either a batch ``(N, 3, H, W)`` of one size, or a list of ``N``
    images ``(3, H_i, W_i)`` of any sizes (grouped by size internally, order kept), and returns
    logits ``(N, K)``. Any ``H, W >= 1`` gives the same length ``L`` after the pyramid. Example::

        model = build_classifier(ModelConfig(backbone="tiny", spp_levels=[4, 2, 1]), 3)
        model([torch.zeros(3, 40, 50), torch.zeros(3, 120, 90)]).shape   # (2, 3)

    ``spp_levels: [1]`` is global pooling: the fixed-size baseline.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        levels: Sequence[int] = (4, 2, 1),
        mode: str = "max",
        fc_dims: Sequence[int] = (256,),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"SPPClassifier: need at least 2 classes, got {num_classes}")
        self.backbone = backbone
        self.spp = SpatialPyramidPool(levels, mode=mode)
        self.num_classes = num_classes
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        width = self.spp.output_size(backbone.out_channels)
        for k, dim in enumerate(fc_dims):
            layers[f"fc{k + 1}"] = nn.Linear(width, dim)
            layers[f"relu{k + 1}"] = nn.ReLU(inplace=True)
            if dropout > 0:
                layers[f"drop{k + 1}"] = nn.Dropout(dropout)
            width = dim
        layers["cls"] = nn.Linear(width, num_classes)
        self.head = nn.Sequential(layers)
        for m in self.head.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    @property
    def feature_length(self) -> int:
        """L, the fixed length of the pooled vector."""
        return self.spp.output_size(self.backbone.out_channels)

    def pooled(self, images: Tensor) -> Tensor:
        """RGB 0..255 ``(N, 3, H, W)`` -> pooled features ``(N, L)``."""
        x = normalize_image(images, self.backbone.normalization)
        return self.spp(self.backbone(x))

    def forward(self, images: Images) -> Tensor:
        if isinstance(images, Tensor):
            if images.dim() == 3:
                images = images.unsqueeze(0)
            return self.head(self.pooled(images))
        return self._forward_list(list(images))

    def _forward_list(self, images: List[Tensor]) -> Tensor:
        if not images:
            raise ValueError("SPPClassifier: empty list of images")
        groups: Dict[Tuple[int, ...], List[int]] = {}
        for i, im in enumerate(images):
            if im.dim() != 3:
                raise ValueError(f"SPPClassifier: list items must be (3, H, W), got {tuple(im.shape)}")
            groups.setdefault(tuple(im.shape), []).append(i)
        feats = [torch.empty(0)] * len(images)
        for idx in groups.values():
            pooled = self.pooled(torch.stack([images[i] for i in idx]))
            for j, i in enumerate(idx):
                feats[i] = pooled[j]
        return self.head(torch.stack(feats))


def build_classifier(cfg: ModelConfig, num_classes: int) -> SPPClassifier:
    """The classifier a ModelConfig describes (backbone weights loaded and frozen as configured)."""
    backbone = build_backbone(cfg)
    return SPPClassifier(
        backbone,
        num_classes,
        levels=cfg.spp_levels,
        mode=cfg.spp_mode,
        fc_dims=cfg.fc_dims,
        dropout=cfg.dropout,
    )
