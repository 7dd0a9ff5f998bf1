"""Turn raw head outputs into detections: decode, clip, per-class NMS, top-k."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torchvision

from ..structures import BoxCoder, clip_boxes


class PostProcess:
    """Detections for one image from its windows' scores and box deltas.

    ``__call__(scores (R, K+1) probabilities, deltas (R, 4K) or None, proposals (R, 4) ours,
    image_size (height, width))`` returns ``boxes (M, 4)`` (ours, clipped), ``scores (M,)`` and
    ``labels (M,)`` in 1..K, at most ``max_detections``, sorted by score.
    """

    def __init__(
        self, box_coder: BoxCoder, score_thresh: float = 0.05, nms_thresh: float = 0.3, max_detections: int = 100
    ) -> None:
        self.box_coder = box_coder
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.max_detections = max_detections

    def __call__(
        self, scores: torch.Tensor, deltas: Optional[torch.Tensor], proposals: torch.Tensor, image_size: Tuple[int, int]
    ) -> Dict[str, torch.Tensor]:
        """Scores and deltas of one image's windows -> boxes, scores, labels after NMS."""
        num_classes = scores.shape[1] - 1
        proposals = proposals.to(scores.dtype)
        if deltas is not None:
            boxes = self.box_coder.decode(deltas, proposals).view(-1, num_classes, 4)
        else:
            boxes = proposals[:, None, :].expand(-1, num_classes, 4)
        h, w = image_size
        boxes = clip_boxes(boxes.reshape(-1, 4), w, h).view(-1, num_classes, 4)
        cls_scores = scores[:, 1:]
        keep = cls_scores > self.score_thresh
        r, c = keep.nonzero(as_tuple=True)
        boxes, sc, labels = boxes[r, c], cls_scores[r, c], c + 1
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, sc, labels = boxes[valid], sc[valid], labels[valid]
        keep = torchvision.ops.batched_nms(boxes.float(), sc.float(), labels, self.nms_thresh)
        keep = keep[: self.max_detections]
        return {"boxes": boxes[keep], "scores": sc[keep], "labels": labels[keep]}
