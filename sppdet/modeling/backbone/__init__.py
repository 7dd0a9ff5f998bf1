"""Convolutional backbones: image -> one conv feature map, plus its projection geometry.

One file per part: :mod:`.base` (:class:`Backbone`), :mod:`.geometry` (:func:`feature_geometry`),
one file per family (:mod:`.tiny`, :mod:`.zf`, :mod:`.vgg`, :mod:`.resnet`, :mod:`.mobilenet`),
:mod:`.weights` (:func:`load_weights`), :mod:`.build` (:func:`build_backbone`). Input
normalisation is a data transform: :func:`sppdet.data.transforms.normalize_image`.

Shape shorthand: ``N`` images, ``C`` feature channels, ``H' = ceil(H / stride)``-ish.
``Backbone.forward(images (N, 3, H, W) normalised float) -> features (N, C, H', W')``.

Projection (SPP-net Appendix A, in our continuous pixel coordinates where pixel ``i`` spans
``[i, i + 1)``): feature cell ``j`` is centred at image ``x = stride * j + offset``. Both are
computed from the layers themselves by :func:`feature_geometry` and checked numerically in
the tests (gradient support of one output cell).

==============  ======  ======  ============  =========================================
backbone        stride  offset  out_channels  layers kept (freeze stages, 1-based)
==============  ======  ======  ============  =========================================
tiny            16 / 8  0.5     4*tiny_width  stage1..stage5 (5 stages, 3x3 conv+BN+ReLU)
zf5             16      0.5     256           conv1..conv5 (stage k = conv k, LRN, pool)
vgg16           16      8.0     512           conv1_x..conv5_x blocks, last max-pool cut
resnet18/50     16      0.5     256/1024      stem (conv1, bn1), layer1, layer2, layer3
mobilenet_v2    16      0.5     96            features[0..13], one stage per block
mobilenet_v2    32      0.5     1280          features[0..18] (all), one stage per block
==============  ======  ======  ============  =========================================

VGG's 2x2 max-pools have no centre pixel, hence its 8.0 (= 0.5 * (1 + 2 + 4 + 8) + 0.5).
``reduce_channels > 0`` appends a 1x1 conv + ReLU (``reduce.0``); geometry is unchanged.

Weights (``model.weights``): ``""`` random init; a torchvision enum name such as
``"IMAGENET1K_V1"``, ``"DEFAULT"`` or ``"ResNet50_Weights.IMAGENET1K_V2"`` (downloaded by
torchvision); or a local state_dict file read with ``weights_only=True``. A full-model
state_dict (torchvision keys, e.g. ``features.0.0.weight``) maps onto the truncated backbone
as is: the parts the truncation drops (classifier, ``layer4``...) are ignored, a sppdet
checkpoint's ``model``/``backbone.`` wrapper is unwrapped. ZF-5 and tiny take local files only.
"""

from ...data.transforms import NORMALIZATIONS, normalize_image
from .base import Backbone
from .build import BACKBONES, build_backbone
from .geometry import feature_geometry
from .weights import load_weights, resolve_weights
from .zf import WithinChannelLRN

__all__ = [
    "Backbone",
    "WithinChannelLRN",
    "build_backbone",
    "feature_geometry",
    "load_weights",
    "normalize_image",
    "resolve_weights",
    "BACKBONES",
    "NORMALIZATIONS",
]
