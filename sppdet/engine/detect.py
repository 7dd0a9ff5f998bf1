"""Detect objects in users' image files: inputs -> proposals -> detector -> drawings + files.

Used by ``tools/detect.py``. Unreadable images are reported and skipped (the caller exits
non-zero at the end); everything written so far stays valid because each output file is
written atomically, and ``detections.json`` is rewritten atomically as images complete.
"""
from __future__ import annotations

import glob
import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data.dataset import DetectionDataset, ImageRecord
from ..errors import DataError, SppdetError
from ..fileio import atomic_write

log = logging.getLogger("sppdet.detect")

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def expand_inputs(paths: Sequence[str]) -> List[Path]:
    """Image files from files, folders (their images, sorted) and glob patterns, deduplicated."""
    out: List[Path] = []
    seen = set()
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
            if not found:
                log.warning("%s: folder holds no images (%s)", path, ", ".join(sorted(IMAGE_EXTENSIONS)))
        elif path.exists():
            found = [path]
        elif any(c in p for c in "*?["):
            found = sorted(Path(f) for f in glob.glob(p, recursive=True)
                           if Path(f).suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise SppdetError(f"--input {p}: pattern matches no image files")
        else:
            raise SppdetError(f"--input {p}: no such file or folder")
        for f in found:
            key = str(f.resolve())
            if key not in seen:
                seen.add(key)
                out.append(f)
    if not out:
        raise SppdetError("--input: no images found")
    return out


def output_names(files: Sequence[Path]) -> List[str]:
    """Unique, safe base names (no folders, no '..') for output files, one per input."""
    used: Dict[str, int] = {}
    names = []
    for f in files:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", f.stem).strip("._") or "image"
        n = used.get(base, 0)
        used[base] = n + 1
        names.append(base if n == 0 else f"{base}_{n}")
    return names


@dataclass
class DetectSummary:
    images: int = 0
    failed: List[Tuple[str, str]] = field(default_factory=list)
    detections: int = 0
    seconds: float = 0.0


class ProposalSource:
    """Proposals for an input image: from a file (matched by image id = file stem) or computed."""

    def __init__(self, cfg, proposals_file: Optional[str], method: str, cache_dir: Path,
                 allow_pickle: bool = False) -> None:
        self.cfg = cfg
        self.method = method
        self.cache_dir = cache_dir
        self.table = None
        if proposals_file:
            from ..proposals.io import load_proposals

            self.table = load_proposals(proposals_file, dataset=None, allow_pickle=allow_pickle)

    def __call__(self, path: Path, name: str, image: np.ndarray) -> np.ndarray:
        if self.table is not None:
            for key in (path.stem, name, path.name):
                if key in self.table:
                    boxes = self.table[key][0]
                    return np.asarray(boxes, dtype=np.float32)[: self.cfg.proposals.max_per_image]
            raise DataError(f"{path}: no proposals for image id '{path.stem}' in the proposal file")
        return self._computed(image)

    def _computed(self, image: np.ndarray) -> np.ndarray:
        from ..proposals.build import compute_proposals

        pc = self.cfg.proposals
        key = hashlib.sha1(image.tobytes() + f"{image.shape}{self.method}{pc.max_per_image}{pc.max_side}"
                           f"{pc.min_size}{pc.edge_model}".encode()).hexdigest()
        cache = self.cache_dir / f"{key}.npy"
        if cache.is_file():
            try:
                return np.load(cache, allow_pickle=False)
            except (ValueError, OSError):
                pass  # corrupt cache entry: recompute
        boxes, _ = compute_proposals(image, self.method, pc)
        boxes = np.asarray(boxes, dtype=np.float32)
        with atomic_write(cache) as f:
            np.save(f, boxes)
        return boxes


def run_detect(weights: str, inputs: Sequence[str], output_dir: str, proposals_file: Optional[str] = None,
               proposal_method: str = "edgeboxes", score_thresh: float = 0.5, device: str = "auto",
               batch: int = 1, allow_pickle: bool = False, coco_json: bool = False, voc_comp4: bool = False,
               draw: bool = True, overrides: Sequence[str] = ()) -> DetectSummary:
    """Run a checkpoint on image files; see ``tools/detect.py`` for the options."""
    import cv2
    from tqdm import tqdm

    from ..data.image_io import read_image
    from ..evaluation.detections import save_coco_results, save_comp4, save_detections
    from ..visualize import draw_detections
    from .infer import load_predictor

    files = expand_inputs(inputs)
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SppdetError(f"--output {out}: cannot create folder ({e.strerror})") from e
    predictor = load_predictor(weights, [f"test.score_thresh={score_thresh}", *overrides], device)
    source = ProposalSource(predictor.cfg, proposals_file, proposal_method, out / ".proposal_cache", allow_pickle)
    names = output_names(files)
    summary = DetectSummary()
    records: List[ImageRecord] = []
    results = {}
    t_start = time.time()
    bar = tqdm(total=len(files), desc="detect", unit="img", disable=len(files) < 2, mininterval=1.0)
    for start in range(0, len(files), max(1, batch)):
        chunk = list(range(start, min(len(files), start + max(1, batch))))
        loaded = []
        for i in chunk:
            t0 = time.time()
            try:
                image = read_image(files[i])
                props = source(files[i], names[i], image)
                loaded.append((i, image, props, time.time() - t0))
            except SppdetError as e:
                summary.failed.append((str(files[i]), str(e)))
                bar.write(f"skipped {files[i]}: {e}")
            bar.update(0)
        if not loaded:
            bar.update(len(chunk))
            continue
        t0 = time.time()
        dets = predictor.predict_batch([l[1] for l in loaded], [l[2] for l in loaded])
        per_image = (time.time() - t0) / len(loaded)
        for (i, image, props, t_prop), d in zip(loaded, dets):
            name = names[i]
            h, w = image.shape[:2]
            records.append(ImageRecord(name, str(files[i]), w, h))
            results[name] = d
            summary.images += 1
            summary.detections += len(d.boxes)
            if draw:
                vis = draw_detections(image, d.boxes, d.labels.tolist(), d.scores.tolist(), predictor.class_names)
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(vis, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
                with atomic_write(out / f"{name}.jpg") as f:
                    f.write(buf.tobytes())
            bar.write(f"{files[i]}: {len(d.boxes)} detections, {len(props)} proposals, "
                      f"{t_prop + per_image:.2f} s (proposals {t_prop:.2f} s)")
        bar.update(len(chunk))
        dataset = DetectionDataset(records, predictor.class_names, name="detect")
        save_detections(results, out / "detections.json", dataset)
    bar.close()
    summary.seconds = time.time() - t_start
    dataset = DetectionDataset(records, predictor.class_names, name="detect")
    save_detections(results, out / "detections.json", dataset)
    if coco_json:
        save_coco_results(results, out / "detections_coco.json", dataset)
    if voc_comp4:
        save_comp4(results, out / "comp4", dataset, split="detect")
    return summary
