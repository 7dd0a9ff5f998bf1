"""Frozen batch-norms folded into the trained convs before them, as a reparametrisation.

A batch-norm in eval mode (``model.frozen_bn``) is the per-channel affine map
``y = x * scale + shift`` with ``scale = gamma / sqrt(running_var + eps)`` and
``shift = beta - running_mean * scale``. After a conv ``x -> w * x + b`` it can be folded into
the conv: ``w' = w * scale`` (per output channel), ``b' = b * scale + shift``. Unlike the
inference fold (``torch.fx`` ``fuse``, a copy with fixed weights), :class:`ConvFrozenBN`
computes ``w'`` and ``b'`` from the live parameters and buffers at every call, inside
autograd, so the conv's weight (and ``gamma``/``beta`` when they are trained) still get
their exact gradients while the separate batch-norm pass over the activations, forward and
backward, disappears. The numbers are those of ``bn(conv(x))`` up to float rounding.

On a channels-last CPU input a 1x1 stride-1 conv (MobileNetV2's expand and project layers)
runs as one matrix product on the ``(N*H*W, C)`` view: on one thread PyTorch would send
it to its slow im2col path with layout copies, and the product's backward is two more.

:func:`fold_trainable` rewrites a layer (traced with ``torch.fx``) so that each conv followed
by an eval-mode batch-norm becomes one :class:`ConvFrozenBN` sharing the original modules; the
rewritten graph is a cache object, the model and its ``state_dict`` are unchanged.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn


class ConvFrozenBN(nn.Module):
    """``bn(conv(x))`` for an eval-mode ``bn`` (or ``conv(x)`` when ``bn`` is None), computed
    as one conv with the folded weights; a 1x1 stride-1 conv on channels-last CPU input runs as
    :class:`PointwiseChannelsLast`.

    Holds the original ``conv`` and ``bn`` (same parameter objects). Falls back to the two
    modules when ``bn`` is in training mode or has no running statistics."""

    def __init__(self, conv: nn.Conv2d, bn: Optional[nn.modules.batchnorm._BatchNorm] = None) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn
        self.pointwise = is_pointwise(conv)

    def folded(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(w', b')``: the conv weight and bias with the batch-norm folded in."""
        bn, conv = self.bn, self.conv
        if bn is None:
            return conv.weight, conv.bias
        assert bn.running_mean is not None and bn.running_var is not None  # checked in forward
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = bn.weight * scale
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        if conv.bias is not None:
            shift = shift + conv.bias * scale
        return conv.weight * scale.reshape(-1, 1, 1, 1), shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn, conv = self.bn, self.conv
        if bn is not None and (bn.training or bn.running_mean is None):
            return bn(conv(x))
        w, b = self.folded()
        if self.pointwise and x.device.type == "cpu" and x.dim() == 4 and _nhwc(x).is_contiguous():
            if b is None:
                b = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
            return PointwiseChannelsLast.apply(x, w.flatten(1), b)
        return F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)


def is_pointwise(conv: nn.Module) -> bool:
    """A plain 1x1 stride-1 unpadded ungrouped ``nn.Conv2d`` (a matrix product per pixel)."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding in ((0, 0), "valid")
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` as ``(N, H, W, C)``: a free view, contiguous when ``x`` is channels-last."""
    return x.permute(0, 2, 3, 1)


def _channels_last_rows(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` as the ``(N*H*W, C)`` matrix of its pixels (a view for channels-last)."""
    return _nhwc(x).reshape(-1, x.shape[1])


class PointwiseChannelsLast(torch.autograd.Function):
    """A 1x1 stride-1 conv ``y = w x + b`` on channels-last ``x (N, C, H, W)``, ``w (O, C)``,
    as matrix products on the pixel rows; ``y`` is channels-last.

    A custom function rather than ``F.linear`` on a permuted view: the result is a plain
    tensor, not a view, so the in-place ReLU6 that follows needs no copy in autograd."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n, _, h, wd = x.shape
        y = torch.empty((n, w.shape[0], h, wd), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        torch.addmm(b, _channels_last_rows(x), w.t(), out=_channels_last_rows(y))
        ctx.save_for_backward(x, w)
        return y

    @staticmethod
    def backward(ctx, gy: torch.Tensor):  # type: ignore[override]
        x, w = ctx.saved_tensors
        g = _channels_last_rows(gy.contiguous(memory_format=torch.channels_last))
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.empty_like(x, memory_format=torch.channels_last)
            torch.mm(g, w, out=_channels_last_rows(gx))
        if ctx.needs_input_grad[1]:
            gw = g.t().mm(_channels_last_rows(x))
        if ctx.needs_input_grad[2]:
            gb = g.sum(0)
        return gx, gw, gb


def _module(gm: fx.GraphModule, node: fx.Node) -> Optional[nn.Module]:
    if node.op != "call_module" or not isinstance(node.target, str):
        return None
    return gm.get_submodule(node.target)


def fold_trainable(layer: nn.Module, out_of_place: bool = True) -> nn.Module:
    """``layer`` with every conv -> eval-mode batch-norm pair, and every other 1x1 stride-1
    conv, replaced by a :class:`ConvFrozenBN`; with ``out_of_place``, in-place ReLU6/ReLU
    modules run out of place (under autograd PyTorch clones the input of an in-place
    ``hardtanh_`` to keep it for the backward: a full extra copy of the activation).

    Parameters are shared with ``layer`` (nothing is copied), so the result trains ``layer``.
    Returns ``layer`` itself when there is nothing to replace or ``torch.fx`` cannot trace it.
    A batch-norm put back in training mode falls back to the plain computation at call time."""
    try:
        gm = fx.symbolic_trace(layer)
    except Exception:  # data-dependent control flow: keep the plain layer
        return layer
    n = 0

    def replace(first: fx.Node, last: fx.Node, module: ConvFrozenBN) -> None:
        nonlocal n
        name = f"_conv_frozen_bn_{n}"
        n += 1
        gm.add_submodule(name, module)
        with gm.graph.inserting_after(last):
            fused = gm.graph.call_module(name, first.args, first.kwargs)
        last.replace_all_uses_with(fused)
        gm.graph.erase_node(last)
        if last is not first:
            gm.graph.erase_node(first)

    for node in list(gm.graph.nodes):
        bn = _module(gm, node)
        if not isinstance(bn, nn.BatchNorm2d) or bn.training or bn.running_mean is None:
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, fx.Node) or len(src.users) != 1:
            continue
        conv = _module(gm, src)
        if type(conv) is nn.Conv2d and conv.padding_mode == "zeros":
            replace(src, node, ConvFrozenBN(conv, bn))
    for node in list(gm.graph.nodes):
        conv = _module(gm, node)
        if isinstance(conv, nn.Conv2d) and is_pointwise(conv):
            replace(node, node, ConvFrozenBN(conv))
    for node in list(gm.graph.nodes) if out_of_place else []:
        act = _module(gm, node)
        if isinstance(act, (nn.Hardtanh, nn.ReLU)) and act.inplace:  # nn.ReLU6 is a Hardtanh
            fn, extra = (F.hardtanh, (act.min_val, act.max_val)) if isinstance(act, nn.Hardtanh) else (F.relu, ())
            with gm.graph.inserting_after(node):
                plain = gm.graph.call_function(fn, tuple(node.args) + extra)
            node.replace_all_uses_with(plain)
            gm.graph.erase_node(node)
            n += 1
    if n == 0:
        return layer
    gm.graph.lint()
    gm.delete_all_unused_submodules()  # the replaced modules live on inside ConvFrozenBN
    gm.recompile()
    return gm
