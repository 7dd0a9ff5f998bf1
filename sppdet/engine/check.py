"""``tools/train.py --check``: everything training needs, without training.

The config was checked when it was loaded (:mod:`sppdet.config`). Here the model is built, its
weights read (torchvision weights only when already in the torch hub cache: nothing is
downloaded), and one training batch is read: the first images of the sample stream, their
proposals computed or read into a temporary folder, the images decoded, scaled and sampled
exactly as training would. Nothing is written next to the config or the output folder.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple
from urllib.parse import urlparse

import torch

from ..config import Config
from ..data.build import build_dataset
from ..data.dataset import DetectionDataset
from ..data.voc import VOC_CLASSES
from ..errors import SppdetError
from ..modeling.backbone import resolve_weights
from ..modeling.detector import build_detector
from ..proposals.build import get_proposals
from .data import SampleStream, build_train_loader

#: Classes a COCO model has when the annotations cannot be read and ``data.classes`` is empty.
_COCO_CLASSES = 80


def _weights_for_check(cfg: Config) -> Tuple[Config, str]:
    """The config to build the model with, and what happens to ``model.weights``: a local file
    is loaded; torchvision weights are loaded from the torch hub cache when there, else only
    their name is checked (``--check`` never downloads)."""
    weights = cfg.model.weights
    if not weights:
        return cfg, "random init (model.weights is empty)"
    source = resolve_weights(cfg.model.backbone, weights)  # a bad name or missing file raises here
    if isinstance(source, Path):
        return cfg, f"loaded from {source}"
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(source.url).path).name
    if cached.is_file():
        return cfg, f"torchvision {source} (from the cache {cached})"
    skip = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=""))
    return skip, f"torchvision {source}: name valid, not downloaded by --check (random init for the check)"


def _first_images(dataset: DetectionDataset, cfg: Config) -> DetectionDataset:
    """The images of the first training batch of the sample stream (``train.ims_per_batch``)."""
    stream = iter(SampleStream(len(dataset), cfg.train.seed))
    first = [next(stream)[0] for _ in range(min(cfg.train.ims_per_batch, len(dataset)))]
    return dataset.subset([dataset[i].image_id for i in dict.fromkeys(first)])


def check_training_setup(cfg: Config) -> Tuple[Dict[str, Any], Optional[SppdetError]]:
    """Build the model and read one training batch: a JSON-friendly summary, and the error that
    would stop training reading its data (``None`` when the batch was read).

    Bad weights raise :class:`~sppdet.errors.SppdetError` (one line). When the training data
    cannot be read, the model is still built (with ``data.classes``, or the VOC or COCO class
    count) and the data error is returned with the summary, so both are checked in one run.
    """
    summary: Dict[str, Any] = {"config": "valid", "recipe": cfg.train.recipe}
    data_error: Optional[SppdetError] = None
    dataset: Optional[DetectionDataset] = None
    try:
        dataset = build_dataset(cfg, "train")
        num_classes = len(dataset.class_names)
        summary["train_images"] = len(dataset)
    except SppdetError as e:
        data_error = e
        num_classes = len(cfg.data.classes) or (len(VOC_CLASSES) if cfg.data.format == "voc" else _COCO_CLASSES)
    build_cfg, weights_note = _weights_for_check(cfg)
    quiet = build_cfg is not cfg  # weights left out for the check: no warnings about random init
    backbone_log = logging.getLogger("sppdet.backbone")
    backbone_log.disabled, was = quiet or backbone_log.disabled, backbone_log.disabled
    try:
        model = build_detector(build_cfg, num_classes)
    finally:
        backbone_log.disabled = was
    summary["model"] = {
        "backbone": cfg.model.backbone,
        "classes": num_classes,
        "parameters": sum(p.numel() for p in model.parameters()),
        "stride": model.backbone.stride,
        "weights": weights_note,
    }
    if dataset is None:
        return summary, data_error
    if len(dataset) == 0:
        return summary, SppdetError(f"training split '{cfg.data.train_split}' has no images")
    subset = _first_images(dataset, cfg)
    with tempfile.TemporaryDirectory(prefix="sppdet-check-") as tmp:
        # proposals of the batch's images only, cached in the temporary folder; no loader workers
        check_cfg = dataclasses.replace(
            cfg,
            output_dir=tmp,
            proposals=dataclasses.replace(cfg.proposals, cache_dir=str(Path(tmp) / "proposals"), workers=0),
            train=dataclasses.replace(cfg.train, workers=0),
        )
        store = get_proposals(check_cfg, subset, "train", tmp, progress=False)
        loader = build_train_loader(subset, store, check_cfg, model.normalization, model.backbone.stride)
        batch, rois, labels, _targets = next(iter(loader))
    summary["batch"] = {
        "images": [r.image_id for r in subset],
        "image_tensors": [list(t.shape) for t in batch.images],
        "windows": int(len(rois)),
        "foreground_windows": int((labels > 0).sum()),
    }
    return summary, None
