"""Train an SPP-net detector.

    python tools/train.py --config configs/sample_tiny.yaml [--output DIR] [--resume] [key=value ...]
    python tools/train.py --config C --check     # validate, build the model, read one batch; no training

``train.recipe: end2end`` trains through the SPP layer (Fast R-CNN style);
``train.recipe: paper`` runs the SPP-net multi-stage recipe on cached features.
Works unchanged under ``torchrun --nproc_per_node=N tools/train.py ...``.
"""

import argparse
import json
import sys

from sppdet.cli import run_tool, setup_logging
from sppdet.config import load_config
from sppdet.engine.check import check_training_setup
from sppdet.engine.run import run_training
from sppdet.utils import comm as du


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("--output", default=None, help="output folder (default: the config's output_dir)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pth (or the cached stages)")
    p.add_argument("--stage", default="all", help="paper recipe only: all|cache|finetune|svm|bbox")
    p.add_argument("--eval", action="store_true", help="evaluate on the test split when training ends")
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the config, build the model and read one training batch, then stop (nothing written)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.max_iter=100")
    args = p.parse_args(argv)

    cfg = load_config(args.config, args.overrides)
    if args.check:
        setup_logging(args.verbose)
        summary, data_error = check_training_setup(cfg)
        print(json.dumps(summary, indent=2))
        if data_error is not None:
            raise data_error
        return 0
    du.init_distributed(cfg.device)
    setup_logging(args.verbose, du.get_rank())
    summary = run_training(cfg, args.output, resume=args.resume, stage=args.stage, evaluate=args.eval)
    if du.is_main_process():
        brief = {k: v for k, v in summary.items() if k not in ("history", "metrics")}
        if "metrics" in summary:
            m = summary["metrics"]
            brief["metrics"] = {k: m[k] for k in ("metric", "mAP", "ap", "detect_seconds_per_image") if k in m}
        print(json.dumps(brief, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
