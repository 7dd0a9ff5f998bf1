"""Evaluate detections (or a trained model) on a VOC or COCO split.

    python tools/eval.py --dataset voc --root DIR [--split test] --detections PATH
        [--metric voc07|voc2010|coco] [--classes a,b,c] [--iou 0.5] [--out DIR]
    python tools/eval.py --dataset coco --ann FILE --images DIR --detections PATH [--out DIR]
    python tools/eval.py --config C --weights W [--dataset ...] [--out DIR] [key=value ...]

PATH: an sppdet detections json, a COCO results json, or a folder of VOC comp4 files.
With --weights the model is run first (its detections are saved to DIR/detections.json
with --out); without --dataset the split comes from the config (data.test_split).
``--weights W --dataset voc --root DIR`` alone evaluates the images training held out of DIR
(its split files beside W), with the checkpoint's classes; any labelImg-style folder works.
--out DIR writes metrics.json, pr_curves/*.png and a self-contained report.html.
Prints a per-class table and the mAP.

Under ``torchrun --nproc_per_node=N tools/eval.py --weights W ...`` the images are sharded
over the ranks and their detections gathered; rank 0 alone computes the metrics and writes.
"""

import argparse
import importlib
import sys
from pathlib import Path

from sppdet.cli import run_tool, setup_logging
from sppdet.errors import SppdetError


def _import(module: str, name: str, what: str):
    """``module.name``, or a one-line error when that module is not part of this install yet."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise SppdetError(f"{what} is not available ({module} is missing)") from e
        raise
    return getattr(mod, name)


def load_dataset(args):
    """The evaluation dataset from --dataset/--root/--ann or from --config; also the config."""
    cfg = None
    if args.config:
        load_config = _import("sppdet.config", "load_config", "the config loader")
        cfg = load_config(args.config, args.overrides)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    if args.dataset == "voc":
        if not args.root:
            raise SppdetError("--dataset voc needs --root (the folder with Annotations/ and ImageSets/)")
        build_eval_voc = _import("sppdet.data.build", "build_eval_voc", "the VOC reader")
        train_cfg, out_dir = None, None
        if args.weights:  # classes, held-out split and missing-image policy come from training
            from sppdet.engine.checkpoint import checkpoint_config, load_checkpoint

            state = load_checkpoint(args.weights)
            train_cfg = checkpoint_config(state, source=args.weights)
            classes = classes or list(state["class_names"])
            out_dir = Path(args.weights).parent
        return build_eval_voc(args.root, args.split, classes, train_cfg, out_dir), cfg
    if args.dataset == "coco":
        if not (args.ann and args.images):
            raise SppdetError("--dataset coco needs --ann (instances json) and --images (image folder)")
        if classes:
            raise SppdetError("--classes applies to --dataset voc only (COCO classes come from the json)")
        load_coco = _import("sppdet.data.coco", "load_coco", "the COCO reader")
        return load_coco(args.ann, args.images), cfg
    if cfg is None:
        raise SppdetError("give --dataset voc|coco (with its paths) or --config C to name the split")
    build_dataset = _import("sppdet.data.build", "build_dataset", "the dataset builder")
    return build_dataset(cfg, "test"), cfg


def get_detections(args, dataset, writer=None):
    """Detections read from --detections, or made by running --weights (streamed into ``writer``)."""
    from sppdet.evaluation.detections import load_detections

    if args.detections:
        if args.weights:
            raise SppdetError("give either --detections or --weights, not both")
        return load_detections(args.detections, dataset, split=args.split if args.dataset == "voc" else None)
    if not args.weights:
        raise SppdetError("give --detections PATH, or --weights W (with --config C) to run a model")
    try:
        from sppdet.engine.infer import run_on_dataset

        return run_on_dataset(
            weights=args.weights,
            dataset=dataset,
            config=args.config,
            overrides=args.overrides,
            device=args.device,
            writer=writer,
        )
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("sppdet"):
            raise
        raise SppdetError(f"the model runner is not available in this install ({e.name} is missing)") from e


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["voc", "coco"], help="dataset format (default: from --config)")
    p.add_argument("--root", help="VOC: dataset root with Annotations/, JPEGImages/, ImageSets/Main/")
    p.add_argument(
        "--split",
        default=None,
        help="VOC: image set name (ImageSets/Main/<split>.txt) or a split file; default: with --weights, the "
        "validation list its training held out of ROOT, else ImageSets/Main/test.txt, else every annotated image",
    )
    p.add_argument(
        "--classes",
        help="VOC: comma-separated class names in label order (default: the checkpoint's with --weights, "
        "else the names found in the annotations, sorted)",
    )
    p.add_argument("--ann", help="COCO: instances json")
    p.add_argument("--images", help="COCO: image folder")
    p.add_argument("--detections", help="sppdet detections json, COCO results json, or folder of comp4 files")
    p.add_argument("--config", help="YAML config (dataset when --dataset is absent; settings for --weights)")
    p.add_argument("--weights", help="checkpoint: run the model on the split first")
    p.add_argument("--device", default="auto", help="with --weights: auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--metric",
        choices=["voc07", "voc2010", "coco"],
        help="default: the config's test.metric, else coco for COCO and voc07 for VOC",
    )
    p.add_argument("--iou", type=float, default=0.5, help="VOC metrics: IoU threshold (a match needs IoU > this)")
    p.add_argument("--out", help="write metrics.json, pr_curves/ and report.html here")
    p.add_argument("--num-images", type=int, default=6, help="example images in report.html")
    p.add_argument("--score-thresh", type=float, default=0.3, help="score threshold for the drawn examples")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. test.nms_thresh=0.4")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    if not 0.0 <= args.iou < 1.0:
        raise SppdetError(f"--iou {args.iou}: must be in [0, 1)")
    from sppdet.utils import comm as du

    du.init_distributed(args.device)

    from sppdet.evaluation import evaluate
    from sppdet.evaluation.detections import num_detections
    from sppdet.evaluation.report import format_table, write_report
    from sppdet.evaluation.writer import DetectionsWriter

    if args.out:  # fail now, not after running the model
        from sppdet.fileio import make_output_dir

        make_output_dir(args.out, "--out")
    dataset, cfg = load_dataset(args)
    writer = None
    if args.out and args.weights and du.is_main_process():  # the model's detections, saved as they come
        writer = DetectionsWriter(f"{args.out}/detections.json", dataset.class_names)
        writer.reset()
    try:
        detections = get_detections(args, dataset, writer)  # with --weights: sharded over ranks, gathered
    finally:
        if writer is not None:
            writer.close()
    if not du.is_main_process():
        return 0
    if writer is not None:
        writer.finish()
    metric = args.metric or (cfg.test.metric if cfg else "coco" if args.dataset == "coco" else "voc07")
    if num_detections(detections) == 0:
        print(f"warning: no detections for {dataset.name or 'the dataset'}; every AP is 0", file=sys.stderr)
    metrics = evaluate(dataset, detections, metric, args.iou)
    print(format_table(metrics))
    if args.out:
        html = write_report(
            args.out, dataset, detections, metrics, num_images=args.num_images, score_thresh=args.score_thresh
        )
        print(f"report: {html}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
