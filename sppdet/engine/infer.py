"""Inference: one image (or a dataset) + proposals -> detections.

The conv features of an image are computed once per test scale; all of the image's windows
are pooled from them and scored by the head in chunks (bounded memory for any number of
proposals). Scoring is by the (K+1)-way softmax, or by per-class SVMs plus box regressors
when the checkpoint carries the paper recipe's models and ``train.paper.scorer`` is "svm".
"""

from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch

from ..config import Config
from ..data.dataset import DetectionDataset
from ..data.image_io import read_image
from ..evaluation.detections import ImageDetections
from ..modeling.compress import checked_fc_compression, compress_head
from ..modeling.postprocess import PostProcess
from ..structures import BoxCoder, clip_boxes, hflip_boxes, valid_boxes_mask
from . import distributed as du

log = logging.getLogger("sppdet.infer")

#: Windows scored per head call; bounds memory (2,000 x 12,800 floats = 100 MB otherwise).
CHUNK = 512


class Predictor:
    """Run a trained detector on images with given proposals.

    ``predict(image, proposals)`` takes an RGB uint8 ``HxWx3`` image and ``(P, 4)`` proposal
    boxes ``(x1, y1, x2, y2)`` in that image's pixels, and returns :class:`ImageDetections`
    (boxes in the same convention, scores, labels 1..K).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: Config,
        class_names: Sequence[str],
        device: Union[str, torch.device] = "cpu",
        scorer: Optional[object] = None,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.class_names = list(class_names)
        self.device = torch.device(device)
        self.scorer = scorer  # optional paper-recipe scorer (SVMs + box regressors)
        tc = cfg.test
        self.postprocess = PostProcess(
            BoxCoder(cfg.model.box_weights), tc.score_thresh, tc.nms_thresh, tc.max_detections
        )

    def predict(self, image: np.ndarray, proposals: np.ndarray) -> ImageDetections:
        return self.predict_batch([image], [proposals])[0]

    @torch.no_grad()
    def predict_batch(self, images: Sequence[np.ndarray], proposals: Sequence[np.ndarray]) -> list:
        """Detections for several images: one padded conv pass per scale for all of them."""
        self.model.eval()
        props = []
        for image, p in zip(images, proposals):
            h, w = image.shape[:2]
            t = clip_boxes(torch.as_tensor(np.asarray(p, dtype=np.float32)).reshape(-1, 4), w, h)
            props.append(t[valid_boxes_mask(t, 0.0)])
        views = [False, True] if self.cfg.test.flip else [False]
        scales, max_size = self.cfg.input.test_scales, self.cfg.input.max_size
        passes = []
        for flip in views:
            batch = self.model.prepare(list(images), scales, max_size, [flip] * len(images)).to(self.device)
            passes.append((flip, batch, self.model.conv_features(batch)))
        results = []
        for b, (image, p) in enumerate(zip(images, props)):
            if len(p) == 0:
                results.append(ImageDetections.empty())
                continue
            width = image.shape[1]
            views_out = [
                self._score(feats, batch, b, hflip_boxes(p, width) if flip else p, flip)
                for flip, batch, feats in passes
            ]
            s = sum(v[0] for v in views_out) / len(views_out)
            d = None if views_out[0][1] is None else sum(v[1] for v in views_out) / len(views_out)
            dets = self.postprocess(s, d, p.to(self.device), image.shape[:2])
            results.append(
                ImageDetections(
                    dets["boxes"].cpu().numpy().astype(np.float32),
                    dets["scores"].cpu().numpy().astype(np.float32),
                    dets["labels"].cpu().numpy().astype(np.int64),
                )
            )
        return results

    def _score(self, feats, batch, b: int, boxes: torch.Tensor, flipped: bool):
        """Class scores ``(P, K+1)`` and box deltas ``(P, 4K)`` (or None) of image ``b``'s windows,
        in chunks; deltas of a mirrored view are mirrored back (``dx -> -dx``)."""
        scores, deltas = [], []
        for i in range(0, len(boxes), CHUNK):
            c = boxes[i : i + CHUNK].to(self.device)
            rois = torch.cat([c.new_full((len(c), 1), float(b)), c], 1)
            pooled = self.model.pool(feats, batch.factors, rois)
            if self.scorer is not None:
                s, d = self.scorer(self.model, pooled, c)
            else:
                out = self.model.head(pooled)
                s, d = torch.softmax(out["cls_logits"], 1), out["bbox_deltas"]
            scores.append(s.float())
            deltas.append(d.float() if d is not None else None)
        d = torch.cat(deltas) if deltas[0] is not None else None
        if d is not None and flipped:
            d = d.clone()
            d[:, 0::4] = -d[:, 0::4]
        return torch.cat(scores), d


def load_predictor(weights: str, overrides: Sequence[str] = (), device: str = "auto") -> Predictor:
    """A :class:`Predictor` for a checkpoint file (config and classes come from the checkpoint)."""
    from .checkpoint import load_model_from_checkpoint

    dev = du.resolve_device(device)
    model, cfg, class_names, state = load_model_from_checkpoint(weights, overrides, dev)
    tc = cfg.test
    if tc.svd_rank_fc6 > 0 or tc.svd_rank_fc7 > 0:
        model.head.compress_svd([tc.svd_rank_fc6, tc.svd_rank_fc7])
        model.to(dev)
    if tc.fc_compression:
        model.head = compress_head(model.head, checked_fc_compression(tc, dev))
    scorer = None
    extras = state.get("extras") or {}
    if "paper" in extras and cfg.train.paper.scorer == "svm":
        from ..svm import PaperScorer

        scorer = PaperScorer.from_state(extras["paper"], cfg, dev)
    return Predictor(model, cfg, class_names, dev, scorer)


def detect_dataset(
    predictor: Predictor, dataset: DetectionDataset, proposals, progress: bool = True
) -> Dict[str, ImageDetections]:
    """Detections for every image of ``dataset`` (sharded over ranks, gathered on every rank)."""
    from tqdm import tqdm

    rank, world = du.get_rank(), du.get_world_size()
    mine = list(range(rank, len(dataset), world))
    results: Dict[str, ImageDetections] = {}
    it = tqdm(mine, desc="detect", unit="img", disable=not (progress and du.is_main_process()), mininterval=1.0)
    for i in it:
        rec = dataset[i]
        image = read_image(rec.file_name, predictor.cfg.input.max_image_pixels)
        results[rec.image_id] = predictor.predict(image, proposals.boxes(rec.image_id))
    if world > 1:
        merged: Dict[str, ImageDetections] = {}
        for part in du.all_gather_object(results):
            merged.update(part)
        results = {rid: merged[rid] for rid in dataset.ids}
    return results


def run_on_dataset(
    weights: str,
    dataset: Optional[DetectionDataset] = None,
    config: Optional[str] = None,
    overrides: Sequence[str] = (),
    device: str = "auto",
    output_dir: Optional[str] = None,
) -> Dict[str, ImageDetections]:
    """Load a checkpoint and detect on ``dataset`` (default: the config's test split).

    Proposals come from the config (``proposals.method`` / ``proposals.test_file``), computed
    and cached when needed. ``config`` (a YAML path) replaces the checkpoint's data and
    proposal settings, e.g. to run on another dataset.
    """
    from ..config import load_config
    from ..data.build import build_dataset
    from ..proposals.build import get_proposals

    predictor = load_predictor(weights, overrides, device)
    cfg = predictor.cfg
    if config:
        user = load_config(config, overrides)
        cfg.data, cfg.proposals = user.data, user.proposals
    if dataset is None:
        dataset = build_dataset(cfg, "test")
    _check_classes(dataset, predictor.class_names, weights)
    store = get_proposals(cfg, dataset, "test", output_dir or cfg.output_dir)
    return detect_dataset(predictor, dataset, store)


def _check_classes(dataset: DetectionDataset, class_names: Sequence[str], weights: str) -> None:
    from ..errors import CheckpointError

    if list(dataset.class_names) != list(class_names):
        raise CheckpointError(
            f"{weights}: checkpoint classes {list(class_names)} differ from the dataset's {list(dataset.class_names)}"
        )
