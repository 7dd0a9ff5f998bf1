"""Fast R-CNN window sampling: foreground/background mini-batches from proposals.

Per image: ground-truth boxes are added to the proposals; windows with IoU >= ``fg_iou``
with some ground truth are foreground (labelled with that object's class), windows whose
best IoU lies in ``[bg_low, bg_high)`` are background. At most ``fg_fraction`` of the
``num_samples`` windows are foreground; the rest are background.

An image with no (usable) objects, or whose proposals all overlap objects by less than
``bg_low``, would have no background windows in ``[bg_low, bg_high)``; then windows with
IoU in ``[0, bg_high)`` are used, so every image contributes a full batch of negatives
(detectron2's choice; Fast R-CNN's 0.1 floor was a hard-negative heuristic, not a rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..structures import BoxCoder, box_iou


@dataclass
class SampledWindows:
    """Windows chosen for one image: ``boxes (R, 4)`` ours, ``labels (R,)`` (0 = bg),
    ``targets (R, 4)`` encoded regression targets (zeros for bg), ``ious (R,)``."""

    boxes: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor
    ious: torch.Tensor


def _choice(idx: torch.Tensor, k: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    if k >= idx.numel():
        return idx
    perm = torch.randperm(idx.numel(), generator=generator)[:k]
    return idx[perm]


def sample_windows(
    proposals: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    box_coder: BoxCoder,
    num_samples: int = 64,
    fg_fraction: float = 0.25,
    fg_iou: float = 0.5,
    bg_low: float = 0.1,
    bg_high: float = 0.5,
    generator: Optional[torch.Generator] = None,
) -> SampledWindows:
    """Sample ``num_samples`` windows (fewer only if the image has fewer candidates).

    Args:
        proposals: ``(P, 4)`` boxes ``(x1, y1, x2, y2)`` in image pixels.
        gt_boxes: ``(G, 4)`` boxes, same convention; ``gt_labels (G,)`` in 1..K.
    """
    proposals = proposals.float().reshape(-1, 4)
    gt_boxes = gt_boxes.float().reshape(-1, 4)
    boxes = torch.cat([gt_boxes, proposals], 0)
    if len(gt_boxes):
        iou = box_iou(boxes, gt_boxes)
        max_iou, gt_idx = iou.max(dim=1)
    else:
        max_iou = boxes.new_zeros(len(boxes))
        gt_idx = torch.zeros(len(boxes), dtype=torch.long)
    fg_idx = torch.nonzero(max_iou >= fg_iou).flatten()
    bg_idx = torch.nonzero((max_iou < bg_high) & (max_iou >= bg_low)).flatten()
    num_fg = min(int(round(num_samples * fg_fraction)), fg_idx.numel())
    fg_idx = _choice(fg_idx, num_fg, generator)
    num_bg = num_samples - fg_idx.numel()
    if bg_idx.numel() < num_bg:
        bg_idx = torch.nonzero(max_iou < bg_high).flatten()
    bg_idx = _choice(bg_idx, num_bg, generator)
    keep = torch.cat([fg_idx, bg_idx])
    labels = torch.zeros(len(keep), dtype=torch.long)
    targets = torch.zeros(len(keep), 4)
    if fg_idx.numel():
        labels[: fg_idx.numel()] = gt_labels.long()[gt_idx[fg_idx]]
        targets[: fg_idx.numel()] = box_coder.encode(boxes[fg_idx], gt_boxes[gt_idx[fg_idx]])
    return SampledWindows(boxes[keep], labels, targets, max_iou[keep])
