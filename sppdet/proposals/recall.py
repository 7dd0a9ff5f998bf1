"""Proposal recall against ground truth, as a function of the number of proposals.

For every ground-truth box (non-difficult, non-crowd) we take its best IoU over the first ``N``
proposals of its image (store order = ranking order). Then, per ``N``:

* ``recall@0.5`` / ``recall@0.7``: fraction of gt boxes whose best IoU is >= 0.5 / 0.7;
* ``average_recall``: the mean of recall over IoU 0.5:0.95 step 0.05 (10 thresholds), the
  discrete form of Hosang et al.'s AR.

:func:`evaluate_recall` returns a plain dict (JSON-ready); :func:`format_recall_table` prints
it; :func:`save_recall_report` writes ``recall.json`` and ``recall.png`` atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np

from ..fileio import atomic_write, save_json
from ..structures import box_iou
from .source import ProposalSource

DEFAULT_NUMS = (100, 300, 1000, 2000)
AR_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2).tolist())


def recall_gt_boxes(record) -> np.ndarray:
    """Ground truth counted for recall: neither difficult nor crowd, ``(G, 4)`` ours."""
    keep = ~(record.difficult | record.iscrowd)
    return record.boxes[keep]


def best_ious(proposals: np.ndarray, gt: np.ndarray, nums: Sequence[int]) -> np.ndarray:
    """``(len(nums), G)``: each gt box's best IoU over the first ``n`` proposals, per ``n``."""
    proposals = np.asarray(proposals, dtype=np.float32).reshape(-1, 4)
    out = np.zeros((len(nums), len(gt)), dtype=np.float64)
    if len(gt) == 0 or len(proposals) == 0:
        return out
    n_max = min(max(nums), len(proposals))
    iou = box_iou(np.asarray(gt, dtype=np.float32), proposals[:n_max])  # (G, n_max)
    running = np.maximum.accumulate(iou, axis=1)
    for k, n in enumerate(nums):
        out[k] = running[:, min(n, n_max) - 1]
    return out


def evaluate_recall(
    proposals: Union[ProposalSource, Mapping[str, Any]],
    dataset,
    nums: Sequence[int] = DEFAULT_NUMS,
    thresholds: Sequence[float] = AR_THRESHOLDS,
) -> Dict:
    """Recall of ``proposals`` (a ProposalStore or ``{id: (boxes, scores)}``) on ``dataset``.

    Returns ``{"num_images", "num_gt", "images_missing", "mean_proposals", "nums",
    "thresholds", "by_num": {"N": {"recall@0.5", "recall@0.7", "average_recall",
    "recall_curve"}}}``; images absent from ``proposals`` count as having none.
    """
    nums = sorted(int(n) for n in nums)
    get: Callable = proposals.get
    per_n: List[List[np.ndarray]] = [[] for _ in nums]
    counts, missing = [], 0
    for rec in dataset:
        gt = recall_gt_boxes(rec)
        item = get(rec.image_id) if rec.image_id in proposals else None
        if item is None:
            missing += 1
            boxes = np.zeros((0, 4), np.float32)
        else:
            boxes = item[0] if isinstance(item, tuple) else item
        counts.append(len(boxes))
        ious = best_ious(boxes, gt, nums)
        for k in range(len(nums)):
            per_n[k].append(ious[k])
    num_gt = int(sum(len(x) for x in per_n[0])) if nums else 0
    result: Dict[str, Any] = {
        "num_images": len(dataset),
        "num_gt": num_gt,
        "images_missing": missing,
        "mean_proposals": float(np.mean(counts)) if counts else 0.0,
        "nums": nums,
        "thresholds": list(thresholds),
        "by_num": {},
    }
    for k, n in enumerate(nums):
        ious = np.concatenate(per_n[k]) if per_n[k] else np.zeros(0)
        curve = [float((ious >= t).mean()) if len(ious) else 0.0 for t in thresholds]
        result["by_num"][str(n)] = {
            "recall@0.5": float((ious >= 0.5).mean()) if len(ious) else 0.0,
            "recall@0.7": float((ious >= 0.7).mean()) if len(ious) else 0.0,
            "average_recall": float(np.mean(curve)) if curve else 0.0,
            "recall_curve": curve,
        }
    return result


def format_recall_table(result: Dict) -> str:
    """A fixed-width table: one row per number of proposals."""
    lines = [
        f"images {result['num_images']}  gt boxes {result['num_gt']}  "
        f"mean proposals/image {result['mean_proposals']:.0f}  missing images {result['images_missing']}",
        f"{'#proposals':>10} {'R@0.5':>7} {'R@0.7':>7} {'AR':>7}",
    ]
    for n in result["nums"]:
        r = result["by_num"][str(n)]
        lines.append(f"{n:>10d} {r['recall@0.5']:>7.3f} {r['recall@0.7']:>7.3f} {r['average_recall']:>7.3f}")
    return "\n".join(lines)


def save_recall_report(result: Dict, out_dir: Union[str, Path], title: str = "") -> Tuple[Path, Path]:
    """Write ``recall.json`` and ``recall.png`` (recall vs IoU per N, and R/AR vs N) atomically."""
    # matplotlib here, not at the top: it costs ~0.7 s to import and only the plot needs it; no pyplot: no global state
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    json_path, png_path = out_dir / "recall.json", out_dir / "recall.png"
    save_json(result, json_path)
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for n in result["nums"]:
        ax1.plot(result["thresholds"], result["by_num"][str(n)]["recall_curve"], marker="o", ms=3, label=f"N={n}")
    ax1.set(xlabel="IoU threshold", ylabel="recall", ylim=(0, 1.02), title="recall vs IoU")
    ax1.legend()
    ns = result["nums"]
    for key in ("recall@0.5", "recall@0.7", "average_recall"):
        ax2.plot(ns, [result["by_num"][str(n)][key] for n in ns], marker="o", label=key)
    ax2.set(xscale="log", xlabel="number of proposals", ylim=(0, 1.02), title="recall vs #proposals")
    ax2.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    with atomic_write(png_path, "wb") as f:
        f.write(buf.getvalue())
    return json_path, png_path
