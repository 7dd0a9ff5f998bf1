"""The one-command demo: sample data -> proposals -> train -> detect -> evaluate."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, Sequence

from ..api import Detector
from ..config import load_config
from ..data.build import build_dataset
from ..data.synthetic import generate_sample_dataset
from ..proposals.build import get_proposals
from .checkpoint import load_checkpoint
from .detect import run_detect
from .run import evaluate_checkpoint
from .train import LAST, model_config_mismatch, train

log = logging.getLogger("sppdet.demo")


def run_demo(
    config: str = "configs/sample_tiny.yaml",
    data_dir: str = "data/sample",
    overrides: Sequence[str] = (),
    num_detect_images: int = 6,
    num_train: int = 160,
    num_test: int = 160,
) -> Dict:
    """Run the whole pipeline on the generated sample set; returns a summary dict."""
    t0 = time.time()
    timings = {}
    log.info("[1/5] sample data -> %s", data_dir)
    generate_sample_dataset(data_dir, num_train=num_train, num_test=num_test)
    timings["data"] = time.time() - t0
    cfg = load_config(config, [f"data.root={Path(data_dir) / 'voc'}", *overrides])
    out = Path(cfg.output_dir)

    _set_aside_other_model(cfg, out)
    t = time.time()
    log.info("[2/5] proposals (%s)", cfg.proposals.method)
    for split in ("train", "test"):
        get_proposals(cfg, build_dataset(cfg, split), split, str(out))
    timings["proposals"] = time.time() - t

    t = time.time()
    log.info("[3/5] training %s for %d iterations", cfg.name, cfg.train.max_iter)
    summary = train(cfg, str(out), resume=True)
    timings["train"] = time.time() - t

    t = time.time()
    log.info("[4/5] detect on %d test images", num_detect_images)
    test_set = build_dataset(cfg, "test")
    files = [r.file_name for r in test_set.records[:num_detect_images]]
    run_detect(Detector.from_checkpoint(summary["checkpoint"], score_thresh=0.5), files, str(out / "detect"))
    timings["detect"] = time.time() - t

    t = time.time()
    log.info("[5/5] evaluate on the test split (%s)", cfg.test.metric)
    metrics = evaluate_checkpoint(summary["checkpoint"], str(out))
    timings["evaluate"] = time.time() - t
    timings["total"] = time.time() - t0
    return {
        "mAP": metrics["mAP"],
        "metrics": metrics,
        "timings": timings,
        "checkpoint": summary["checkpoint"],
        "detect_dir": str(out / "detect"),
        "report": str(out / "eval" / "report.html"),
    }


def _set_aside_other_model(cfg, out: Path) -> None:
    """The demo resumes an interrupted run; a run of another model (an older demo config) is
    renamed to ``<out>.old-<time>`` instead, so the demo starts over and nothing is lost."""
    last = out / LAST
    if not last.is_file():
        return
    diff = model_config_mismatch(load_checkpoint(last), cfg)
    if diff is None:
        return
    aside = out.with_name(f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    out.rename(aside)
    log.warning("%s was trained with %s: moved that run to %s and starting over", last, diff, aside)
