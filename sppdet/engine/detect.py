"""Detect objects in users' image files: inputs -> proposals -> detector -> drawings + files.

Used by ``tools/detect.py``. Unreadable images are reported and skipped (the caller exits
non-zero at the end); everything written so far stays valid because each output file is
written atomically.

Memory and I/O stay bounded for any number of images: each image's detections are appended
to a scratch JSON-lines file (``<output>/.detections.partial.jsonl``) and nothing per image is
kept in memory beyond the input list. ``detections.json`` (and ``detections_coco.json``,
``comp4/``) are assembled from that file by streaming, atomically: at the end, and at most
every :data:`REFRESH_SECONDS` while running, so a long run's results can be watched (and
survive a crash) without the cost of rewriting the whole file after every image.

Output names come from the input file names (:func:`output_names`): folders, ``..`` and any
character outside ``[A-Za-z0-9._-]`` are removed, so no output can land outside the output
folder, and two inputs never share an output name.

Under ``torchrun`` the input files are sharded over the ranks (rank ``r`` of ``w`` takes files
``r, r + w, ...``); each rank draws its own images and keeps its own scratch file
(``.detections.partial.r<rank>.jsonl``), and at the end rank 0 merges them, in input order and
streaming, into ``detections.json`` (and the other result files). ``detections.json`` is then
written only at the end. The output folder must be visible to every rank.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import heapq
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..data.voc import image_folder
from ..errors import DataError, SppdetError
from ..fileio import atomic_write, make_output_dir
from . import distributed as du

log = logging.getLogger("sppdet.detect")

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
#: Longest output base name (file systems allow 255 bytes; leave room for suffixes).
MAX_NAME = 100
#: ``detections.json`` is re-assembled at most this often while images are processed.
REFRESH_SECONDS = 60.0


def expand_inputs(paths: Sequence[str]) -> List[Path]:
    """Image files from files, folders (their images, sorted) and glob patterns, deduplicated."""
    out: List[Path] = []
    seen = set()
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
            sub = None if found else image_folder(path)  # a dataset root: its JPEGImages/ or images/
            if sub is not None:
                log.info("%s: no images here, reading those in %s", path, sub)
                found = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
            if not found:
                log.warning("%s: folder holds no images (%s)", path, ", ".join(sorted(IMAGE_EXTENSIONS)))
        elif path.exists():
            found = [path]
        elif any(c in p for c in "*?["):
            found = sorted(Path(f) for f in glob.glob(p, recursive=True) if Path(f).suffix.lower() in IMAGE_EXTENSIONS)
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
    """Unique, safe base names (no folders, no '..') for output files, one per input.

    The file stem with every character outside ``[A-Za-z0-9._-]`` replaced by ``_`` and leading
    or trailing dots and underscores removed; long stems are cut to :data:`MAX_NAME` characters
    plus a short hash. Names are unique even on case-insensitive file systems: a repeated name
    gets ``_1``, ``_2``... (skipping names already taken by other inputs).
    """
    used = set()
    counters: Dict[str, int] = {}
    names = []
    for f in files:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", f.stem).strip("._") or "image"
        if len(base) > MAX_NAME:
            base = base[:MAX_NAME].rstrip("._") + "_" + hashlib.sha1(f.stem.encode("utf-8", "replace")).hexdigest()[:8]
        name, n = base, counters.get(base.lower(), 0)
        if n:
            name = f"{base}_{n}"
        while name.lower() in used:
            n += 1
            name = f"{base}_{n}"
        counters[base.lower()] = n + 1
        used.add(name.lower())
        names.append(name)
    return names


@dataclass
class DetectSummary:
    images: int = 0
    failed: List[Tuple[str, str]] = field(default_factory=list)
    detections: int = 0
    seconds: float = 0.0


class ProposalSource:
    """Proposals for an input image: from a file (matched by image id = file stem) or computed."""

    def __init__(
        self, cfg, proposals_file: Optional[str], method: str, cache_dir: Path, allow_pickle: bool = False
    ) -> None:
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
        key = hashlib.sha1(
            image.tobytes()
            + f"{image.shape}{self.method}{pc.max_per_image}{pc.max_side}{pc.min_size}{pc.edge_model}".encode()
        ).hexdigest()
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


class ResultLog:
    """Per-image detections appended to a scratch JSON-lines file; final files streamed from it.

    One line per image: ``{"image_id", "file_name", "width", "height", "boxes", "scores",
    "labels"}`` with full-precision values. The writers produce the same files as
    :func:`~sppdet.evaluation.detections.save_detections`, ``save_coco_results`` and
    ``save_comp4`` would for the same detections, reading one line at a time.
    """

    def __init__(self, out: Path, class_names: Sequence[str], part: str = "") -> None:
        self.path = out / f".detections.partial{part}.jsonl"
        self.class_names = list(class_names)
        self._file = open(self.path, "w", encoding="utf-8")  # scratch file, never an output

    def add(self, image_id: str, file_name: str, width: int, height: int, dets) -> None:
        line = json.dumps(
            {
                "image_id": image_id,
                "file_name": file_name,
                "width": int(width),
                "height": int(height),
                "boxes": np.asarray(dets.boxes, dtype=np.float32).reshape(-1, 4).tolist(),
                "scores": np.asarray(dets.scores, dtype=np.float32).tolist(),
                "labels": np.asarray(dets.labels, dtype=np.int64).tolist(),
            }
        )
        try:
            self._file.write(line + "\n")
        except OSError as e:  # disk full...
            raise SppdetError(f"{self.path}: cannot write ({e.strerror})") from e

    def entries(self) -> Iterator[Dict]:
        self._file.flush()
        with open(self.path, "r", encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)

    def close(self, remove: bool = True) -> None:
        self._file.close()
        if remove:
            self.path.unlink(missing_ok=True)

    def _name(self, label: int) -> str:
        return self.class_names[label - 1] if 1 <= label <= len(self.class_names) else str(label)

    def write_sppdet(self, path: Path) -> None:
        """The sppdet detections json (one image per line)."""
        from ..evaluation.detections import BOX_CONVENTION, FORMAT_NAME, FORMAT_VERSION, _score

        head = json.dumps(
            {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "box_convention": BOX_CONVENTION,
                "classes": self.class_names,
            }
        )
        with atomic_write(path, "w") as f:
            f.write(head[:-1] + ', "images": [')
            for k, e in enumerate(self.entries()):
                dets = [
                    {
                        "class": self._name(lab),
                        "label": int(lab),
                        "score": _score(sc),
                        "box": [round(float(v), 3) for v in box],
                    }
                    for box, sc, lab in zip(e["boxes"], e["scores"], e["labels"])
                ]
                entry = {
                    "image_id": e["image_id"],
                    "file_name": e["file_name"],
                    "width": e["width"],
                    "height": e["height"],
                    "detections": dets,
                }
                f.write(("\n " if k == 0 else ",\n ") + json.dumps(entry))
            f.write("\n]}\n")

    def write_coco(self, path: Path) -> None:
        """A COCO results json; image ids as :func:`~sppdet.evaluation.detections.coco_image_ids`."""
        from ..evaluation.detections import _score

        ids = [e["image_id"] for e in self.entries()]
        numeric = bool(ids) and all(i.isdigit() for i in ids) and len({int(i) for i in ids}) == len(ids)
        del ids
        with atomic_write(path, "w") as f:
            f.write("[")
            first = True
            for k, e in enumerate(self.entries()):
                img = int(e["image_id"]) if numeric else k + 1
                for box, sc, lab in zip(e["boxes"], e["scores"], e["labels"]):
                    x1, y1, x2, y2 = (float(v) for v in box)
                    row = {
                        "image_id": img,
                        "category_id": int(lab),
                        "bbox": [round(v, 3) for v in (x1, y1, x2 - x1, y2 - y1)],
                        "score": _score(sc),
                    }
                    f.write(("" if first else ", ") + json.dumps(row))
                    first = False
            f.write("]\n")

    def write_comp4(self, folder: Path, split: str = "detect", prefix: str = "comp4") -> None:
        """VOC comp4 files, one per class (empty ones included)."""
        from ..evaluation.detections import _fmt

        with contextlib.ExitStack() as stack:
            files = [
                stack.enter_context(atomic_write(folder / f"{prefix}_det_{split}_{n}.txt", "w"))
                for n in self.class_names
            ]
            for e in self.entries():
                for box, sc, lab in zip(e["boxes"], e["scores"], e["labels"]):
                    if 1 <= lab <= len(files):
                        x1, y1, x2, y2 = (float(v) for v in box)
                        files[lab - 1].write(
                            f"{e['image_id']} {sc:.7g} " + " ".join(_fmt(v) for v in (x1 + 1, y1 + 1, x2, y2)) + "\n"
                        )


def run_detect(
    weights: str,
    inputs: Sequence[str],
    output_dir: str,
    proposals_file: Optional[str] = None,
    proposal_method: str = "edgeboxes",
    score_thresh: float = 0.5,
    device: str = "auto",
    batch: int = 1,
    allow_pickle: bool = False,
    coco_json: bool = False,
    voc_comp4: bool = False,
    draw: bool = True,
    overrides: Sequence[str] = (),
) -> DetectSummary:
    """Run a checkpoint on image files; see ``tools/detect.py`` for the options."""
    import cv2
    from tqdm import tqdm

    from ..data.image_io import read_image
    from ..visualize import draw_detections
    from .infer import load_predictor

    files = expand_inputs(inputs)
    out = make_output_dir(output_dir, "--output")
    predictor = load_predictor(weights, [f"test.score_thresh={score_thresh}", *overrides], device)
    source = ProposalSource(predictor.cfg, proposals_file, proposal_method, out / ".proposal_cache", allow_pickle)
    names = output_names(files)
    summary = DetectSummary()
    world = du.get_world_size()
    mine = list(du.shard(len(files)))  # all of them single-process
    try:
        log_file = ResultLog(out, predictor.class_names, f".r{du.get_rank()}" if world > 1 else "")
    except OSError as e:
        raise SppdetError(f"--output {out}: cannot write here ({e.strerror})") from e
    t_start = last_refresh = time.time()
    main = du.is_main_process()
    bar = tqdm(total=len(mine), desc="detect", unit="img", disable=len(files) < 2 or not main, mininterval=1.0)
    say = bar.write if main else (lambda msg: None)  # under torchrun rank 0 speaks for its share
    try:
        for start in range(0, len(mine), max(1, batch)):
            chunk = mine[start : start + max(1, batch)]
            loaded = []
            for i in chunk:
                t0 = time.time()
                try:
                    image = read_image(files[i], predictor.cfg.input.max_image_pixels)
                    props = source(files[i], names[i], image)
                    loaded.append((i, image, props, time.time() - t0))
                except SppdetError as e:
                    msg = str(e) if str(files[i]) in str(e) else f"{files[i]}: {e}"
                    summary.failed.append((str(files[i]), msg))
                    say(f"skipped {msg}")
            if loaded:
                t0 = time.time()
                dets = predictor.predict_batch([l[1] for l in loaded], [l[2] for l in loaded])
                per_image = (time.time() - t0) / len(loaded)
                for (i, image, props, t_prop), d in zip(loaded, dets):
                    h, w = image.shape[:2]
                    log_file.add(names[i], str(files[i]), w, h, d)
                    summary.images += 1
                    summary.detections += len(d.boxes)
                    if draw:
                        vis = draw_detections(
                            image, d.boxes, d.labels.tolist(), d.scores.tolist(), predictor.class_names
                        )
                        ok, buf = cv2.imencode(
                            ".jpg", cv2.cvtColor(vis, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]
                        )
                        with atomic_write(out / f"{names[i]}.jpg") as f:
                            f.write(buf.tobytes())
                    say(
                        f"{files[i]}: {len(d.boxes)} detections, {len(props)} proposals, "
                        f"{t_prop + per_image:.2f} s (proposals {t_prop:.2f} s)"
                    )
                del loaded, dets
            bar.update(len(chunk))
            if world == 1 and time.time() - last_refresh > REFRESH_SECONDS:
                log_file.write_sppdet(out / "detections.json")
                last_refresh = time.time()
        bar.close()
        summary.seconds = time.time() - t_start
        if world > 1:
            return _merge_ranks(out, log_file, files, summary, predictor.class_names, coco_json, voc_comp4)
        _write_results(out, log_file, coco_json, voc_comp4)
    finally:
        log_file.close()
    return summary


def _write_results(out: Path, results: "ResultLog", coco_json: bool, voc_comp4: bool) -> None:
    results.write_sppdet(out / "detections.json")
    if coco_json:
        results.write_coco(out / "detections_coco.json")
    if voc_comp4:
        results.write_comp4(out / "comp4")


def _merge_ranks(
    out: Path,
    log_file: "ResultLog",
    files: Sequence[Path],
    summary: DetectSummary,
    class_names: Sequence[str],
    coco_json: bool,
    voc_comp4: bool,
) -> DetectSummary:
    """Under torchrun: rank 0 merges every rank's scratch file into the result files; every rank
    returns the summary of all ranks (failures in input order)."""
    from types import SimpleNamespace

    log_file._file.flush()
    parts = du.all_gather_object((str(log_file.path), summary))  # also: every rank's file is complete
    order = {str(f): i for i, f in enumerate(files)}
    if du.is_main_process():
        merged = ResultLog(out, class_names)
        try:
            streams = [_read_log(Path(path)) for path, _ in parts]  # each in input order already
            for e in heapq.merge(*streams, key=lambda e: order[e["file_name"]]):
                dets = SimpleNamespace(boxes=e["boxes"], scores=e["scores"], labels=e["labels"])
                merged.add(e["image_id"], e["file_name"], e["width"], e["height"], dets)
            _write_results(out, merged, coco_json, voc_comp4)
        finally:
            merged.close()
    du.barrier()  # rank 0 has read every scratch file: each rank may now remove its own
    sums = [s for _, s in parts]
    return DetectSummary(
        images=sum(s.images for s in sums),
        detections=sum(s.detections for s in sums),
        failed=sorted((f for s in sums for f in s.failed), key=lambda f: order.get(f[0], -1)),
        seconds=max(s.seconds for s in sums),
    )


def _read_log(path: Path) -> Iterator[Dict]:
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)
