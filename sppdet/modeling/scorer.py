"""The typed seam between pooled windows and class scores: a window scorer.

A scorer turns pooled SPP vectors of an image's windows into class scores and box deltas. The
detector's own head (softmax, :class:`SoftmaxScorer`) and the paper recipe's SVMs with ridge
box regressors (:class:`sppdet.svm.PaperScorer`) both satisfy :class:`WindowScorer`, so
inference takes either without knowing which.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Tuple, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class WindowScorer(Protocol):
    """``scorer(model, pooled (R, D), proposals (R, 4))`` -> ``scores (R, K+1)`` (column 0 the
    background) and box deltas ``(R, 4K)`` in :class:`~sppdet.structures.BoxCoder` units, or
    ``None`` without a box regressor. ``proposals`` are the windows in image pixels
    ``(x1, y1, x2, y2)``; ``model`` is the detector whose SPP layer pooled them."""

    def __call__(
        self, model: nn.Module, pooled: torch.Tensor, proposals: torch.Tensor
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Scores and deltas of the windows."""
        ...


class SoftmaxScorer:
    """The detector head's softmax scores and its box-regression deltas (the end2end recipe)."""

    def __call__(
        self, model: Any, pooled: torch.Tensor, proposals: torch.Tensor
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``softmax(cls_logits)`` and ``bbox_deltas`` of ``model.head(pooled)`` (``model``: an
        :class:`~sppdet.modeling.detector.SPPDetector`)."""
        out = model.head(pooled)
        return torch.softmax(out["cls_logits"], 1), out["bbox_deltas"]
