"""Export a trained SPP-net detector to ONNX or TorchScript.

    python tools/export.py --weights CKPT --format onnx|torchscript --out FILE [key=value ...]

The file takes ``image`` (uint8 H x W x 3, RGB, the raw image: resizing to the test scale(s)
and normalisation happen inside) and ``proposals`` (float32 P x 4, x1 y1 x2 y2 in that image's
pixels) and returns ``boxes`` (float32 N x 4), ``scores`` (float32 N) and ``labels`` (int64 N,
1..K): the detections of ``tools/detect.py`` for the same image and proposals, NMS included.
Overrides (e.g. ``test.score_thresh=0.3``) change the exported test settings. See the README,
"Export", for running the file with onnxruntime.
"""

import argparse
import sys

from sppdet.cli import run_tool, setup_logging


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="checkpoint written by tools/train.py")
    p.add_argument("--format", required=True, help="onnx or torchscript")
    p.add_argument("--out", required=True, help="file to write (e.g. model.onnx, model.pt)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. test.score_thresh=0.3")
    args = p.parse_args(argv)
    setup_logging(args.verbose)

    from sppdet.export import export_model

    out = export_model(args.weights, args.format, args.out, args.overrides)
    print(f"wrote {out} ({args.format})")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
