"""Inference: one image (or a dataset) + proposals -> detections.

The conv features of an image are computed once per test scale; all of the image's windows
are pooled from them and scored by the head in chunks (bounded memory for any number of
proposals). Scoring is by the (K+1)-way softmax, or by per-class SVMs plus box regressors
when the checkpoint carries the paper recipe's models and ``train.paper.scorer`` is "svm".
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Dict, List, Optional, Sequence, Union, cast

import numpy as np
import torch

from ..config import Config
from ..data.dataset import DetectionDataset
from ..data.image_io import read_image
from ..evaluation.writer import DetectionsWriter
from ..modeling.compress import checked_fc_compression, compress_head
from ..modeling.detector import SPPDetector
from ..modeling.postprocess import PostProcess
from ..modeling.scorer import WindowScorer
from ..structures import BoxCoder, ImageDetections, clip_boxes, hflip_boxes, valid_boxes_mask
from ..utils import comm as du

log = logging.getLogger("sppdet.infer")

#: ``test.amp`` values and their autocast dtypes (on CUDA).
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}

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
        model: SPPDetector,
        cfg: Config,
        class_names: Sequence[str],
        device: Union[str, torch.device] = "cpu",
        scorer: Optional[WindowScorer] = None,
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
        self.amp_dtype = AMP_DTYPES[tc.amp] if self.device.type == "cuda" else None
        if tc.amp != "off" and self.device.type != "cuda":
            # a checkpoint trained with test.amp on a GPU must still run on a laptop: not an error
            log.warning("test.amp=%s applies on CUDA only; running in float32 on %s", tc.amp, self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to ``test.amp``'s dtype on CUDA; a no-op otherwise."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def predict(self, image: np.ndarray, proposals: np.ndarray) -> ImageDetections:
        return self.predict_batch([image], [proposals])[0]

    @torch.no_grad()
    def predict_batch(self, images: Sequence[np.ndarray], proposals: Sequence[np.ndarray]) -> list:
        """Detections for several images: one padded conv pass per scale for all of them."""
        self.model.eval()
        props: List[torch.Tensor] = []
        for image, given in zip(images, proposals):
            h, w = image.shape[:2]
            t = clip_boxes(torch.as_tensor(np.asarray(given, dtype=np.float32)).reshape(-1, 4), w, h)
            props.append(t[valid_boxes_mask(t, 0.0)])
        views = [False, True] if self.cfg.test.flip else [False]
        scales, max_size = self.cfg.input.test_scales, self.cfg.input.max_size
        passes = []
        for flip in views:
            batch = self.model.prepare(list(images), scales, max_size, [flip] * len(images)).to(self.device)
            with self.autocast():
                feats = self.model.conv_features(batch)
            # SPP pooling sees float32 maps (the dtype its backends are tested with); the fc head
            # runs under autocast again in _score
            passes.append((flip, batch, [f.float() for f in feats] if self.amp_dtype is not None else feats))
        results = []
        for b, (image, p) in enumerate(zip(images, props)):
            if len(p) == 0:
                results.append(ImageDetections.empty())
                continue
            width = image.shape[1]
            with self.autocast():  # scores and deltas come back as float32 (see _score)
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
        scores: List[torch.Tensor] = []
        deltas: List[Optional[torch.Tensor]] = []
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
        d = torch.cat([x for x in deltas if x is not None]) if deltas[0] is not None else None
        if d is not None and flipped:
            d = d.clone()
            d[:, 0::4] = -d[:, 0::4]
        return torch.cat(scores), d


def load_predictor(weights: str, overrides: Sequence[str] = (), device: str = "auto") -> Predictor:
    """A :class:`Predictor` for a checkpoint file (config and classes come from the checkpoint)."""
    from .checkpoint import load_model_from_checkpoint

    dev = du.resolve_device(device)
    module, cfg, class_names, state = load_model_from_checkpoint(weights, overrides, dev)
    model = cast(SPPDetector, module)  # build_detector's class
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
    predictor: Predictor,
    dataset: DetectionDataset,
    proposals,
    progress: bool = True,
    writer: Optional[DetectionsWriter] = None,
) -> Dict[str, ImageDetections]:
    """Detections for every image of ``dataset`` (sharded over ranks, gathered on every rank).

    ``writer`` (already reset) gets every image in dataset order, as it is detected in a single
    process, after the gather on rank 0 under torchrun; the caller finishes it.
    """
    from tqdm import tqdm

    rank, world = du.get_rank(), du.get_world_size()
    mine = list(range(rank, len(dataset), world))
    results: Dict[str, ImageDetections] = {}
    it = tqdm(mine, desc="detect", unit="img", disable=not (progress and du.is_main_process()), mininterval=1.0)
    for i in it:
        rec = dataset[i]
        image = read_image(rec.file_name, predictor.cfg.input.max_image_pixels)
        results[rec.image_id] = predictor.predict(image, proposals.boxes(rec.image_id))
        if writer is not None and world == 1:
            writer.process(rec.image_id, results[rec.image_id], str(rec.file_name), rec.width, rec.height)
    if world > 1:
        merged: Dict[str, ImageDetections] = {}
        for part in du.all_gather_object(results):
            merged.update(part)
        results = {rid: merged[rid] for rid in dataset.ids}
        if writer is not None and du.is_main_process():
            for rec in dataset.records:
                writer.process(rec.image_id, results[rec.image_id], str(rec.file_name), rec.width, rec.height)
    return results


def run_on_dataset(
    weights: str,
    dataset: Optional[DetectionDataset] = None,
    config: Optional[str] = None,
    overrides: Sequence[str] = (),
    device: str = "auto",
    output_dir: Optional[str] = None,
    writer: Optional[DetectionsWriter] = None,
) -> Dict[str, ImageDetections]:
    """Load a checkpoint and detect on ``dataset`` (default: the config's test split).

    Proposals come from the config (``proposals.method`` / ``proposals.test_file``), computed
    and cached when needed. ``config`` (a YAML path) replaces the checkpoint's data and
    proposal settings, e.g. to run on another dataset. ``writer``: see :func:`detect_dataset`.
    """
    from ..config import load_config
    from ..data.build import build_dataset
    from ..proposals.build import get_proposals

    predictor = load_predictor(weights, overrides, device)
    cfg = predictor.cfg
    if config:
        user = load_config(config, overrides)
        cfg = dataclasses.replace(cfg, data=user.data, proposals=user.proposals)
    if dataset is None:
        dataset = build_dataset(cfg, "test")
    check_classes(dataset, predictor.class_names, weights)
    store = get_proposals(cfg, dataset, "test", output_dir or cfg.output_dir)
    return detect_dataset(predictor, dataset, store, writer=writer)


def check_classes(dataset: DetectionDataset, class_names: Sequence[str], weights: str) -> None:
    """A one-line :class:`CheckpointError` unless the checkpoint ``weights`` has the dataset's classes."""
    from ..errors import CheckpointError

    if list(dataset.class_names) != list(class_names):
        raise CheckpointError(
            f"{weights}: checkpoint classes {list(class_names)} differ from the dataset's {list(dataset.class_names)}"
        )
