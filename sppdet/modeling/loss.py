"""Fast R-CNN multi-task loss: softmax cross-entropy + smooth-L1 box regression.

Kept apart from the model so the same object scores training and validation batches.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F


class FastRCNNLoss:
    """``loss(outputs, labels, targets)`` for sampled windows.

    Args (call):
        outputs: the head's dict, ``cls_logits (R, K+1)`` and ``bbox_deltas (R, 4K)``.
        labels: ``(R,)`` int64, 0 = background.
        targets: ``(R, 4)`` encoded regression targets (only rows with label > 0 are used).
    Returns ``{"loss_cls", "loss_box", "loss"}``; the box loss is summed over foreground
    windows and divided by R (all sampled windows), as Fast R-CNN / detectron2 do.
    """

    def __init__(self, box_loss_weight: float = 1.0, smooth_l1_beta: float = 1.0) -> None:
        self.box_loss_weight = box_loss_weight
        self.beta = smooth_l1_beta

    def __call__(
        self, outputs: Dict[str, torch.Tensor], labels: torch.Tensor, targets: torch.Tensor
    ) -> Dict[str, torch.Tensor]:
        """``loss_cls`` (cross-entropy) and ``loss_box`` (smooth-L1 on foreground windows) of a batch."""
        logits = outputs["cls_logits"]
        loss_cls = F.cross_entropy(logits, labels)
        fg = torch.nonzero(labels > 0).flatten()
        if fg.numel() == 0:
            loss_box = outputs["bbox_deltas"].sum() * 0.0
        else:
            deltas = outputs["bbox_deltas"].view(len(labels), -1, 4)
            pred = deltas[fg, labels[fg] - 1]
            loss_box = F.smooth_l1_loss(pred, targets[fg], beta=self.beta, reduction="sum") / max(1, len(labels))
        loss = loss_cls + self.box_loss_weight * loss_box
        return {"loss_cls": loss_cls, "loss_box": loss_box, "loss": loss}
