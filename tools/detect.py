"""Run a trained SPP-net detector on images, a video or a camera.

    python tools/detect.py --weights CKPT --input PATH [PATH ...] --output DIR
        [--proposals FILE | --proposal-method ss-fast|ss-quality|edgeboxes]
        [--score-thresh 0.5] [--device cpu|cuda] [--batch N] [--coco-json] [--voc-comp4] [--resume]
    python tools/detect.py --weights CKPT --input clip.mp4 --output DIR [--every N] [--resume]
    python tools/detect.py --weights CKPT --input cam:0 --output DIR [--every N]

PATH: image files, folders or glob patterns. Writes DIR/<name>.jpg (boxes drawn) and
DIR/detections.json (sppdet format, see README). Unreadable images are reported and
skipped; the exit code is then 1.

A video (any file OpenCV reads: .mp4, .avi, .mov, .mkv...) writes DIR/<name>.mp4 (every frame,
the latest detections drawn) and DIR/<name>.json (one entry per processed frame: frame index,
time in seconds, detections); --every N processes every N-th frame. cam:K reads camera K until
Ctrl-C. --resume continues an interrupted run (even one killed with kill -9) in the same
DIR: images or frames already done are not run again.

Under ``torchrun --nproc_per_node=N tools/detect.py ...`` image files are sharded over the
ranks and rank 0 writes DIR/detections.json (the output folder must be visible to every rank).
"""

import argparse
import sys

from sppdet.cli import run_tool, setup_logging
from sppdet.errors import SppdetError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="checkpoint written by tools/train.py")
    p.add_argument("--input", required=True, nargs="+", help="image files, folders or globs; or one video; or cam:K")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--proposals", default=None, help="proposal file (any supported format), matched by file stem")
    p.add_argument(
        "--proposal-method",
        default="edgeboxes",
        choices=["edgeboxes", "ss-fast", "ss-quality"],
        help="compute proposals with this method when --proposals is not given",
    )
    p.add_argument("--allow-pickle", action="store_true", help="allow a pickled (.pkl) proposal file (runs code!)")
    p.add_argument("--score-thresh", type=float, default=0.5)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch", type=int, default=1, help="images per conv batch (images only)")
    p.add_argument("--every", type=int, default=1, help="video: process every N-th frame")
    p.add_argument("--resume", action="store_true", help="skip the images or frames an earlier run in DIR did")
    p.add_argument("--coco-json", action="store_true", help="also write detections_coco.json")
    p.add_argument("--voc-comp4", action="store_true", help="also write VOC comp4 files in DIR/comp4")
    p.add_argument("--no-draw", action="store_true", help="do not write annotated images or video")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. test.nms_thresh=0.4 test.amp=bf16")
    args = p.parse_args(argv)
    setup_logging(args.verbose)

    from sppdet import Detector
    from sppdet.engine.detect import run_detect
    from sppdet.engine.video import is_video_input, run_video
    from sppdet.utils import comm as du

    video = is_video_input(args.input)
    if video and len(args.input) > 1:
        raise SppdetError("--input: give one video (or cam:K) at a time, without other inputs")
    if video and args.proposals:
        raise SppdetError("--proposals: applies to images; video frames get computed proposals")
    du.init_distributed(args.device)
    det = Detector.from_checkpoint(
        args.weights, args.device, args.proposal_method, score_thresh=args.score_thresh, overrides=args.overrides
    )
    if video:
        s = run_video(det, args.input[0], args.output, args.every, draw=not args.no_draw, resume=args.resume)
        done = f" ({s.done_before} done before)" if s.done_before else ""
        print(
            f"{s.images} frames processed{done}, {s.detections} detections, {s.seconds:.1f} s; results in {args.output}"
        )
        return 0
    s = run_detect(
        det,
        args.input,
        args.output,
        args.proposals,
        args.batch,
        args.allow_pickle,
        args.coco_json,
        args.voc_comp4,
        draw=not args.no_draw,
        resume=args.resume,
    )
    if not du.is_main_process():  # the summary covers every rank: rank 0 reports it
        return 1 if s.failed else 0
    done = f" ({s.done_before} done before)" if s.done_before else ""
    print(f"{s.images} images{done}, {s.detections} detections, {s.seconds:.1f} s; results in {args.output}")
    if s.failed:
        for path, msg in s.failed:
            print(f"error: skipped {msg}", file=sys.stderr)
        print(
            f"error: {len(s.failed)} of {s.images + len(s.failed)} image(s) could not be processed "
            f"(the others' results are in {args.output})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
