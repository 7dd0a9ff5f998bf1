"""The :class:`Backbone` module: a truncated conv net as a chain of named children."""

from __future__ import annotations

from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from ...errors import ConfigError
from .geometry import feature_geometry


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

    name: str
    normalization: str
    out_channels: int
    stride: int
    offset: float
    reduce: Optional[nn.Module]
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
        self.reduce = None
        if reduce_channels > 0:
            conv = nn.Conv2d(out_channels, reduce_channels, 1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
            self.reduce = nn.Sequential(conv, nn.ReLU(inplace=True))
            out_channels = reduce_channels
        self.out_channels = out_channels
        self.stride, self.offset = feature_geometry(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images (N, 3, H, W)`` normalised -> features ``(N, C, H', W')``."""
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
        """``nn.Module.train``, keeping frozen batch-norms in eval mode."""
        super().train(mode)
        for key in self._frozen_bn:
            self.get_submodule(key).eval()
        return self

    def extra_repr(self) -> str:
        """Name, geometry, channels and normalisation, for ``print(module)``."""
        return (
            f"name={self.name}, stride={self.stride}, offset={self.offset}, "
            f"out_channels={self.out_channels}, normalization={self.normalization}"
        )


def init_convs(module: nn.Module) -> None:
    """Kaiming-normal (fan-out, ReLU) weights and zero biases for every conv in ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
