"""The quick-start demo: generate the sample set, compute proposals, train configs/sample_tiny.yaml,
detect on a few test images and evaluate. ``make demo`` runs this.

    python tools/demo.py [--config configs/sample_tiny.yaml] [key=value ...]
"""

import argparse
import sys

from sppdet.cli import run_tool, setup_logging


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/sample_tiny.yaml")
    p.add_argument("--data", default="data/sample", help="where the sample set is generated")
    p.add_argument("--num-train", type=int, default=160, help="sample-set training images")
    p.add_argument("--num-test", type=int, default=160, help="sample-set test images")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.max_iter=200")
    args = p.parse_args(argv)
    setup_logging()

    from sppdet.engine.demo import run_demo

    s = run_demo(args.config, args.data, args.overrides, num_train=args.num_train, num_test=args.num_test)
    t = s["timings"]
    print(
        f"\nsample-set VOC07 mAP: {s['mAP']:.4f}   (total {t['total'] / 60:.1f} min: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in t.items() if k != "total")
        + ")"
    )
    print(f"annotated images: {s['detect_dir']}/")
    print(f"report:           {s['report']}")
    print(f"checkpoint:       {s['checkpoint']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
