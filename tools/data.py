"""Look at a dataset before training on it.

    python tools/data.py check ROOT                     # VOC-style folder (labelImg, CVAT, Roboflow)
    python tools/data.py check ANN.json [--images DIR]  # COCO json (images: DIR, else beside the json)
    python tools/data.py show ROOT --out DIR [--max N]  # ground truth drawn onto the images

``check`` prints images, objects per class, a box-size histogram and every problem found
(unreadable XML, missing image, dropped or clipped box, size mismatch, unused images); it exits
0 when the files can be read, whatever the problems (training applies the policy of
data/README.md to them). Classes: ``--classes a,b,c``, else the names found, sorted.
"""

import argparse
import sys
from pathlib import Path

from sppdet.cli import run_tool, setup_logging


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["check", "show"])
    p.add_argument("root", help="VOC-style dataset folder, or a COCO instances json")
    p.add_argument("--images", help="COCO: image folder (default: the json's folder)")
    p.add_argument("--classes", help="comma-separated class names (default: discovered, sorted)")
    p.add_argument("--out", help="show: folder for the drawn images")
    p.add_argument("--max", type=int, default=50, help="show: at most this many images (0 = all)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.verbose)

    from sppdet.data.inspect import draw_ground_truth, load_for_check
    from sppdet.data.stats import dataset_summary, format_summary
    from sppdet.errors import SppdetError

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    dataset, problems = load_for_check(Path(args.root), args.images, classes)
    if args.command == "check":
        print(f"dataset: {args.root}")
        print(format_summary(dataset_summary(dataset), problems))
        return 0
    if not args.out:
        raise SppdetError("show needs --out DIR (where the drawn images go)")
    n = draw_ground_truth(dataset, args.out, args.max)
    print(f"{n} images with their ground truth in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
