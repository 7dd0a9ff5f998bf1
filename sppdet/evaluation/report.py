"""Evaluation reports: a table for the terminal, ``metrics.json``, PR curves and ``report.html``.

:func:`write_report` writes into ``out_dir`` (each file atomically):

* ``metrics.json`` - the metrics dict (``nan`` written as ``null``);
* ``pr_curves/<class>.png`` - precision against recall per class (matplotlib, Agg);
* ``report.html`` - self-contained (images embedded as base64): the per-class table, the
  curves, and a few images with detections drawn: true positives green, false positives
  red, detections on difficult/crowd gt orange, missed gt blue dashed, unmatched
  difficult/crowd gt grey dashed. Matching is the VOC rule at the metric's IoU (0.5 for COCO).
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..data.dataset import DetectionDataset, ImageRecord
from ..data.image_io import read_image
from ..errors import SppdetError
from ..fileio import PathLike, atomic_write, save_json, save_text
from ..visualize import draw_detections
from .coco import STAT_NAMES
from .detections import Detections, ImageDetections
from .voc import IGNORED, TP, match_image

log = logging.getLogger("sppdet.evaluation")

GREEN, RED, ORANGE, BLUE, GREY = (0, 200, 0), (230, 0, 0), (255, 150, 0), (30, 90, 255), (150, 150, 150)


def _f(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def format_table(metrics: Dict) -> str:
    """Per-class table (class, gt count, detections, AP) and the summary line(s), as text."""
    ap = metrics.get("ap", {})
    num_gt, num_det = metrics.get("num_gt", {}), metrics.get("num_detections", {})
    width = max([len("class")] + [len(n) for n in ap])
    head = "AP@[.5:.95]" if metrics.get("metric") == "coco" else "AP"
    lines = [f"{'class':<{width}}  {'gt':>7}  {'dets':>8}  {head:>11}"]
    for name, v in ap.items():
        lines.append(f"{name:<{width}}  {num_gt.get(name, ''):>7}  {num_det.get(name, ''):>8}  {_f(v):>11}")
    metric = metrics.get("metric", "?")
    if metric == "coco":
        stats = [f"{k}={_f(metrics[k], 3)}" for k in STAT_NAMES if k in metrics]
        lines += ["  ".join(stats[:6]), "  ".join(stats[6:])]
        lines.append(f"mAP (coco, AP@[.5:.95]) = {_f(metrics.get('mAP'))}")
    else:
        lines.append(f"mAP ({metric}, IoU > {metrics.get('iou_thresh', 0.5)}) = {_f(metrics.get('mAP'))}")
    missing = metrics.get("classes_without_gt") or []
    if missing:
        lines.append(f"classes without ground truth (not in mAP): {', '.join(missing)}")
    return "\n".join(lines)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def save_metrics(metrics: Dict, path: PathLike) -> None:
    """Write the metrics dict as strict JSON (nan/inf as null), atomically."""
    save_json(_jsonable(metrics), path)


# ---------------------------------------------------------------------------------------
# Curves


def plot_pr_curve(name: str, recall, precision, ap: Optional[float] = None) -> bytes:
    """PNG bytes of one precision-recall curve."""
    # matplotlib is imported here, not at the top: it costs ~0.7 s to import and only plots need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3.2), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if len(recall):
        ax.plot(recall, precision, lw=1.5)
    else:
        ax.text(
            0.5, 0.5, "no ground truth" if ap is None or math.isnan(ap) else "no detections", ha="center", va="center"
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"{name}  AP {_f(ap, 3)}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_map_curve(evals: List[Dict], title: str = "") -> bytes:
    """PNG bytes of validation mAP against training wall time (seconds, evaluation excluded):
    ``evals`` rows ``{"iter", "train_seconds", "mAP"}`` as training's ``train.eval_period`` logs them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.4), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = [float(e["train_seconds"]) for e in evals]
    ys = [float(e["mAP"]) for e in evals]
    ax.plot(xs, ys, marker="o", ms=3, lw=1.5)
    for e, x, y in zip(evals, xs, ys):
        if e is evals[-1] or e is evals[0]:
            ax.annotate(f"it {e['iter']}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("val mAP")
    ax.set_ylim(0, 1.0)
    ax.set_title(title or "validation mAP during training", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _safe_names(names: List[str]) -> List[str]:
    out, seen = [], set()
    for n in names:
        s = re.sub(r"[^A-Za-z0-9._-]+", "_", n).strip("._") or "class"
        base, i = s, 1
        while s.lower() in seen:
            i += 1
            s = f"{base}_{i}"
        seen.add(s.lower())
        out.append(s)
    return out


# ---------------------------------------------------------------------------------------
# Example images


def _read_rgb(path: str) -> Optional[np.ndarray]:
    try:
        return read_image(path)
    except (SppdetError, OSError) as e:
        log.warning("report: cannot read %s (%s)", path, e)
        return None


def draw_matches(
    image: np.ndarray, rec: ImageRecord, dets: ImageDetections, class_names: List[str], iou_thresh: float = 0.5
) -> Tuple[np.ndarray, Dict[str, int]]:
    """The image with ``dets`` coloured by match status and missed gt dashed; and the counts."""
    items: List[Tuple] = []  # (box, label, score, colour, dashed); score -1 = gt, drawn without a score
    counts = {"tp": 0, "fp": 0, "missed": 0}
    ignore_gt = rec.difficult | rec.iscrowd
    for label in np.unique(np.concatenate([rec.labels, dets.labels])):
        g, k = rec.labels == label, dets.labels == label
        status, matched = match_image(rec.boxes[g], ignore_gt[g], dets.boxes[k], dets.scores[k], iou_thresh)
        for box, ign, m in zip(rec.boxes[g], ignore_gt[g], matched):
            if not m:
                items.append((box, int(label), -1.0, GREY if ign else BLUE, True))
                counts["missed"] += int(not ign)
        for box, score, s in zip(dets.boxes[k], dets.scores[k], status):
            items.append((box, int(label), float(score), GREEN if s == TP else ORANGE if s == IGNORED else RED, False))
            if s != IGNORED:
                counts["tp" if s == TP else "fp"] += 1
    if not items:
        return image.copy(), counts
    boxes, labels, scores, colors, dashed = zip(*items)
    vis = draw_detections(
        image, np.asarray(boxes, np.float32), list(labels), list(scores), class_names, list(colors), list(dashed)
    )
    return vis, counts


def _example_images(
    dataset: DetectionDataset,
    detections: Detections,
    num_images: int,
    score_thresh: float,
    iou_thresh: float,
    max_side: int,
) -> List[Dict]:
    candidates = [r for r in dataset if r.num_objects or len(detections.get(r.image_id, ImageDetections()))]
    if not candidates or num_images <= 0:
        return []
    picks = np.unique(np.linspace(0, len(candidates) - 1, min(num_images, len(candidates))).round().astype(int))
    out = []
    for i in picks:
        rec = candidates[i]
        image = _read_rgb(rec.file_name)
        if image is None:
            continue
        d = detections.get(rec.image_id, ImageDetections())
        d = d.select(d.scores >= score_thresh)
        scale = min(1.0, max_side / max(image.shape[:2]))
        if scale < 1.0:
            image = cv2.resize(
                image, (round(image.shape[1] * scale), round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA
            )
        small = ImageRecord(
            rec.image_id,
            rec.file_name,
            image.shape[1],
            image.shape[0],
            rec.boxes * scale,
            rec.labels,
            rec.difficult,
            rec.truncated,
            rec.iscrowd,
        )
        d = ImageDetections(d.boxes * scale, d.scores, d.labels)
        vis, counts = draw_matches(image, small, d, dataset.class_names, iou_thresh)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(vis, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            out.append({"image_id": rec.image_id, "jpeg": buf.tobytes(), **counts})
    return out


# ---------------------------------------------------------------------------------------
# HTML


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _html(
    title: str, metrics: Dict, curves: List[Tuple[str, bytes]], examples: List[Dict], score_thresh: float, iou: float
) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(n)}</td><td>{metrics.get('num_gt', {}).get(n, '')}</td>"
        f"<td>{metrics.get('num_detections', {}).get(n, '')}</td><td>{_f(v)}</td></tr>"
        for n, v in metrics.get("ap", {}).items()
    )
    curves_html = "".join(f'<img alt="{e(n)}" src="data:image/png;base64,{_b64(png)}">' for n, png in curves)
    ex_html = "".join(
        f'<figure><img alt="{e(x["image_id"])}" src="data:image/jpeg;base64,{_b64(x["jpeg"])}">'
        f"<figcaption>{e(x['image_id'])}: {x['tp']} TP, {x['fp']} FP, {x['missed']} missed</figcaption></figure>"
        for x in examples
    )
    summary = metrics.get("summary")
    pre = f"<pre>{e(summary)}</pre>" if summary else ""
    legend = (
        f"Detections with score &ge; {score_thresh}, matched at IoU &gt; {iou}: "
        '<b style="color:#0a0">true positive</b>, <b style="color:#e00">false positive</b>, '
        '<b style="color:#f90">on a difficult/crowd object (ignored)</b>, '
        '<b style="color:#1e5aff">missed ground truth (dashed)</b>, '
        '<b style="color:#999">difficult/crowd ground truth (dashed)</b>.'
    )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:sans-serif;margin:1.5em;color:#222}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 10px;text-align:right}} td:first-child{{text-align:left}}
figure{{display:inline-block;margin:6px}} img{{max-width:100%}} pre{{background:#f6f6f6;padding:8px}}</style>
</head><body>
<h1>{e(title)}</h1>
<p>metric <b>{e(str(metrics.get("metric", "?")))}</b>, {metrics.get("num_images", "?")} images,
<b>mAP {_f(metrics.get("mAP"))}</b></p>
<table><tr><th>class</th><th>gt</th><th>detections</th><th>AP</th></tr>{rows}</table>
{pre}
<h2>Precision-recall curves</h2>
<div>{curves_html}</div>
<h2>Examples</h2>
<p>{legend}</p>
<div>{ex_html}</div>
</body></html>
"""


def write_report(
    out_dir: PathLike,
    dataset: DetectionDataset,
    detections: Detections,
    metrics: Dict,
    num_images: int = 6,
    score_thresh: float = 0.3,
    max_side: int = 640,
    title: Optional[str] = None,
) -> Path:
    """Write ``metrics.json``, ``pr_curves/*.png`` and ``report.html`` into ``out_dir``; returns the html path."""
    out = Path(out_dir)
    save_metrics(metrics, out / "metrics.json")
    names = list(metrics.get("ap", {}))
    curves = []
    for name, safe in zip(names, _safe_names(names)):
        pr = metrics.get("pr", {}).get(name, {"recall": [], "precision": []})
        png = plot_pr_curve(name, pr["recall"], pr["precision"], metrics["ap"][name])
        with atomic_write(out / "pr_curves" / f"{safe}.png", "wb") as f:
            f.write(png)
        curves.append((name, png))
    iou = float(metrics.get("iou_thresh", 0.5))
    examples = _example_images(dataset, detections, num_images, score_thresh, iou, max_side)
    title = title or f"sppdet evaluation: {dataset.name or 'dataset'}"
    path = out / "report.html"
    save_text(_html(title, metrics, curves, examples, score_thresh, iou), path)
    return path
