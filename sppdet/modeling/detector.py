"""The SPP-net detector: conv features once per image (per scale) -> region SPP -> fc head.

Shape shorthand: N images, S scales, R windows, C feature channels, K classes,
D = C * sum(n*n) for pyramid levels n.

``forward`` returns raw outputs only. The loss (:class:`sppdet.modeling.loss.FastRCNNLoss`)
and the post-processing (:class:`sppdet.modeling.postprocess.PostProcess`) are separate
objects, so a validation loss is always available and train/eval modes return the same
thing.

Example::

    model = build_detector(cfg, num_classes=3)
    batch = model.prepare([image_rgb], cfg.input.test_scales, cfg.input.max_size)
    rois = torch.tensor([[0, 10.0, 20.0, 200.0, 180.0]])   # (batch index, x1, y1, x2, y2)
    out = model(batch, rois)        # {"cls_logits": (1, K+1), "bbox_deltas": (1, 4K), "fc7": ...}
"""

from __future__ import annotations

import copy
import logging
import weakref
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..layers.spp import RoISpatialPyramidPool
from .backbone import Backbone, build_backbone
from .features import ImageBatch, assign_scales, collate_images, prepare_image
from .head import SPPHead
from .train_fast import backbone_forward


class SPPDetector(nn.Module):
    """Backbone + region SPP + fc head (see module docstring)."""

    backbone: Backbone
    spp: RoISpatialPyramidPool
    head: SPPHead
    spp_dim: int
    num_classes: int
    normalization: str

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        spp_levels: Sequence[int] = (6, 3, 2, 1),
        spp_mode: str = "max",
        fc_dims: Sequence[int] = (4096, 4096),
        dropout: float = 0.5,
        normalization: str = "imagenet",
        target_size: int = 224,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.spp = RoISpatialPyramidPool(
            levels=tuple(spp_levels), stride=backbone.stride, offset=backbone.offset, mode=spp_mode
        )
        self.spp_dim = backbone.out_channels * sum(n * n for n in spp_levels)
        self.head = SPPHead(self.spp_dim, num_classes, fc_dims, dropout)
        self.num_classes = num_classes
        self.normalization = normalization
        self.target_size = target_size

    # -- input -------------------------------------------------------------------------
    def prepare(
        self, images: Sequence[np.ndarray], scales: Sequence[int], max_size: int, flips: Sequence[bool] = ()
    ) -> ImageBatch:
        """Resize (per scale), optionally mirror, normalise and pad RGB uint8 ``HxWx3`` images."""
        flips = list(flips) or [False] * len(images)
        prepared = [prepare_image(im, scales, max_size, self.normalization, f) for im, f in zip(images, flips)]
        return collate_images(prepared, [im.shape[:2] for im in images], self.backbone.stride)

    # -- model -------------------------------------------------------------------------
    def conv_features(self, batch: ImageBatch) -> List[torch.Tensor]:
        """The conv feature map of every image at every scale: one backbone pass per scale.

        CPU inference (eval mode, autograd off) runs :func:`inference_backbone` on channels-last
        input: same numbers up to float rounding, 1.3-1.4x faster for ZF-5 and ResNet-50 on a
        2-core AVX2 CPU. The maps come out channels-last, which region SPP reads faster too.
        CPU training runs a frozen prefix of the backbone the same way (:func:`backbone_forward`).
        """
        if is_cpu_inference(self, batch.images[0]) and not self.backbone.training:
            backbone = inference_backbone(self.backbone)
            return [backbone(x.contiguous(memory_format=torch.channels_last)) for x in batch.images]
        return [backbone_forward(self.backbone, x) for x in batch.images]

    def pool(
        self, features: List[torch.Tensor], factors: torch.Tensor, rois: torch.Tensor, target_size: float = 0
    ) -> torch.Tensor:
        """Region-SPP vectors ``(R, D)`` for ``rois (R, 5)`` = ``(batch index, x1, y1, x2, y2)``
        in original image pixels; each window is pooled at its best scale."""
        if rois.numel() == 0:
            return features[0].new_zeros((0, self.spp_dim))
        factors = factors.to(rois.device)
        bidx = rois[:, 0].long()
        roi_factors = factors[bidx]  # (R, S)
        level = assign_scales(rois[:, 1:], roi_factors, target_size or self.target_size)
        if len(features) == 1:
            scaled = rois.clone()
            scaled[:, 1:] = rois[:, 1:] * roi_factors[:, :1].to(rois.dtype)
            return self.spp(features[0], scaled)
        out = features[0].new_empty((len(rois), self.spp_dim))
        for s, feat in enumerate(features):
            idx = torch.nonzero(level == s).flatten()
            if idx.numel() == 0:
                continue
            scaled = rois[idx].clone()
            scaled[:, 1:] = scaled[:, 1:] * roi_factors[idx, s : s + 1].to(rois.dtype)
            out[idx] = self.spp(feat, scaled)
        return out

    def forward(self, batch: ImageBatch, rois: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Raw outputs for ``rois (R, 5)``: ``cls_logits (R, K+1)``, ``bbox_deltas (R, 4K)``,
        ``fc7 (R, F)``."""
        feats = self.conv_features(batch)
        return self.head(self.pool(feats, batch.factors, rois))


def is_cpu_inference(module: nn.Module, x: torch.Tensor) -> bool:
    """True for CPU input with ``module`` in eval mode and autograd off."""
    return x.device.type == "cpu" and not module.training and not torch.is_grad_enabled()


#: backbone -> (fingerprint of its weights, its inference copy); see inference_backbone.
_INFERENCE_COPIES: "weakref.WeakKeyDictionary[nn.Module, Tuple[tuple, nn.Module]]" = weakref.WeakKeyDictionary()


def _weights_fingerprint(module: nn.Module) -> tuple:
    tensors = [t.detach() for t in list(module.parameters()) + list(module.buffers())]
    sums = [t.sum(dtype=torch.float64) for t in tensors if t.is_floating_point() and t.numel()]
    # inference tensors (a model built under inference mode) have no version counter: the sums still tell
    return (
        tuple((t.data_ptr(), 0 if t.is_inference() else t._version, t.dtype) for t in tensors),
        tuple(torch.stack(sums).tolist()) if sums else (),
    )


def inference_backbone(backbone: nn.Module) -> nn.Module:
    """A copy of an eval-mode ``backbone`` for CPU inference: each batch-norm folded into the
    conv before it (``torch.fx`` ``fuse``; skipped where tracing fails) and the conv weights
    stored channels-last, oneDNN's preferred layout. Same outputs up to float rounding.

    Costs one extra copy of the backbone weights (ZF-5 15 MB, ResNet-50 to layer3 35 MB).
    Cached per backbone and rebuilt as soon as any of its weights or buffers changes
    (pointer, version counter or sum differs), so training in between is safe."""
    key = _weights_fingerprint(backbone)
    hit = _INFERENCE_COPIES.get(backbone)
    if hit is not None and hit[0] == key:
        return hit[1]
    with torch.inference_mode(False), torch.no_grad():
        fast = None
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules()):
            # torch.fx is only needed (and only imported) when there is a batch-norm to fold
            from torch.fx.experimental.optimization import fuse

            try:
                fast = fuse(backbone)
            except Exception as e:  # a backbone torch.fx cannot trace: channels-last only
                logging.getLogger("sppdet.detector").debug("batch-norm folding skipped: %s", e)
        fast = (fast if fast is not None else copy.deepcopy(backbone)).to(memory_format=torch.channels_last)
    _INFERENCE_COPIES[backbone] = (key, fast)
    return fast


def build_detector(cfg, num_classes: int, weights_follow: bool = False) -> SPPDetector:
    """Build the detector from a :class:`sppdet.config.Config` (``weights_follow``: a checkpoint's
    weights are loaded next; see :func:`build_backbone`)."""
    backbone = build_backbone(cfg.model, weights_follow)
    model = SPPDetector(
        backbone,
        num_classes,
        cfg.model.spp_levels,
        cfg.model.spp_mode,
        cfg.model.fc_dims,
        cfg.model.dropout,
        cfg.model.normalization,
        cfg.input.target_size,
    )
    return model
