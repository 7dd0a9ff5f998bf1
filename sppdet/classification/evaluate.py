"""Evaluate a classifier on crops: top-1, per-class accuracy (= recall of each class), mean
class accuracy and the confusion matrix; ``metrics.json`` and ``confusion.png`` written
atomically.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ..fileio import atomic_write, make_output_dir, save_json  # noqa: E402
from .config import ClassifierInputConfig  # noqa: E402
from .data import CropSet  # noqa: E402
from .model import SPPClassifier  # noqa: E402
from .sizes import eval_batches, make_batch  # noqa: E402

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_crops(
    model: SPPClassifier, crops: CropSet, icfg: ClassifierInputConfig, batch_size: int = 32, device: Any = "cpu"
) -> np.ndarray:
    """Class probabilities ``(N, K)`` of every crop at the test size/scale, in crop order."""
    model.eval()
    probs = np.zeros((len(crops), model.num_classes), dtype=np.float32)
    for batch in tqdm(eval_batches(crops.sizes(), icfg, batch_size), desc="classifying", unit="batch", leave=False):
        logits = model(make_batch(crops.crops, batch).to(device))
        probs[list(batch.indices)] = torch.softmax(logits, 1).cpu().numpy()
    return probs


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` counts: row = true class, column = predicted class."""
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(conf, (labels, preds), 1)
    return conf


def classification_metrics(labels: np.ndarray, preds: np.ndarray, class_names: Sequence[str]) -> Dict[str, Any]:
    """``top1``, ``mean_class_accuracy`` (over classes with examples), ``per_class``
    ({name: {accuracy, count}}; accuracy None without examples) and ``confusion`` (rows true)."""
    conf = confusion_matrix(labels, preds, len(class_names))
    per_class: Dict[str, Dict[str, Any]] = {}
    for k, name in enumerate(class_names):
        n = int(conf[k].sum())
        per_class[name] = {"accuracy": float(conf[k, k] / n) if n else None, "count": n}
    accs = [v["accuracy"] for v in per_class.values() if v["accuracy"] is not None]
    return {
        "top1": float((labels == preds).mean()) if len(labels) else 0.0,
        "mean_class_accuracy": float(np.mean(accs)) if accs else 0.0,
        "per_class": per_class,
        "confusion": conf.tolist(),
        "class_names": list(class_names),
        "num_examples": int(len(labels)),
    }


def plot_confusion(conf: np.ndarray, class_names: Sequence[str], path: Union[str, Path], title: str = "") -> None:
    """Save the confusion matrix (rows true, columns predicted; counts and row fractions) as a PNG."""
    conf = np.asarray(conf)
    rows = conf.sum(1, keepdims=True).clip(min=1)
    frac = conf / rows
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.1 * k + 2))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            color = "white" if frac[i, j] > 0.5 else "black"
            ax.text(j, i, f"{conf[i, j]}\n{frac[i, j]:.2f}", ha="center", va="center", color=color, fontsize=9)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)  # type: ignore[arg-type]
    plt.close(fig)


def evaluate_classifier(
    model: SPPClassifier,
    crops: CropSet,
    icfg: ClassifierInputConfig,
    out_dir: Union[str, Path, None] = None,
    batch_size: int = 32,
    device: Any = "cpu",
    class_names: Sequence[str] = (),
) -> Dict[str, Any]:
    """Classify every crop, compute the metrics and (with ``out_dir``) write ``metrics.json``
    and ``confusion.png``. ``class_names``: the model's classes (default: the crops')."""
    names: List[str] = list(class_names) or crops.class_names
    start, cpu_start = time.perf_counter(), time.process_time()
    probs = predict_crops(model, crops, icfg, batch_size, device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    metrics = classification_metrics(crops.labels, probs.argmax(1), names)
    metrics.update(
        test_seconds=seconds,
        test_cpu_seconds=cpu,
        ms_per_crop=1000.0 * seconds / max(len(crops), 1),
        threads=torch.get_num_threads(),
        input=f"{icfg.mode} {icfg.test_size if icfg.mode == 'warp' else icfg.test_scale}",
    )
    if out_dir is not None:
        out = make_output_dir(out_dir)
        save_json(metrics, out / "metrics.json")
        plot_confusion(np.array(metrics["confusion"]), names, out / "confusion.png", crops.name)
        log.info("wrote %s and %s", out / "metrics.json", out / "confusion.png")
    return metrics


def format_metrics(metrics: Dict[str, Any]) -> str:
    """A few lines: top-1, mean class accuracy, then one line per class."""
    lines = [
        f"top-1 {metrics['top1']:.4f}  mean class accuracy {metrics['mean_class_accuracy']:.4f}  "
        f"({metrics['num_examples']} crops, {metrics['ms_per_crop']:.1f} ms/crop)"
    ]
    for name, v in metrics["per_class"].items():
        acc = "   n/a" if v["accuracy"] is None else f"{v['accuracy']:.4f}"
        lines.append(f"  {name:>20s}  {acc}  ({v['count']})")
    return "\n".join(lines)
