"""The fc head on region-SPP vectors: fc6 -> fc7 -> (K+1)-way classifier and box regression.

Shape shorthand: R windows, D = C * sum(n*n) (the SPP vector length), K object classes.
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import nn


class SPPHead(nn.Module):
    """fc layers on pooled region features.

    ``forward(x: (R, D))`` returns ``{"cls_logits": (R, K+1), "bbox_deltas": (R, 4K),
    "fc7": (R, fc_dims[-1])}``. Class 0 is background; ``bbox_deltas[:, 4(k-1):4k]`` are the
    R-CNN deltas (see :class:`sppdet.structures.BoxCoder`) for class ``k``.
    """

    def __init__(
        self, in_dim: int, num_classes: int, fc_dims: Sequence[int] = (4096, 4096), dropout: float = 0.5
    ) -> None:
        super().__init__()
        layers = []
        dim = in_dim
        for i, width in enumerate(fc_dims):
            layers += [nn.Linear(dim, width), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            dim = width
        self.fc = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.out_dim = dim
        self.cls_score = nn.Linear(dim, num_classes + 1)
        self.bbox_pred = nn.Linear(dim, 4 * num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """fc layers Kaiming-uniform, classifier N(0, 0.01), box regressor N(0, 0.001), zero biases."""
        for m in self.fc:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=1)  # keeps activations O(1) through ReLU
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """fc7 activations ``(R, fc_dims[-1])`` (the SVMs' input in the paper recipe)."""
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Pooled ``x (R, D)`` -> ``cls_logits (R, K+1)``, ``bbox_deltas (R, 4K)``, ``fc7``."""
        f = self.fc(x)
        return {"cls_logits": self.cls_score(f), "bbox_deltas": self.bbox_pred(f), "fc7": f}

    def linear_layers(self):
        """The fc layers (a Linear, or a Sequential pair after :meth:`compress_svd`)."""
        return [m for m in self.fc if isinstance(m, (nn.Linear, nn.Sequential))]

    @torch.no_grad()
    def fold_input_affine(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Make the head take raw input ``x`` where it was trained on ``(x - mean) / std``:
        ``W' = W / std`` (per input column), ``b' = b - W' @ mean``. Needs a plain Linear fc6
        (fold before :meth:`compress_svd`)."""
        if not len(self.fc) or not isinstance(self.fc[0], nn.Linear):
            raise ValueError("fold_input_affine needs a head whose first fc layer is a plain Linear")
        lin = self.fc[0]
        w = lin.weight.double() / std.double().to(lin.weight.device)[None, :]
        lin.bias.copy_(lin.bias.double() - w @ mean.double().to(w.device))
        lin.weight.copy_(w)

    @torch.no_grad()
    def compress_svd(self, ranks: Sequence[int]) -> None:
        """Replace fc layers by truncated-SVD pairs (Fast R-CNN, section 3.1).

        ``W (out, in) ~ U_t S_t V_t^T``: the layer becomes ``Linear(in, t, bias=False)`` with
        weight ``S_t V_t^T`` followed by ``Linear(t, out)`` with weight ``U_t`` and the original
        bias. ``ranks[i] <= 0`` (or >= min(in, out)) leaves fc layer ``i`` unchanged.
        """
        idx = [i for i, m in enumerate(self.fc) if isinstance(m, nn.Linear)]
        for layer_no, (i, rank) in enumerate(zip(idx, ranks)):
            lin = self.fc[i]
            assert isinstance(lin, nn.Linear)  # idx holds the Linear layers only
            if rank <= 0 or rank >= min(lin.in_features, lin.out_features):
                continue
            u, s, vh = torch.linalg.svd(lin.weight.double(), full_matrices=False)
            first = nn.Linear(lin.in_features, rank, bias=False)
            second = nn.Linear(rank, lin.out_features)
            first.weight.copy_((s[:rank, None] * vh[:rank]).to(lin.weight.dtype))
            second.weight.copy_(u[:, :rank].to(lin.weight.dtype))
            second.bias.copy_(lin.bias)
            self.fc[i] = nn.Sequential(first, second)
