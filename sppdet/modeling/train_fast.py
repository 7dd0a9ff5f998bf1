"""Faster training forward for backbones with a frozen head of layers.

With ``model.freeze_at = k`` the first ``k`` stages get no gradient, yet a plain forward
still runs them with autograd bookkeeping, unfolded batch-norms and in the default
(channels-first) layout. These stages are the full-resolution ones (MobileNetV2 blocks
0-3 run at 1/2 and 1/4 of the image), the most expensive part of the conv forward on a CPU.
:func:`backbone_forward` runs the longest frozen prefix of the backbone's layer chain under
``torch.no_grad`` with each batch-norm folded into the conv before it (``torch.fx`` ``fuse``) and
channels-last weights, and the trainable rest on its channels-last
output. In the trainable rest each conv followed by a frozen (eval-mode) batch-norm runs as one
conv with the batch-norm folded into its weights inside autograd
(:func:`~sppdet.modeling.trainable_fold.fold_trainable`), so the separate batch-norm pass,
forward and backward, is gone; there and in the prefix 1x1 convs run as matrix products on the
channels-last pixels, and the trainable ReLU6s out of place (docs/benchmarks.md, "End-to-end
training step"). The numbers match the plain forward up to float rounding;
gradients are those of the plain forward (nothing before the first trainable layer needs one).
"""

from __future__ import annotations

import copy
import weakref
from typing import Any, List, Tuple

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from .trainable_fold import fold_trainable

_STOCHASTIC = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.Dropout)

#: backbone -> (split key, frozen prefix, trainable rest, prefix weights key, folded prefix,
#: trainable rest with its frozen batch-norms folded)
_SPLITS: "weakref.WeakKeyDictionary[nn.Module, Tuple[Any, ...]]" = weakref.WeakKeyDictionary()


def layer_chain(backbone: nn.Module) -> List[nn.Module]:
    """The backbone's layers in forward order, ``nn.Sequential`` children flattened one level
    deep (``Backbone`` runs its children as a chain, then ``reduce`` when present)."""
    order = getattr(backbone, "_order", None)
    if order is None:
        return []
    chain: List[nn.Module] = []
    for key in order:
        child = getattr(backbone, key)
        chain.extend(list(child) if isinstance(child, nn.Sequential) else [child])
    reduce = getattr(backbone, "reduce", None)
    if reduce is not None:
        chain.append(reduce)
    return chain


def is_frozen(layer: nn.Module) -> bool:
    """No parameter needs a gradient and no batch-norm or dropout inside is in training mode
    (so the layer is a fixed function of its input)."""
    if any(p.requires_grad for p in layer.parameters()):
        return False
    return not any(isinstance(m, _STOCHASTIC) and m.training for m in layer.modules())


def split_frozen_prefix(backbone: nn.Module) -> Tuple[nn.Sequential, List[nn.Module]]:
    """``(prefix, rest)``: the longest run of frozen layers at the start of the chain, and the rest."""
    chain = layer_chain(backbone)
    n = 0
    while n < len(chain) and is_frozen(chain[n]):
        n += 1
    return nn.Sequential(*chain[:n]), chain[n:]


def backbone_forward(backbone: nn.Module, x: torch.Tensor, fold_bn: bool = True) -> torch.Tensor:
    """``backbone(x)`` for training: the frozen prefix folded, without autograd, channels-last;
    with ``fold_bn`` the trainable layers' frozen batch-norms folded into their convs.

    Falls back to ``backbone(x)`` when the backbone is not a layer chain, nothing is frozen,
    autograd is off, or the input is not on the CPU (the folding is a CPU/oneDNN win)."""
    if not torch.is_grad_enabled() or x.device.type != "cpu":
        return backbone(x)
    split_key = (
        tuple((id(p), p.requires_grad) for p in backbone.parameters()),
        tuple(m.training for m in backbone.modules()),
    )
    hit = _SPLITS.get(backbone)
    if hit is None or hit[0] != split_key:
        prefix, rest = split_frozen_prefix(backbone)
        hit = (split_key, prefix, rest, None, None, [fold_trainable(layer) for layer in rest])
    _, prefix, rest, fold_key, fast, rest_folded = hit
    if len(prefix) == 0 or not rest:
        return backbone(x)
    key = _weights_key(prefix)
    if fast is None or fold_key != key:
        fast = fold_prefix(prefix)
    _SPLITS[backbone] = (split_key, prefix, rest, key, fast, rest_folded)
    with torch.no_grad():
        y = fast(x.contiguous(memory_format=torch.channels_last))
    for layer in rest_folded if fold_bn else rest:
        y = layer(y)
    return y


def _weights_key(module: nn.Module) -> tuple:
    """Changes when a parameter or buffer is replaced or written in place (load_state_dict)."""
    return tuple((t.data_ptr(), t._version) for t in list(module.parameters()) + list(module.buffers()))


def fold_prefix(prefix: nn.Sequential) -> nn.Module:
    """An eval-mode copy of ``prefix`` with batch-norms folded into convs, channels-last weights."""
    with torch.no_grad():
        frozen = copy.deepcopy(prefix).eval()
        try:
            folded = fuse(frozen)
        except Exception:  # a layer torch.fx cannot trace: channels-last only
            folded = frozen
        # 1x1 convs as matrix products on channels-last pixels (PyTorch's single-thread path for
        # them is its slow im2col one, with layout copies)
        return fold_trainable(folded.to(memory_format=torch.channels_last), out_of_place=False)
