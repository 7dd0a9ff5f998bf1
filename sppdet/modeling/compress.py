"""fc-layer compression for inference: truncated SVD at rank fractions, int8 dynamic
quantisation, or both (``test.fc_compression``).

Spec strings (``+`` combines steps, applied left to right)::

    ""                 off (the full fc layers)
    "svd:0.25"         truncated SVD of every fc layer of the trunk (fc6, fc7), rank =
                       round(0.25 * min(in, out)) (Fast R-CNN section 3.1)
    "svd:0.5,0.25"     one fraction per fc layer (fc6, fc7)
    "int8"             int8 dynamic quantisation of the trunk's linear layers
                       (``torch.ao.quantization.quantize_dynamic``; weights int8, activations
                       quantised per call); the classifier and box regressor stay float
    "svd:0.25+int8"    both

SVD only pays where ``rank * (in + out) < in * out``; a fraction whose rank would not save
work leaves that layer full. Compression is for CPU inference: quantised layers run on the
CPU only and have no gradients.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import List, Sequence, Tuple, Union

import torch
from torch import nn
from torch.ao.quantization import quantize_dynamic

from ..errors import ConfigError
from .head import SPPHead

FIELD = "test.fc_compression"


@dataclass(frozen=True)
class FcCompression:
    """Parsed ``test.fc_compression``: SVD rank fractions per fc layer (empty: no SVD;
    one value: every layer) and whether the trunk is int8-quantised."""

    svd_fractions: Tuple[float, ...] = ()
    int8: bool = False

    @property
    def is_identity(self) -> bool:
        return not self.svd_fractions and not self.int8

    def spec(self) -> str:
        """The canonical spec string (round-trips through :func:`parse_fc_compression`)."""
        parts = []
        if self.svd_fractions:
            parts.append("svd:" + ",".join(f"{f:g}" for f in self.svd_fractions))
        if self.int8:
            parts.append("int8")
        return "+".join(parts)


def parse_fc_compression(spec: str, field: str = FIELD) -> FcCompression:
    """Parse a spec string (see the module docstring); bad input raises one-line ConfigError."""
    text = (spec or "").strip().lower()
    if text in ("", "none", "full"):
        return FcCompression()
    fractions: Tuple[float, ...] = ()
    int8 = False
    for step in text.split("+"):
        step = step.strip()
        if step == "int8":
            if int8:
                raise ConfigError(f"{field}: 'int8' given twice in '{spec}'")
            int8 = True
        elif step.startswith("svd:"):
            if fractions:
                raise ConfigError(f"{field}: 'svd:' given twice in '{spec}'")
            if int8:
                raise ConfigError(f"{field}: put 'svd:...' before 'int8' in '{spec}' (SVD needs float weights)")
            fractions = _fractions(step[4:], spec, field)
        else:
            raise ConfigError(
                f"{field}: unknown step '{step}' in '{spec}' (use 'svd:F[,F]', 'int8' or 'svd:F+int8', 0 < F <= 1)"
            )
    return FcCompression(fractions, int8)


def _fractions(text: str, spec: str, field: str) -> Tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{field}: rank fractions in '{spec}' must be numbers, e.g. 'svd:0.25'") from None
    if not values or any(not (0.0 < v <= 1.0) for v in values):
        raise ConfigError(f"{field}: rank fractions in '{spec}' must be in (0, 1]")
    return values


def trunk_linears(head: SPPHead) -> List[nn.Linear]:
    """The (uncompressed) linear layers of the head's fc trunk, in order (fc6, fc7)."""
    return [m for m in head.fc.children() if isinstance(m, nn.Linear)]


def svd_ranks(head: SPPHead, fractions: Sequence[float]) -> List[int]:
    """Rank per trunk fc layer for ``fractions`` (one value: all layers); 0 = leave it full
    (the rank would not make the pair cheaper than the layer)."""
    layers = trunk_linears(head)
    if len(fractions) not in (1, len(layers)):
        raise ConfigError(
            f"{FIELD}: {len(fractions)} rank fractions for {len(layers)} fc layers (give 1 or {len(layers)})"
        )
    fr = list(fractions) * len(layers) if len(fractions) == 1 else list(fractions)
    ranks = []
    for lin, f in zip(layers, fr):
        rank = max(1, int(round(f * min(lin.in_features, lin.out_features))))
        saves = rank * (lin.in_features + lin.out_features) < lin.in_features * lin.out_features
        ranks.append(rank if saves else 0)
    return ranks


def compress_head(head: SPPHead, compression: Union[FcCompression, str]) -> SPPHead:
    """A compressed eval-mode copy of an :class:`~sppdet.modeling.head.SPPHead` (the input is
    left as is). The copy lives on the CPU when int8 is asked for."""
    c = parse_fc_compression(compression) if isinstance(compression, str) else compression
    out = copy.deepcopy(head).eval()
    if c.is_identity:
        return out
    if c.svd_fractions:
        out.compress_svd(svd_ranks(out, c.svd_fractions))
    if c.int8:
        out = out.cpu()
        out.fc = quantize_int8(out.fc)  # type: ignore[assignment]
    return out


def quantize_int8(module: nn.Module) -> nn.Module:
    """``module`` with every ``nn.Linear`` replaced by a dynamically quantised int8 one."""
    # torch (2.14 here) deprecates torch.ao.quantization (moving to torchao) and the qint8 tensor API it uses
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*", category=DeprecationWarning)
        return quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8)


def checked_fc_compression(test_cfg, device: Union[str, torch.device] = "cpu") -> FcCompression:
    """``test.fc_compression`` of a TestConfig, parsed and checked against the other test
    settings: not together with ``svd_rank_fc6/fc7``, int8 only on the CPU."""
    c = parse_fc_compression(test_cfg.fc_compression)
    if not c.is_identity and (test_cfg.svd_rank_fc6 > 0 or test_cfg.svd_rank_fc7 > 0):
        raise ConfigError(f"{FIELD}: set either it or test.svd_rank_fc6/fc7, not both")
    if c.int8 and torch.device(device).type != "cpu":
        raise ConfigError(f"{FIELD}: 'int8' runs on the CPU only (device is {torch.device(device)})")
    return c
