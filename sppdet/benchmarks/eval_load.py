"""``eval_load``: peak memory and time of ``tools/eval.py`` on a large split of detections.

    python -m sppdet.benchmarks.eval_load --bccd ../shared/data/bccd/VOC --work /tmp/eval_load \
        [--images 5000] [--dets-per-image 100] [--format sppdet|comp4|coco] [--metric voc07|coco]
        [--report] [--skip-prep]

Builds a VOC split of ``--images`` annotations from the real BCCD files (each real annotation
used ``images / 292`` times under new ids; the images themselves are shared, not copied),
writes detections for it (each ground-truth box jittered, plus random boxes, up to
``--dets-per-image`` per image, random scores), then runs ``tools/eval.py`` on them in a child
process under ``/usr/bin/time -v`` and prints one JSON line: wall and CPU seconds, peak RSS
(MB) and the mAP. ``--report`` adds ``--out`` (metrics.json, PR curves, report.html).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..data.voc import load_voc
from ..evaluation.detections import ImageDetections, save_coco_results, save_comp4, save_detections
from ..fileio import make_output_dir

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["RBC", "WBC", "Platelets"]


def make_split(bccd: Path, work: Path, images: int) -> Path:
    """A VOC root under ``work`` with ``images`` annotations (real BCCD files, renamed)."""
    root = work / "voc"
    if root.exists():
        shutil.rmtree(root)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    real = sorted(p.stem for p in (bccd / "Annotations").glob("*.xml"))
    for stem in real:
        os.symlink((bccd / "JPEGImages" / f"{stem}.jpg").resolve(), root / "JPEGImages" / f"{stem}.jpg")
    ids = []
    for k in range(images):
        stem = real[k % len(real)]
        image_id = f"{stem}_{k // len(real):03d}"
        text = (bccd / "Annotations" / f"{stem}.xml").read_text()  # <filename> still names the shared image
        (root / "Annotations" / f"{image_id}.xml").write_text(text)
        ids.append(image_id)
    (root / "ImageSets/Main/test.txt").write_text("\n".join(ids) + "\n")
    return root


def make_detections(root: Path, work: Path, per_image: int, fmt: str, seed: int = 0) -> Path:
    """Detections for every image of the split, written in ``fmt``; returns the path."""
    ds = load_voc(root, "test", CLASSES)
    rng = np.random.default_rng(seed)
    dets: Dict[str, ImageDetections] = {}
    for rec in ds:
        gt = np.asarray(rec.boxes, np.float32).reshape(-1, 4)[:per_image]
        n_rand = max(per_image - len(gt), 0)
        xy = rng.uniform(0, [rec.width - 20, rec.height - 20], size=(n_rand, 2))
        wh = rng.uniform(8, 200, size=(n_rand, 2))
        rand = np.hstack([xy, np.minimum(xy + wh, [rec.width, rec.height])]).astype(np.float32)
        jitter = gt + rng.normal(0, 3, gt.shape).astype(np.float32)
        boxes = np.clip(np.vstack([jitter, rand]), 0, [rec.width, rec.height, rec.width, rec.height])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.concatenate([rec.labels[: len(gt)], rng.integers(1, len(CLASSES) + 1, n_rand)])
        scores = np.concatenate([rng.uniform(0.5, 1, len(gt)), rng.uniform(0, 0.6, n_rand)])
        dets[rec.image_id] = ImageDetections(boxes, scores, labels)
    if fmt == "comp4":
        out = work / "comp4"
        save_comp4(dets, out, ds, split="test")
        return out
    if fmt == "coco":
        out = work / "results.json"
        save_coco_results(dets, out, ds)
        return out
    out = work / "detections.json"
    save_detections(dets, out, ds)
    return out


def run_eval(root: Path, detections: Path, out: Optional[Path], metric: str = "voc07") -> Dict:
    """``tools/eval.py`` in a child under ``/usr/bin/time -v``: wall, CPU, peak RSS, mAP."""
    cmd = [sys.executable, str(ROOT / "tools" / "eval.py"), "--dataset", "voc", "--root", str(root)]
    cmd += ["--split", "test", "--classes", ",".join(CLASSES), "--detections", str(detections), "--metric", metric]
    if out is not None:
        cmd += ["--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.time()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"tools/eval.py failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")

    def field(name: str) -> float:
        m = re.search(rf"{name}:\s*([\d.]+)", proc.stderr)
        return float(m.group(1)) if m else float("nan")

    m = re.search(r"mAP.*=\s*([\d.]+)", proc.stdout)
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(field(r"User time \(seconds\)") + field(r"System time \(seconds\)"), 1),
        "peak_rss_mb": round(field(r"Maximum resident set size \(kbytes\)") / 1024, 1),
        "map": float(m.group(1)) if m else None,
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bccd", default=str(ROOT.parent / "shared" / "data" / "bccd" / "VOC"))
    p.add_argument("--work", required=True, help="scratch folder (replaced files: voc/, detections)")
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--dets-per-image", type=int, default=100)
    p.add_argument("--format", choices=["sppdet", "comp4", "coco"], default="sppdet")
    p.add_argument("--metric", choices=["voc07", "voc2010", "coco"], default="voc07")
    p.add_argument("--skip-prep", action="store_true", help="reuse the split and detections already in --work")
    p.add_argument("--report", action="store_true", help="also write metrics.json, PR curves and report.html")
    args = p.parse_args(argv)
    work = make_output_dir(args.work, "--work")
    t0 = time.time()
    if args.skip_prep:
        root = work / "voc"
        dets = work / {"sppdet": "detections.json", "comp4": "comp4", "coco": "results.json"}[args.format]
    else:
        root = make_split(Path(args.bccd), work, args.images)
        dets = make_detections(root, work, args.dets_per_image, args.format)
    made = time.time() - t0
    size = sum(f.stat().st_size for f in ([dets] if dets.is_file() else dets.iterdir()))
    result = run_eval(root, dets, work / "report" if args.report else None, args.metric)
    result.update(
        images=args.images,
        detections=args.images * args.dets_per_image,
        format=args.format,
        metric=args.metric,
        detections_mb=round(size / 2**20, 1),
        data_prep_s=round(made, 1),
        report=args.report,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
