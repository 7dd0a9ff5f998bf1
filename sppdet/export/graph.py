"""The whole detector as one traceable module: raw image + proposals in, detections out.

:class:`ExportableDetector` repeats :class:`sppdet.engine.infer.Predictor` step by step with
tensor ops only, so ``torch.jit.trace`` and the ONNX exporter keep ``H``, ``W`` and ``P``
dynamic: clip and filter the proposals, per test scale resize (OpenCV's kernels,
:mod:`sppdet.export.resize`), normalise, pad to the backbone stride and run the backbone; pool
each window at its best scale (:mod:`sppdet.export.spp_onnx`); softmax and box deltas
(averaged with the mirrored view under ``test.flip``); decode, clip, threshold, per-class NMS,
top ``test.max_detections``.

Inputs: ``image`` uint8 ``(H, W, 3)`` RGB; ``proposals`` float32 ``(P, 4)`` ``(x1, y1, x2, y2)``
in that image's pixels. Outputs: ``boxes`` float32 ``(N, 4)`` (same convention, clipped to the
image), ``scores`` float32 ``(N,)``, ``labels`` int64 ``(N,)`` in 1..K, sorted by score.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from ..config import Config
from ..data.transforms import normalize_image
from ..modeling.detector import SPPDetector
from ..structures import BoxCoder
from .resize import image_size, resize_to_factor, scale_factor
from .spp_onnx import roi_spp_one_map


class ExportableDetector(nn.Module):
    """``forward(image (H, W, 3) uint8, proposals (P, 4) float32) -> (boxes, scores, labels)``
    (see the module docstring); built from a loaded detector by :func:`sppdet.export.build_exportable`."""

    def __init__(self, model: SPPDetector, cfg: Config) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.head = model.head
        self.levels: Tuple[int, ...] = tuple(int(n) for n in cfg.model.spp_levels)
        self.stride = float(model.spp.stride)
        self.offset = float(model.spp.offset)
        self.pad_to = int(getattr(model.backbone, "stride"))  # images are padded to a multiple of it
        self.normalization = cfg.model.normalization
        self.scales: Tuple[int, ...] = tuple(int(s) for s in cfg.input.test_scales)
        self.max_size = int(cfg.input.max_size)
        self.target_area = float(cfg.input.target_size) ** 2
        self.flip = bool(cfg.test.flip)
        self.box_coder = BoxCoder(cfg.model.box_weights)
        self.score_thresh = float(cfg.test.score_thresh)
        self.nms_thresh = float(cfg.test.nms_thresh)
        self.max_detections = int(cfg.test.max_detections)
        self.num_classes = int(model.num_classes)

    def forward(self, image: Tensor, proposals: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        h, w = image_size(image)
        hf, wf = h.to(torch.float32), w.to(torch.float32)
        boxes = self._clean_proposals(proposals, wf, hf)
        factors = torch.cat([scale_factor(h, w, s, self.max_size) for s in self.scales])  # (S,) float64
        views: List[Tuple[Tensor, Tensor]] = []
        for flip in [False, True] if self.flip else [False]:
            feats = [self._features(image, factors[s : s + 1], flip) for s in range(len(self.scales))]
            views.append(self._score(feats, factors, _hflip(boxes, wf) if flip else boxes, flip))
        scores, deltas = views[0]
        for s, d in views[1:]:  # the Predictor's mean: (s0 + s1) / 2, same float ops
            scores, deltas = scores + s, deltas + d
        scores, deltas = scores / len(views), deltas / len(views)
        return self._postprocess(scores, deltas, boxes, wf, hf)

    # -- steps ---------------------------------------------------------------------------
    @staticmethod
    def _clean_proposals(proposals: Tensor, wf: Tensor, hf: Tensor) -> Tensor:
        """Clip to the image and drop empty or non-finite windows (as the Predictor does)."""
        p = proposals.to(torch.float32).reshape(-1, 4)
        p = _clip(p, wf, hf)
        keep = torch.isfinite(p).all(dim=1) & (p[:, 2] > p[:, 0]) & (p[:, 3] > p[:, 1])
        return p[keep]

    def _features(self, image: Tensor, factor: Tensor, flip: bool) -> Tensor:
        """Conv map ``(1, C, h, w)`` of the image resized by ``factor`` (mirrored if ``flip``)."""
        r = resize_to_factor(image, factor)
        if flip:
            r = r.flip(1)
        x = normalize_image(r.permute(2, 0, 1), self.normalization)
        pad_h = (-x.shape[1]) % self.pad_to
        pad_w = (-x.shape[2]) % self.pad_to
        x = F.pad(x, [0, pad_w, 0, pad_h])
        return self.backbone(x.unsqueeze(0))

    def _score(self, feats: Sequence[Tensor], factors: Tensor, boxes: Tensor, flipped: bool) -> Tuple[Tensor, Tensor]:
        """Class probabilities ``(P, K+1)`` and box deltas ``(P, 4K)`` of every window, each
        pooled at the scale where its scaled area is closest to ``target_size**2``."""
        num = boxes.shape[0]
        if len(feats) == 1:
            pooled = self._pool(feats[0], boxes * factors[0:1].to(torch.float32))
        else:
            area = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).to(
                torch.float64
            )
            level = (area.unsqueeze(1) * factors.unsqueeze(0) ** 2 - self.target_area).abs().argmin(dim=1)
            parts, order = [], []
            for s, feat in enumerate(feats):
                idx = torch.nonzero(level == s).flatten()
                parts.append(self._pool(feat, boxes[idx] * factors[s : s + 1].to(torch.float32)))
                order.append(idx)
            flat = torch.cat(parts)
            where = torch.cat(order).unsqueeze(1).expand(-1, flat.shape[1])
            pooled = torch.zeros((num, flat.shape[1]), dtype=flat.dtype).scatter(0, where, flat)
        out = self.head(pooled)
        scores = torch.softmax(out["cls_logits"], 1)
        deltas = out["bbox_deltas"]
        if flipped:  # a mirrored view's dx points the other way
            sign = torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=deltas.dtype).repeat(self.num_classes)
            deltas = deltas * sign
        return scores, deltas

    def _pool(self, feat: Tensor, scaled: Tensor) -> Tensor:
        return roi_spp_one_map(feat, scaled, self.levels, self.stride, self.offset)

    def _postprocess(
        self, scores: Tensor, deltas: Tensor, proposals: Tensor, wf: Tensor, hf: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """As :class:`sppdet.modeling.postprocess.PostProcess` with a dynamic image size."""
        k = self.num_classes
        boxes = _decode(self.box_coder, deltas, proposals.to(scores.dtype))
        boxes = _clip(boxes.reshape(-1, 4), wf, hf).view(-1, k, 4)
        cls_scores = scores[:, 1:]
        r, c = (cls_scores > self.score_thresh).nonzero(as_tuple=True)
        boxes, sc, labels = boxes[r, c], cls_scores[r, c], c + 1
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, sc, labels = boxes[valid], sc[valid], labels[valid]
        keep = torchvision.ops.batched_nms(boxes.float(), sc.float(), labels, self.nms_thresh)
        keep = keep[: self.max_detections]
        return boxes[keep].float(), sc[keep].float(), labels[keep].to(torch.int64)


def _clip(boxes: Tensor, wf: Tensor, hf: Tensor) -> Tensor:
    """Clip ``(R, 4)`` boxes (x1, y1, x2, y2) to ``[0, W] x [0, H]`` (W, H: 1-element float32 tensors)."""
    zero = torch.zeros_like(wf)
    x = torch.minimum(torch.maximum(boxes[:, 0::2], zero), wf)
    y = torch.minimum(torch.maximum(boxes[:, 1::2], zero), hf)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)


def _hflip(boxes: Tensor, wf: Tensor) -> Tensor:
    """Mirror ``(x1, y1, x2, y2)`` boxes in an image ``wf`` pixels wide."""
    return torch.stack([wf - boxes[:, 2], boxes[:, 1], wf - boxes[:, 0], boxes[:, 3]], 1)


def _decode(coder: BoxCoder, deltas: Tensor, proposals: Tensor) -> Tensor:
    """:meth:`sppdet.structures.BoxCoder.decode` op for op, returning ``(P, K, 4)`` directly: its
    final ``reshape(P, -1)`` cannot be exported for ``P = 0`` (ONNX cannot infer -1 from 0)."""
    wx, wy, ww, wh = coder.weights
    pw = (proposals[:, 2] - proposals[:, 0]).unsqueeze(1)
    ph = (proposals[:, 3] - proposals[:, 1]).unsqueeze(1)
    pcx = proposals[:, 0].unsqueeze(1) + 0.5 * pw
    pcy = proposals[:, 1].unsqueeze(1) + 0.5 * ph
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = (deltas[:, 2::4] / ww).clamp(max=coder.scale_clamp)
    dh = (deltas[:, 3::4] / wh).clamp(max=coder.scale_clamp)
    cx = dx * pw + pcx
    cy = dy * ph + pcy
    w = torch.exp(dw) * pw
    h = torch.exp(dh) * ph
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=2)
