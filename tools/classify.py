"""Train, evaluate and run an SPP image classifier (any input size).

    python tools/classify.py train --config configs/bccd_cells_spp.yaml [--output DIR] [--eval] [key=value ...]
    python tools/classify.py eval --weights W (--voc-root DIR --split S | --coco-ann J --coco-images DIR
                                               | --images ROOT) [--out DIR]
    python tools/classify.py predict --weights W FILE_OR_FOLDER ... [--topk 3]

Data come from the ground-truth boxes of a VOC/COCO split (one crop per object, optional
``data.crop_context`` margin) or from an ImageFolder tree ``ROOT/<class>/*.jpg``. ``eval``
without a data option uses the test split of the config stored in the checkpoint.
"""

import argparse
import dataclasses
import json
import sys

from sppdet.cli import run_tool, setup_logging


def _train(args) -> int:
    from sppdet.classification.config import load_classifier_config
    from sppdet.classification.data import load_crop_set
    from sppdet.classification.evaluate import evaluate_classifier, format_metrics
    from sppdet.classification.train import train_classifier
    from sppdet.utils.comm import resolve_device

    cfg = load_classifier_config(args.config, args.overrides)
    summary = train_classifier(cfg, args.output)
    brief = {k: v for k, v in summary.items() if k != "history"}
    brief["final_epoch"] = summary["history"][-1] if summary["history"] else None
    if brief["final_epoch"]:
        brief["final_epoch"] = {k: v for k, v in brief["final_epoch"].items() if k != "sizes"}
    print(json.dumps(brief, indent=2))
    if args.eval:
        from sppdet.classification.checkpoint import load_classifier

        device = resolve_device(cfg.device)
        model, cfg, names = load_classifier(summary["weights"], device)
        crops = load_crop_set(cfg.data, "test", cfg.input.max_image_pixels)
        out = f"{args.output or cfg.output_dir}/eval"
        metrics = evaluate_classifier(model, crops, cfg.input, out, cfg.train.batch_size, device, names)
        print(format_metrics(metrics))
    return 0


def _eval(args) -> int:
    from sppdet.classification.checkpoint import load_classifier
    from sppdet.classification.data import load_crop_set
    from sppdet.classification.evaluate import evaluate_classifier, format_metrics
    from sppdet.errors import SppdetError
    from sppdet.utils.comm import resolve_device

    model, cfg, names = load_classifier(args.weights)
    threads = args.threads or cfg.train.threads
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    device = resolve_device(args.device or cfg.device)
    model.to(device)
    dcfg = cfg.data
    if args.images:
        dcfg = dataclasses.replace(dcfg, format="folder", classes=names)
    elif args.voc_root:
        dcfg = dataclasses.replace(dcfg, format="voc", classes=names)
    elif args.coco_ann:
        if not args.coco_images:
            raise SppdetError("--coco-ann needs --coco-images (the folder its file_name entries are in)")
        dcfg = dataclasses.replace(dcfg, format="coco", classes=names)
    crops = load_crop_set(
        dcfg,
        "test",
        cfg.input.max_image_pixels,
        root=args.voc_root or "",
        split_name=args.split,
        ann=args.coco_ann or "",
        images=args.images or args.coco_images or "",
    )
    metrics = evaluate_classifier(model, crops, cfg.input, args.out, args.batch_size, device, names)
    print(format_metrics(metrics))
    return 0


def _predict(args) -> int:
    from sppdet.classification.checkpoint import load_classifier
    from sppdet.classification.predict import expand_inputs, predict_files

    files = expand_inputs(args.inputs)
    model, cfg, names = load_classifier(args.weights)
    for path, top in predict_files(model, names, cfg.input, files, args.topk):
        print(path + "  " + "  ".join(f"{name} {p:.3f}" for name, p in top))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train from a YAML config")
    t.add_argument("--config", required=True, help="YAML config (see configs/bccd_cells_*.yaml)")
    t.add_argument("--output", default=None, help="output folder (default: the config's output_dir)")
    t.add_argument("--eval", action="store_true", help="evaluate on the config's test split afterwards")
    t.add_argument("overrides", nargs="*", help="config overrides, e.g. train.epochs=2")

    e = sub.add_parser("eval", help="top-1, per-class accuracy, metrics.json and confusion.png")
    e.add_argument("--weights", required=True, help="classifier checkpoint (model_final.pth)")
    e.add_argument("--voc-root", default=None, help="VOC root: classify the ground-truth crops of --split")
    e.add_argument("--split", default="", help="VOC split (default: the config's test split)")
    e.add_argument("--coco-ann", default=None, help="COCO instances json: classify its ground-truth crops")
    e.add_argument("--coco-images", default=None, help="image folder of --coco-ann")
    e.add_argument("--images", default=None, help="ImageFolder tree ROOT/<class>/*.jpg")
    e.add_argument("--out", default=None, help="folder for metrics.json and confusion.png (default: none)")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--device", default="", help="cpu, cuda, auto (default: the checkpoint's config)")
    e.add_argument("--threads", type=int, default=0, help="torch threads (default: the config's train.threads)")

    r = sub.add_parser("predict", help="print the top-k classes of image files or folders")
    r.add_argument("--weights", required=True, help="classifier checkpoint")
    r.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    r.add_argument("--topk", type=int, default=3)

    args = p.parse_args(argv)
    setup_logging(args.verbose)
    return {"train": _train, "eval": _eval, "predict": _predict}[args.command](args)


if __name__ == "__main__":
    sys.exit(run_tool(main))
