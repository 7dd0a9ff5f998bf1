"""Convolutional backbones: image -> one conv feature map, plus its projection geometry.

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

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import CheckpointError, ConfigError
from ..fileio import torch_load

log = logging.getLogger("sppdet.backbone")

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

# ---------------------------------------------------------------------------------------
# Input normalisation

#: mode -> (channel order, mean, std) applied to 0..255 pixel values: (x - mean) / std.
_NORM_PARAMS: Dict[str, Tuple[str, Tuple[float, ...], Tuple[float, ...]]] = {
    "imagenet": ("rgb", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),  # [0,1] mean/std * 255
    "minus_one_one": ("rgb", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    "caffe": ("bgr", (102.9801, 115.9465, 122.7717), (1.0, 1.0, 1.0)),
    "unit": ("rgb", (0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),
}
NORMALIZATIONS = tuple(_NORM_PARAMS)


def check_normalization(mode: str) -> None:
    if mode not in _NORM_PARAMS:
        raise ConfigError(f"model.normalization: unknown mode {mode!r} (choose from {', '.join(NORMALIZATIONS)})")


def normalize_image(image: Union[np.ndarray, torch.Tensor], mode: str) -> torch.Tensor:
    """An RGB image with 0..255 values -> normalised float32 tensor, channels first.

    ``image``: numpy ``(H, W, 3)`` (uint8 or float); torch ``(3, H, W)``, ``(H, W, 3)`` or a
    batch ``(N, 3, H, W)``. Returns ``(3, H, W)`` (``(N, 3, H, W)`` for a batch) on the input's
    device. Modes: ``imagenet`` ((x/255 - mean) / std, RGB), ``minus_one_one`` (x/127.5 - 1),
    ``caffe`` (BGR, minus the mean pixel [102.98, 115.95, 122.77]), ``unit`` (x/255).
    """
    check_normalization(mode)
    order, mean, std = _NORM_PARAMS[mode]
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"normalize_image: expected an HxWx3 RGB array, got shape {image.shape}")
        chw = image.transpose(2, 0, 1)
        x = torch.from_numpy(np.ascontiguousarray(chw[::-1] if order == "bgr" else chw))  # one copy
    else:
        x = image
        if x.dim() == 3 and x.shape[0] != 3 and x.shape[-1] == 3:
            x = x.permute(2, 0, 1)
        if x.dim() not in (3, 4) or x.shape[-3] != 3:
            raise ValueError(f"normalize_image: expected 3xHxW, HxWx3 or Nx3xHxW, got {tuple(image.shape)}")
        x = (x.flip(-3) if order == "bgr" else x).contiguous()
    floating = x.dtype in (torch.float32, torch.float64)
    out = x.clone() if floating else x.to(torch.float32)  # never modify the caller's data
    shape = (3, 1, 1)
    if any(s != 1.0 for s in std):
        out.mul_(torch.tensor([1.0 / s for s in std], dtype=out.dtype, device=out.device).view(shape))
    if any(m != 0.0 for m in mean):  # (x - mean) / std == x / std - mean / std
        out.sub_(torch.tensor([m / s for m, s in zip(mean, std)], dtype=out.dtype, device=out.device).view(shape))
    return out


# ---------------------------------------------------------------------------------------
# Projection geometry


def _spatial_layers(module: nn.Module) -> Iterator[nn.Module]:
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
            yield from _spatial_layers(child)


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
        for layer in _spatial_layers(module):
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


# ---------------------------------------------------------------------------------------
# The backbone module


class Backbone(nn.Module):
    """A truncated conv net run as a chain of named children, with its projection geometry.

    Attributes:
        name: backbone name (``model.backbone``), used to resolve torchvision weights.
        stride (int), offset (float): feature cell ``j`` is centred at image ``stride*j + offset``.
        out_channels (int): ``C`` of the output map.
        normalization (str): input normalisation mode the weights expect (see :func:`normalize_image`).
        stage_names: per freeze stage, the qualified names of its modules (``freeze_at=k``
            freezes stages ``1..k``).

    Child names follow torchvision's (``features.*``, ``conv1``, ``layer1``...) so full-model
    state_dicts load directly. Example::

        bb = build_backbone(ModelConfig(backbone="tiny"))
        feats = bb(torch.zeros(1, 3, 240, 320))   # (1, 128, 15, 20)
    """

    #: Key prefixes of the full source model that this truncation drops (ignored on load).
    truncated_prefixes: Tuple[str, ...] = ()
    #: Key prefixes of layers that no pretrained file has (randomly initialised).
    new_prefixes: Tuple[str, ...] = ("reduce.",)

    def __init__(
        self,
        name: str,
        layers: "OrderedDict[str, nn.Module]",
        stage_names: Sequence[Sequence[str]],
        out_channels: int,
        normalization: str = "imagenet",
        reduce_channels: int = 0,
        truncated_prefixes: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self._frozen_bn: Tuple[str, ...] = ()
        self.name = name
        self.normalization = normalization
        self.stage_names = [list(s) for s in stage_names]
        self.truncated_prefixes = tuple(truncated_prefixes) + ("classifier.", "fc.")
        self._order = list(layers)
        for key, layer in layers.items():
            self.add_module(key, layer)
        self.reduce: Optional[nn.Module] = None
        if reduce_channels > 0:
            self.reduce = nn.Sequential(nn.Conv2d(out_channels, reduce_channels, 1), nn.ReLU(inplace=True))
            nn.init.kaiming_normal_(self.reduce[0].weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(self.reduce[0].bias)
            out_channels = reduce_channels
        self.out_channels = out_channels
        self.stride, self.offset = feature_geometry(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for key in self._order:
            x = getattr(self, key)(x)
        if self.reduce is not None:
            x = self.reduce(x)
        return x

    def freeze(self, freeze_at: int = 0, frozen_bn: bool = False) -> "Backbone":
        """``freeze_at``: 0 trains all, -1 freezes everything (``reduce`` too), k > 0 freezes
        stages 1..k. Frozen parts get ``requires_grad=False`` and their batch-norms stay in
        eval mode; ``frozen_bn`` does the same for every batch-norm, also across ``.train()``."""
        n = len(self.stage_names)
        if freeze_at == -1:
            frozen: List[nn.Module] = [self]
        elif 0 <= freeze_at <= n:
            frozen = [self.get_submodule(m) for stage in self.stage_names[:freeze_at] for m in stage]
        else:
            raise ConfigError(
                f"model.freeze_at: {freeze_at} out of range for backbone '{self.name}' "
                f"(-1, or 0..{n}: it has {n} stages)"
            )
        for m in frozen:
            m.requires_grad_(False)
        frozen_ids = {id(m) for f in frozen for m in f.modules()}
        names = []
        for key, m in self.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and (frozen_bn or id(m) in frozen_ids):
                m.requires_grad_(False)
                names.append(key)
        self._frozen_bn = tuple(names)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        for key in self._frozen_bn:
            self.get_submodule(key).eval()
        return self

    def extra_repr(self) -> str:
        return (
            f"name={self.name}, stride={self.stride}, offset={self.offset}, "
            f"out_channels={self.out_channels}, normalization={self.normalization}"
        )


class WithinChannelLRN(nn.Module):
    """Caffe's ``LRN`` with ``norm_region: WITHIN_CHANNEL`` (used by ZF-5):
    ``x / (1 + alpha * mean_{size x size}(x^2))^beta`` (zero padding counted in the mean).

    ``nn.LocalResponseNorm`` normalises *across* channels, which is not what the ZF-5 weights
    were trained with."""

    def __init__(self, size: int = 3, alpha: float = 5e-5, beta: float = 0.75) -> None:
        super().__init__()
        self.size, self.alpha, self.beta = size, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sq = F.avg_pool2d(x * x, self.size, stride=1, padding=self.size // 2, count_include_pad=True)
        return x * sq.mul(self.alpha).add(1.0).pow(-self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}"


def _init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _tiny(cfg: ModelConfig) -> Backbone:
    """From scratch: 8 3x3 conv+BN+ReLU, stride 16, last two dilated (receptive field 207 px).

    ``tiny_stride: 8`` drops stage4's subsampling: 4x the cells (and ~3x the compute) for
    objects only a few cells wide at stride 16, where SPP's bins cannot tell a tight window
    from a shifted one (receptive field 127 px)."""
    w = cfg.tiny_width
    if w < 1:
        raise ConfigError(f"model.tiny_width: must be >= 1, got {w}")
    if cfg.tiny_stride not in (8, 16):
        raise ConfigError(f"model.tiny_stride: must be 8 or 16, got {cfg.tiny_stride}")
    if cfg.tiny_stem_convs < 0:
        raise ConfigError(f"model.tiny_stem_convs: must be >= 0, got {cfg.tiny_stem_convs}")
    s4 = 2 if cfg.tiny_stride == 16 else 1

    def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    stage2: nn.Module = block(w, w, 2)
    if cfg.tiny_stem_convs:  # a Sequential only then: checkpoints without extra convs keep their keys
        stage2 = nn.Sequential(stage2, *[block(w, w) for _ in range(cfg.tiny_stem_convs)])
    layers = OrderedDict(
        stage1=block(3, w, 2),  # /2
        stage2=stage2,  # /4
        stage3=nn.Sequential(block(w, 2 * w, 2), block(2 * w, 2 * w)),  # /8
        stage4=nn.Sequential(block(2 * w, 4 * w, s4), block(4 * w, 4 * w)),  # /16 (/8)
        stage5=nn.Sequential(block(4 * w, 4 * w, dilation=2), block(4 * w, 4 * w, dilation=2)),
    )
    for m in layers.values():
        _init_convs(m)
    return Backbone("tiny", layers, [[k] for k in layers], 4 * w, reduce_channels=cfg.reduce_channels)


def _zf5(cfg: ModelConfig) -> Backbone:
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
    pool = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    layers = OrderedDict(
        conv1=nn.Conv2d(3, 96, 7, 2, 3),
        relu1=nn.ReLU(inplace=True),
        norm1=WithinChannelLRN(),
        pool1=nn.MaxPool2d(**pool),
        conv2=nn.Conv2d(96, 256, 5, 2, 2),
        relu2=nn.ReLU(inplace=True),
        norm2=WithinChannelLRN(),
        pool2=nn.MaxPool2d(**pool),
        conv3=nn.Conv2d(256, 384, 3, 1, 1),
        relu3=nn.ReLU(inplace=True),
        conv4=nn.Conv2d(384, 384, 3, 1, 1),
        relu4=nn.ReLU(inplace=True),
        conv5=nn.Conv2d(384, 256, 3, 1, 1),
        relu5=nn.ReLU(inplace=True),
    )
    for m in layers.values():
        _init_convs(m)
    stages = [["conv1", "norm1", "pool1"], ["conv2", "norm2", "pool2"], ["conv3"], ["conv4"], ["conv5"]]
    return Backbone("zf5", layers, stages, 256, reduce_channels=cfg.reduce_channels)


def _vgg16(cfg: ModelConfig) -> Backbone:
    """torchvision ``vgg16().features`` up to relu5_3 (indices 0..29; pool5 at 30 cut).

    Built directly (same indices as torchvision) to skip allocating the 120M-parameter
    classifier. Stages: conv1_x (features.0-4), conv2_x (5-9), conv3_x (10-16), conv4_x
    (17-23), conv5_x (24-29)."""
    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    seq: List[nn.Module] = []
    cin, stages, block = 3, [], []
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
    _init_convs(features)
    return Backbone(
        "vgg16",
        OrderedDict(features=features),
        stages,
        512,
        reduce_channels=cfg.reduce_channels,
        truncated_prefixes=("features.30.",),
    )


def _resnet(arch: str) -> Callable[[ModelConfig], Backbone]:
    def build(cfg: ModelConfig) -> Backbone:
        """torchvision ResNet up to layer3 (stride 16). Stages: stem (conv1, bn1), layer1..3."""
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None)
        keys = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]
        layers = OrderedDict((k, getattr(net, k)) for k in keys)
        out = (
            net.layer3[-1].conv3.out_channels if hasattr(net.layer3[-1], "conv3") else net.layer3[-1].conv2.out_channels
        )
        stages = [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"]]
        return Backbone(arch, layers, stages, out, reduce_channels=cfg.reduce_channels, truncated_prefixes=("layer4.",))

    return build


def _mobilenet_v2(cfg: ModelConfig) -> Backbone:
    """torchvision ``mobilenet_v2().features``: stride 16 = ``features[:14]`` (block 13 ends the
    stride-16 stage, 96 ch, linear bottleneck output); stride 32 = all of ``features`` (up to
    the 1x1 conv to 1280 ch + ReLU6, as torchvision's detection examples use; consider
    ``reduce_channels``). One freeze stage per ``features`` block (stem conv = stage 1)."""
    import torchvision

    if cfg.feature_stride not in (16, 32):
        raise ConfigError(f"model.feature_stride: mobilenet_v2 supports 16 or 32, got {cfg.feature_stride}")
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


BACKBONES: Dict[str, Callable[[ModelConfig], Backbone]] = {
    "tiny": _tiny,
    "zf5": _zf5,
    "vgg16": _vgg16,
    "resnet18": _resnet("resnet18"),
    "resnet50": _resnet("resnet50"),
    "mobilenet_v2": _mobilenet_v2,
}
_TORCHVISION = ("vgg16", "resnet18", "resnet50", "mobilenet_v2")


# ---------------------------------------------------------------------------------------
# Weights


def _looks_like_path(text: str) -> bool:
    return (
        "/" in text
        or "\\" in text
        or text.startswith(("~", "."))
        or Path(text).suffix.lower() in (".pth", ".pt", ".bin", ".ckpt", ".tar", ".pkl")
    )


def resolve_weights(arch: str, weights: str):
    """``model.weights`` -> a local :class:`Path` or a torchvision ``WeightsEnum`` member
    (nothing is downloaded here)."""
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if _looks_like_path(weights):
        raise CheckpointError(f"{weights}: weights file not found (model.weights)")
    if arch not in _TORCHVISION:
        raise ConfigError(
            f"model.weights: '{weights}' is not a file, and backbone '{arch}' has no "
            f"torchvision weights: give a local state_dict path"
        )
    import torchvision

    enum_cls = torchvision.models.get_model_weights(arch)
    prefix, _, name = weights.rpartition(".")
    if prefix and prefix != enum_cls.__name__:
        raise ConfigError(f"model.weights: '{weights}' are not {arch} weights (expected {enum_cls.__name__}.*)")
    try:
        return enum_cls[name]
    except KeyError:
        names = ", ".join([m.name for m in enum_cls] + ["DEFAULT"])
        raise ConfigError(f"model.weights: '{weights}' is neither a file nor a {arch} weights name ({names})") from None


def _unwrap_state_dict(obj, label: str) -> Dict[str, torch.Tensor]:
    for key in ("model", "state_dict"):  # sppdet checkpoints / common training scripts
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{label}: not a state_dict (expected a mapping of parameter names to tensors)")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):  # DataParallel / DDP wrapper
        state = {k[len("module.") :]: v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):  # a sppdet detector checkpoint
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    return state


def _read_torchvision(weights) -> Dict[str, torch.Tensor]:
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except Exception as e:  # URLError, hash mismatch, disk full...
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"cannot get torchvision weights {weights} ({msg}); offline, give a local state_dict path in model.weights"
        ) from e


def load_weights(module: nn.Module, weights: str):
    """Load ``weights`` (enum name or local path, see module docs) into a backbone.

    Backbone keys absent from the source are a :class:`CheckpointError` (naming a few);
    source keys the backbone does not use are ignored when the truncation explains them
    (classifier, later stages) and logged as a warning otherwise."""
    if not weights:
        return
    arch = getattr(module, "name", "")
    source = resolve_weights(arch, weights)
    if isinstance(source, Path):
        label = str(source)
        state = _unwrap_state_dict(torch_load(source), label)
    else:
        label = f"torchvision {source}"
        state = _unwrap_state_dict(_read_torchvision(source), label)
    own = module.state_dict()
    skip_missing = tuple(getattr(module, "new_prefixes", ()))
    dropped = tuple(getattr(module, "truncated_prefixes", ()))
    matched = {k: v for k, v in state.items() if k in own}
    for k, v in matched.items():
        if v.shape != own[k].shape:
            raise CheckpointError(
                f"{label}: '{k}' has shape {tuple(v.shape)}, backbone {arch} expects {tuple(own[k].shape)}"
            )
    missing = [
        k for k in own if k not in state and not k.endswith("num_batches_tracked") and not k.startswith(skip_missing)
    ]
    if missing:
        seen = ", ".join(list(state)[:2])
        total = sum(not k.endswith("num_batches_tracked") for k in own)
        raise CheckpointError(
            f"{label}: {len(missing)} of {total} {arch} backbone weights missing "
            f"(e.g. {', '.join(missing[:3])}; the file has {seen}, ...)"
        )
    unexpected = [
        k for k in state if k not in own and not k.startswith(dropped) and not k.endswith("num_batches_tracked")
    ]
    if unexpected:
        log.warning(
            "%s: %d keys not used by backbone %s (e.g. %s)", label, len(unexpected), arch, ", ".join(unexpected[:3])
        )
    module.load_state_dict(matched, strict=False)
    log.info("loaded %d tensors into backbone %s from %s", len(matched), arch, label)
    return source


def _check_enum_normalization(weights, normalization: str) -> None:
    """Warn when torchvision weights were trained with another input normalisation."""
    try:
        preset = weights.transforms()
        mean, std = [round(float(v), 3) for v in preset.mean], [round(float(v), 3) for v in preset.std]
    except Exception:  # a preset without mean/std: nothing to compare
        return
    imagenet = mean == [0.485, 0.456, 0.406] and std == [0.229, 0.224, 0.225]
    if imagenet != (normalization == "imagenet"):
        log.warning(
            "model.normalization is '%s' but torchvision %s expects RGB (x/255 - %s) / %s",
            normalization,
            weights,
            mean,
            std,
        )


def build_backbone(cfg: ModelConfig) -> Backbone:
    """Build, load weights into and freeze the backbone described by ``cfg`` (a ModelConfig)."""
    if cfg.backbone not in BACKBONES:
        raise ConfigError(f"model.backbone: unknown backbone '{cfg.backbone}' (choose from {', '.join(BACKBONES)})")
    check_normalization(cfg.normalization)
    if cfg.reduce_channels < 0:
        raise ConfigError(f"model.reduce_channels: must be >= 0, got {cfg.reduce_channels}")
    if cfg.backbone != "mobilenet_v2" and cfg.feature_stride != 16:
        raise ConfigError(f"model.feature_stride: only mobilenet_v2 has a stride-32 tap; {cfg.backbone} has stride 16")
    backbone = BACKBONES[cfg.backbone](cfg)
    backbone.normalization = cfg.normalization
    if cfg.weights:
        source = load_weights(backbone, cfg.weights)
        if not isinstance(source, Path):
            _check_enum_normalization(source, cfg.normalization)
    elif cfg.frozen_bn and any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules()):
        log.warning(
            "model.frozen_bn is true with random weights (model.weights: ''): the %s backbone's "
            "batch-norms stay identity; set model.frozen_bn: false to train them",
            cfg.backbone,
        )
    return backbone.freeze(cfg.freeze_at, cfg.frozen_bn)
