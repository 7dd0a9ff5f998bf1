"""Generate the sample detection set (five shape classes on cluttered backgrounds).

    python tools/make_sample_data.py [--out data/sample] [--num-train 160] [--num-test 160] [--seed 0] [--force]

Writes OUT/voc (PASCAL VOC layout) and OUT/coco (COCO json over the same JPEGs); see
data/README.md. A complete set with the same parameters is left as it is unless --force.
"""

import argparse
import json
import sys

from sppdet.cli import run_tool, setup_logging


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/sample", help="output folder (default: data/sample)")
    p.add_argument("--num-train", type=int, default=160, help="training images (default: 160)")
    p.add_argument("--num-test", type=int, default=160, help="test images (default: 160)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--force", action="store_true", help="regenerate even if a complete set exists")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)

    from sppdet.data.synthetic import generate_sample_dataset

    setup_logging(args.verbose)
    info = generate_sample_dataset(
        args.out, num_train=args.num_train, num_test=args.num_test, seed=args.seed, force=args.force
    )
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
