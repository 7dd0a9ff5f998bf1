"""Train an :class:`SPPClassifier` on crops: warped squares or native sizes in size buckets,
one size or several in turn (multi-size training), cross-entropy, SGD/AdamW with a linear
warm-up and cosine decay. Each epoch ends with an atomic ``last.pth``; the run with
``model_final.pth`` and ``train_summary.json`` (times, per-epoch loss and input sizes).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import ConfigError
from ..fileio import make_output_dir, save_json, save_text
from ..utils.comm import resolve_device
from .checkpoint import save_classifier
from .config import ClassifierConfig, dump_classifier_config
from .data import CropSet, load_crop_set
from .model import SPPClassifier, build_classifier
from .sizes import Batch, make_batch, plan_epoch

log = logging.getLogger(__name__)


def epoch_indices(labels: np.ndarray, max_per_class: int, rng: np.random.Generator) -> np.ndarray:
    """The crops of one epoch: all, or at most ``max_per_class`` of each class drawn anew."""
    if max_per_class <= 0:
        return np.arange(len(labels))
    keep = []
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        keep.append(rng.choice(idx, size=min(len(idx), max_per_class), replace=False))
    return np.sort(np.concatenate(keep))


def _optimizer(model: SPPClassifier, cfg: ClassifierConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    t = cfg.train
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.base_lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.base_lr, momentum=t.momentum, weight_decay=t.weight_decay)


def lr_factor(it: int, total: int, warmup: int) -> float:
    """Linear warm-up from 0.1 over ``warmup`` iterations, then cosine decay to 0 at ``total``."""
    if it < warmup:
        return 0.1 + 0.9 * it / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(it - warmup, total) / max(total - warmup, 1)))


def _set_threads(n: int) -> None:
    if n > 0:
        torch.set_num_threads(n)


def train_classifier(
    cfg: ClassifierConfig, output_dir: Optional[str] = None, crops: Optional[CropSet] = None
) -> Dict[str, Any]:
    """Train from ``cfg`` (``crops`` given: use them instead of reading the train split).

    Returns the summary also written to ``OUTPUT/train_summary.json``: ``weights`` (the final
    checkpoint), ``train_seconds``, ``cpu_seconds``, ``crops``, ``class_counts`` and ``history``
    (per epoch: ``loss``, ``accuracy`` on the training batches, ``sizes`` = the input
    ``(height, width)`` of each batch, in order, when there are at most 8 distinct ones, else their count).
    """
    out = make_output_dir(output_dir or cfg.output_dir)
    save_text(dump_classifier_config(cfg), out / "config.yaml")
    _set_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    rng = np.random.default_rng(cfg.train.seed)
    device = resolve_device(cfg.device)
    if crops is None:
        crops = load_crop_set(cfg.data, "train", cfg.input.max_image_pixels)
    log.info("training crops: %d %s", len(crops), crops.class_counts())
    model = build_classifier(cfg.model, crops.num_classes).to(device)
    log.info("model: %s", model_summary(model))
    optimizer = _optimizer(model, cfg)
    native = crops.sizes()
    # every epoch planned up front: native size buckets make the number of batches vary, and
    # the cosine schedule must end with the last real iteration
    plans: List[List[Batch]] = []
    for epoch in range(cfg.train.epochs):
        indices = epoch_indices(crops.labels, cfg.data.max_per_class, rng)
        first = sum(len(p) for p in plans)
        plans.append(plan_epoch(native, indices.tolist(), cfg.input, cfg.train.batch_size, epoch, first, rng))
    total = sum(len(p) for p in plans)
    history: List[Dict[str, Any]] = []
    it = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(cfg.train.epochs):
        model.train()
        batches = plans[epoch]
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", unit="batch", leave=False)
        for batch in bar:
            for group in optimizer.param_groups:
                group["lr"] = cfg.train.base_lr * lr_factor(it, total, cfg.train.warmup_iters)
            images = make_batch(crops.crops, batch, rng if cfg.train.flip else None).to(device)
            labels = torch.from_numpy(crops.labels[list(batch.indices)]).to(device)
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
            if not torch.isfinite(loss):
                raise ConfigError(f"train: loss is {loss.item()} at iteration {it} (lower train.base_lr?)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = len(batch.indices)
            loss_sum += loss.item() * n
            correct += int((logits.argmax(1) == labels).sum())
            seen += n
            it += 1
            if it % cfg.train.log_period == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        sizes = [list(b.size) for b in batches]
        distinct = sorted({tuple(s) for s in sizes})
        entry = {
            "epoch": epoch + 1,
            "loss": loss_sum / max(seen, 1),
            "accuracy": correct / max(seen, 1),
            "crops": seen,
            "iterations": len(batches),
            "sizes": sizes if len(distinct) <= 8 else f"{len(distinct)} distinct",
        }
        history.append(entry)
        log.info(
            "epoch %d/%d: loss %.4f, train accuracy %.4f, %d crops in %d batches (%d input sizes), %.0f s",
            epoch + 1,
            cfg.train.epochs,
            entry["loss"],
            entry["accuracy"],
            seen,
            len(batches),
            len(distinct),
            time.perf_counter() - start,
        )
        save_classifier(out / "last.pth", model, cfg, crops.class_names, epoch + 1)
    final = out / "model_final.pth"
    save_classifier(final, model, cfg, crops.class_names, cfg.train.epochs)
    summary = {
        "weights": str(final),
        "train_seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
        "threads": torch.get_num_threads(),
        "crops": len(crops),
        "class_counts": crops.class_counts(),
        "history": history,
    }
    save_json(summary, out / "train_summary.json")
    log.info("saved %s (%.0f s training)", final, summary["train_seconds"])
    return summary


def model_summary(model: SPPClassifier) -> str:
    """One line: trainable / total parameters and the pooled length."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{trainable:,} of {total:,} parameters trained; pooled length {model.feature_length}"
