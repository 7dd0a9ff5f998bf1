"""Region proposals: compute, convert foreign formats, measure recall.

    python tools/proposals.py compute --config C [--split train|test] [--out FILE] [key=value ...]
    python tools/proposals.py compute --images DIR_OR_GLOB --method edgeboxes|ss-fast|ss-quality --out FILE
    python tools/proposals.py convert INPUT --out FILE [--dataset-config C --split S] [--allow-pickle]
    python tools/proposals.py recall --proposals FILE --config C --split S [--out DIR]

compute --config uses the config's proposals section (cached under proposals.cache_dir or
<output_dir>/proposals; an interrupted run resumes) and copies the store to --out if given.
compute --images computes for a folder or glob of images (image id = file stem).
convert reads any supported format (R-CNN .mat v5/v7.3, per-image .mat/.npy/.txt folders,
Detectron/detectron2/mmdetection .pkl, COCO json; see sppdet/proposals/io.py) and writes
the native .npz store; with --dataset-config boxes are checked and clipped against that split.
Pickles are refused unless --allow-pickle (unpickling can run code: trusted files only).
Under torchrun, compute shards the images over the ranks (rank 0 writes the store; the cache
folder must be visible to every rank); convert and recall run on rank 0 only.
recall prints recall@0.5/0.7 and average recall for 100/300/1000/2000 proposals and writes
recall.json and recall.png to --out (default <output_dir>/proposal_recall_<split>).
"""

import argparse
import glob
import logging
import os
import shutil
from pathlib import Path

from sppdet.cli import run_tool, setup_logging
from sppdet.errors import SppdetError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
log = logging.getLogger("proposals")


def _images_dataset(spec: str):
    """A DetectionDataset (no ground truth) of the images in a folder or matching a glob."""
    from sppdet.data.dataset import DetectionDataset, ImageRecord
    from sppdet.data.image_io import image_size

    p = Path(spec)
    files = sorted(p.iterdir()) if p.is_dir() else sorted(Path(f) for f in glob.glob(spec))
    files = [f for f in files if f.is_file() and f.suffix.lower() in IMAGE_EXTS]
    if not files:
        raise SppdetError(f"--images {spec}: no images ({', '.join(IMAGE_EXTS)}) found")
    records, seen = [], {}
    for f in files:
        if f.stem in seen:
            raise SppdetError(f"--images: two images with id '{f.stem}': {seen[f.stem]} and {f}")
        seen[f.stem] = f
        w, h = image_size(f)
        records.append(ImageRecord(f.stem, str(f), w, h))
    return DetectionDataset(records, [], name=p.name if p.is_dir() else "images")


def _copy(src: Path, dst: Path) -> None:
    from sppdet.fileio import atomic_write

    if src.resolve() == dst.resolve():
        return
    with open(src, "rb") as fin, atomic_write(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def cmd_compute(args) -> int:
    from sppdet.config import ProposalConfig, load_config
    from sppdet.proposals import compute_dataset_proposals, get_proposals
    from sppdet.utils import comm as du

    if args.images:
        if args.config or args.overrides:
            raise SppdetError("compute --images takes --method/--max-per-image/... flags, not a config")
        if not args.out:
            raise SppdetError("compute --images needs --out FILE")
        given = {k: getattr(args, k) for k in ("max_per_image", "max_side", "workers", "edge_model", "min_size")}
        pcfg = ProposalConfig(method=args.method or "edgeboxes", **{k: v for k, v in given.items() if v is not None})
        dataset = _images_dataset(args.images)
        store = compute_dataset_proposals(dataset, pcfg.method, pcfg, args.out, meta={"images": args.images})
    else:
        if not args.config:
            raise SppdetError("compute needs --config C (or --images DIR_OR_GLOB --method M --out FILE)")
        overrides = list(args.overrides)
        if args.method:
            overrides.append(f"proposals.method={args.method}")
        cfg = load_config(args.config, overrides)
        from sppdet.data.build import build_dataset

        dataset = build_dataset(cfg, args.split)
        store = get_proposals(cfg, dataset, args.split)
        if args.out and du.is_main_process():
            _copy(store.path, Path(args.out))
    if not du.is_main_process():
        return 0
    out = args.out or store.path
    print(f"{len(store)} images, {store.num_boxes} boxes ({store.num_boxes / max(len(store), 1):.0f}/image) -> {out}")
    return 0


def cmd_convert(args) -> int:
    from sppdet.proposals import convert_to_store

    dataset = None
    if args.dataset_config:
        from sppdet.config import load_config
        from sppdet.data.build import build_dataset

        dataset = build_dataset(load_config(args.dataset_config), args.split)
    elif args.split != "train":
        raise SppdetError("--split applies with --dataset-config only")
    report = convert_to_store(
        args.input,
        args.out,
        dataset=dataset,
        allow_pickle=args.allow_pickle,
        fmt=args.format,
        max_per_image=args.max_per_image,
        min_size=args.min_size,
        allow_missing=args.allow_missing,
    )
    print(f"{report['images']} images, {report['boxes_out']} boxes -> {args.out}")
    details = ", ".join(f"{k}={v}" for k, v in report.items() if v and k not in ("images", "boxes_out"))
    if details:
        print(f"  ({details})")
    return 0


def cmd_recall(args) -> int:
    from sppdet.config import load_config
    from sppdet.data.build import build_dataset
    from sppdet.proposals import ProposalStore, evaluate_recall, format_recall_table, save_recall_report
    from sppdet.proposals.io import detect_format, load_proposals, sanitize_proposals

    cfg = load_config(args.config, args.overrides)
    dataset = build_dataset(cfg, args.split)
    if detect_format(args.proposals) == "native":
        proposals = ProposalStore(args.proposals)
    else:
        raw = load_proposals(args.proposals, dataset=dataset, allow_pickle=args.allow_pickle)
        proposals, _ = sanitize_proposals(raw, dataset, max_per_image=0, source=args.proposals, allow_missing=True)
    nums = [int(n) for n in args.nums.split(",") if n.strip()]
    result = evaluate_recall(proposals, dataset, nums=nums)
    result["proposals"] = str(args.proposals)
    print(format_recall_table(result))
    out = Path(args.out) if args.out else Path(cfg.output_dir) / f"proposal_recall_{args.split}"
    json_path, png_path = save_recall_report(result, out, title=f"{Path(args.proposals).name} on {dataset.name}")
    print(f"wrote {json_path} and {png_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compute", help="compute proposals for a config split or a folder of images")
    c.add_argument("--config", help="YAML config (dataset + proposals section)")
    c.add_argument("--split", choices=["train", "test"], default="train")
    c.add_argument("--images", help="folder or glob of images (instead of --config)")
    c.add_argument("--method", choices=["ss-fast", "ss-quality", "edgeboxes"])
    c.add_argument("--out", help="write the native store here")
    c.add_argument("--max-per-image", type=int)
    c.add_argument("--max-side", type=int)
    c.add_argument("--min-size", type=float)
    c.add_argument("--workers", type=int)
    c.add_argument("--edge-model", help="structured-edge model .yml.gz for EdgeBoxes")
    c.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    c.set_defaults(func=cmd_compute)

    v = sub.add_parser("convert", help="convert a foreign proposal file to the native store")
    v.add_argument("input", help="proposal file or folder of per-image files")
    v.add_argument("--out", required=True, help="output .npz")
    v.add_argument(
        "--format",
        default="auto",
        help="auto (default), native, rcnn-mat, folder, mat, npy, txt, detectron-pkl, "
        "detectron2-pkl, mmdet-pkl, coco-json",
    )
    v.add_argument("--dataset-config", help="config naming the dataset to check ids and clip against")
    v.add_argument("--split", choices=["train", "test"], default="train")
    v.add_argument("--allow-pickle", action="store_true", help="allow .pkl input (runs code: trusted files only)")
    v.add_argument("--max-per-image", type=int, default=0, help="keep at most N boxes per image (0 = all)")
    v.add_argument("--min-size", type=float, default=0.0, help="drop boxes with a side below this (pixels)")
    v.add_argument("--allow-missing", action="store_true", help="dataset images absent from the file get no boxes")
    v.set_defaults(func=cmd_convert)

    r = sub.add_parser("recall", help="recall of a proposal file against a split's ground truth")
    r.add_argument("--proposals", required=True, help="native store or any supported format")
    r.add_argument("--config", required=True)
    r.add_argument("--split", choices=["train", "test"], default="test")
    r.add_argument("--out", help="folder for recall.json and recall.png")
    r.add_argument("--nums", default="100,300,1000,2000", help="numbers of proposals (comma separated)")
    r.add_argument("--allow-pickle", action="store_true")
    r.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    r.set_defaults(func=cmd_recall)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.func is cmd_compute:
        from sppdet.utils import comm as du

        du.init_distributed("cpu")  # proposals run on CPU: gloo is enough, also on GPU nodes
    elif int(os.environ.get("RANK", "0") or 0) != 0:
        return 0  # convert and recall are cheap: rank 0 does them
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(run_tool(main))
