"""One entry point for a training job, whatever the recipe, plus the final evaluation."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, Optional

from ..config import Config
from ..data.build import build_dataset
from ..errors import ConfigError
from ..evaluation import evaluate
from ..evaluation.detections import save_detections
from ..evaluation.report import format_table, write_report
from ..proposals.build import get_proposals
from ..utils import comm as du
from .infer import check_classes, detect_dataset, load_predictor
from .paper import train_paper
from .train import train

log = logging.getLogger("sppdet.train")


def run_training(
    cfg: Config, output_dir: Optional[str] = None, resume: bool = False, stage: str = "all", evaluate: bool = False
) -> Dict:
    """Train with ``cfg.train.recipe`` ("end2end" or "paper"); optionally evaluate at the end."""
    out = output_dir or cfg.output_dir
    if cfg.train.recipe == "end2end":
        if stage != "all":
            raise ConfigError("--stage applies to train.recipe=paper only")
        summary = train(cfg, out, resume=resume)
    else:  # "paper" (config.py admits only these two)
        summary = train_paper(cfg, out, resume=resume, stage=stage)
    if evaluate:
        summary["metrics"] = evaluate_checkpoint(summary["checkpoint"], out)
    return summary


def evaluate_checkpoint(weights: str, output_dir: str, overrides=()) -> Dict:
    """Detect on the checkpoint's test split, evaluate, and write metrics + report to output_dir/eval."""
    predictor = load_predictor(weights, overrides, "auto")
    cfg = predictor.cfg
    dataset = build_dataset(cfg, "test")
    check_classes(dataset, predictor.class_names, weights)
    store = get_proposals(cfg, dataset, "test", output_dir)
    t0 = time.time()
    dets = detect_dataset(predictor, dataset, store)
    seconds = time.time() - t0
    if not du.is_main_process():
        return {}
    metrics = evaluate(dataset, dets, cfg.test.metric)
    metrics["detect_seconds_per_image"] = seconds / max(1, len(dataset))
    ev = Path(output_dir) / "eval"
    save_detections(dets, ev / "detections.json", dataset)
    write_report(ev, dataset, dets, metrics)
    log.info("evaluation (%s) on %s:\n%s", cfg.test.metric, cfg.data.test_split, format_table(metrics))
    return metrics
