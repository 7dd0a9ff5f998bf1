"""Detect objects in users' image files: inputs -> proposals -> detector -> drawings + files.

Used by ``tools/detect.py`` with a :class:`sppdet.Detector` (anything with its
``class_names``, ``cfg``, ``proposal_method``, ``propose`` and ``batch`` will do; see
:class:`DetectorLike`). Unreadable images are reported and skipped (the caller exits non-zero
at the end); everything written so far stays valid because each output file is written
atomically. Videos and cameras: :mod:`sppdet.engine.video`.

Memory and I/O stay bounded for any number of images: each image's detections go at once to a
:class:`~sppdet.evaluation.writer.DetectionsWriter`, whose journal
(``<output>/.detections.partial.jsonl``) is the only per-image record; ``detections.json`` (and
``detections_coco.json``, ``comp4/``) are assembled from it by streaming, atomically: at the end,
and at most every :data:`REFRESH_SECONDS` while running. After a crash or ``kill -9``,
``resume=True`` (``--resume``) skips the images already in the journal (or, after a finished run,
in ``detections.json``), matched by file path.

Output names come from the input file names (:func:`output_names`): folders, ``..`` and any
character outside ``[A-Za-z0-9._-]`` are removed, so no output can land outside the output
folder, and two inputs never share an output name.

Under ``torchrun`` the input files are sharded over the ranks (rank ``r`` of ``w`` takes files
``r, r + w, ...``); each rank draws its own images and keeps its own journal
(``.detections.partial.r<rank>.jsonl``), and at the end rank 0 merges them, in input order and
streaming, into ``detections.json`` (and the other result files). ``detections.json`` is then
written only at the end. The output folder must be visible to every rank.
"""

from __future__ import annotations

import glob
import hashlib
import heapq
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Protocol, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from ..config import Config
from ..data.voc import image_folder
from ..errors import DataError, SppdetError
from ..evaluation.writer import DetectionsWriter, read_journal
from ..fileio import atomic_write, make_output_dir
from ..proposals.io import load_proposals
from ..utils import comm as du
from ..visualize import draw_detections

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


class DetectorLike(Protocol):
    """What the detect loops need of a :class:`sppdet.Detector`."""

    @property
    def cfg(self) -> Config: ...

    @property
    def class_names(self) -> List[str]: ...

    @property
    def proposal_method(self) -> Optional[str]: ...

    def load(self, image) -> np.ndarray: ...

    def propose(self, image: np.ndarray) -> np.ndarray: ...

    def batch(self, images: Sequence, proposals: Optional[Sequence] = None) -> list: ...


@dataclass
class DetectSummary:
    """What a detect run did: images (or frames) processed now, skipped as already done
    (``--resume``), failures ``(path, message)``, detections written, wall seconds."""

    images: int = 0
    done_before: int = 0
    failed: List[Tuple[str, str]] = field(default_factory=list)
    detections: int = 0
    seconds: float = 0.0


class ProposalSource:
    """Proposals for an input image: from a file (matched by image id = file stem) or computed
    by the detector (cached in ``cache_dir``, keyed by the pixels and the proposal settings)."""

    def __init__(
        self, detector: DetectorLike, proposals_file: Optional[str], cache_dir: Path, allow_pickle: bool = False
    ) -> None:
        self.detector = detector
        self.cache_dir = cache_dir
        self.table = None
        if proposals_file:
            self.table = load_proposals(proposals_file, dataset=None, allow_pickle=allow_pickle)

    def __call__(self, path: Path, name: str, image: np.ndarray) -> np.ndarray:
        if self.table is not None:
            max_boxes = self.detector.cfg.proposals.max_per_image
            for key in (path.stem, name, path.name):
                if key in self.table:
                    return np.asarray(self.table[key][0], dtype=np.float32)[:max_boxes]
            raise DataError(f"{path}: no proposals for image id '{path.stem}' in the proposal file")
        return self._computed(image)

    def _computed(self, image: np.ndarray) -> np.ndarray:
        pc = self.detector.cfg.proposals
        method = self.detector.proposal_method
        settings = f"{image.shape}{method}{pc.max_per_image}{pc.max_side}{pc.min_size}{pc.edge_model}"
        key = hashlib.sha1(image.tobytes() + settings.encode()).hexdigest()
        cache = self.cache_dir / f"{key}.npy"
        if cache.is_file():
            try:
                return np.load(cache, allow_pickle=False)
            except (ValueError, OSError):
                pass  # corrupt cache entry: recompute
        boxes = self.detector.propose(image)
        with atomic_write(cache) as f:
            np.save(f, boxes)
        return boxes


def annotate(image: np.ndarray, result, class_names: Sequence[str]) -> np.ndarray:
    """A copy of the RGB ``image`` with ``result``'s boxes (x1, y1, x2, y2 pixels) drawn."""
    return draw_detections(image, result.boxes, result.labels.tolist(), result.scores.tolist(), class_names)


def save_jpeg(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB image as a JPEG (quality 92), atomically."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise SppdetError(f"{path}: cannot encode the annotated image")
    with atomic_write(path) as f:
        f.write(buf.tobytes())


def run_detect(
    detector: DetectorLike,
    inputs: Sequence[str],
    output_dir: str,
    proposals_file: Optional[str] = None,
    batch: int = 1,
    allow_pickle: bool = False,
    coco_json: bool = False,
    voc_comp4: bool = False,
    draw: bool = True,
    resume: bool = False,
) -> DetectSummary:
    """Run ``detector`` on image files (``inputs``: files, folders, globs) into ``output_dir``;
    see ``tools/detect.py`` for the options."""
    files = expand_inputs(inputs)
    out = make_output_dir(output_dir, "--output")
    world, rank, main = du.get_world_size(), du.get_rank(), du.is_main_process()
    if resume and world > 1:
        raise SppdetError("--resume: not supported under torchrun; resume in a single process")
    source = ProposalSource(detector, proposals_file, out / ".proposal_cache", allow_pickle)
    names = output_names(files)
    summary = DetectSummary()
    writer = DetectionsWriter(
        out / "detections.json",
        detector.class_names,
        coco_path=out / "detections_coco.json" if coco_json and world == 1 else None,
        comp4_dir=out / "comp4" if voc_comp4 and world == 1 else None,
        refresh_seconds=REFRESH_SECONDS if world == 1 else None,
        journal=out / f".detections.partial.r{rank}.jsonl" if world > 1 else None,
    )
    done = {str(Path(e.get("file_name", "")).resolve()) for e in writer.reset(resume)}
    mine = [i for i in du.shard(len(files)) if str(files[i].resolve()) not in done]
    summary.done_before = len(files) - len(mine) if world == 1 else 0
    if summary.done_before:
        log.info("resuming: %d of %d images already done", summary.done_before, len(files))
    t_start = time.time()
    bar = tqdm(total=len(mine), desc="detect", unit="img", disable=len(mine) < 2 or not main, mininterval=1.0)
    say = bar.write if main else (lambda msg: None)  # under torchrun rank 0 speaks for its share
    step = max(1, batch)
    try:
        for start in range(0, len(mine), step):
            chunk = mine[start : start + step]
            loaded = []
            for i in chunk:
                t0 = time.time()
                try:
                    image = detector.load(files[i])
                    loaded.append((i, image, source(files[i], names[i], image), time.time() - t0))
                except SppdetError as e:
                    msg = str(e) if str(files[i]) in str(e) else f"{files[i]}: {e}"
                    summary.failed.append((str(files[i]), msg))
                    say(f"skipped {msg}")
            if loaded:
                t0 = time.time()
                results = detector.batch([x[1] for x in loaded], [x[2] for x in loaded])
                per_image = (time.time() - t0) / len(loaded)
                for (i, image, props, t_prop), r in zip(loaded, results):
                    if draw:  # before the journal line: a journalled image always has its drawing
                        save_jpeg(out / f"{names[i]}.jpg", annotate(image, r, detector.class_names))
                    h, w = image.shape[:2]
                    writer.process(names[i], r, str(files[i]), w, h)
                    summary.images += 1
                    summary.detections += len(r)
                    say(
                        f"{files[i]}: {len(r)} detections, {len(props)} proposals, "
                        f"{t_prop + per_image:.2f} s (proposals {t_prop:.2f} s)"
                    )
                del loaded, results
            bar.update(len(chunk))
        bar.close()
        summary.seconds = time.time() - t_start
        if world > 1:
            return _merge_ranks(out, writer, files, summary, detector.class_names, coco_json, voc_comp4)
        writer.finish()
    finally:
        writer.close()
    return summary


def _merge_ranks(
    out: Path,
    writer: DetectionsWriter,
    files: Sequence[Path],
    summary: DetectSummary,
    class_names: Sequence[str],
    coco_json: bool,
    voc_comp4: bool,
) -> DetectSummary:
    """Under torchrun: rank 0 merges every rank's journal into the result files; every rank
    returns the summary of all ranks (failures in input order)."""
    writer.close()
    parts = du.all_gather_object((str(writer.journal), summary))  # also: every rank's journal is complete
    order = {str(f): i for i, f in enumerate(files)}
    if du.is_main_process():
        merged = DetectionsWriter(
            out / "detections.json",
            class_names,
            coco_path=out / "detections_coco.json" if coco_json else None,
            comp4_dir=out / "comp4" if voc_comp4 else None,
        )
        merged.reset()
        try:
            streams = [read_journal(path) for path, _ in parts]  # each in input order already
            for e in heapq.merge(*streams, key=lambda e: order[e["file_name"]]):
                merged.add_entry(e)
            merged.finish()
        finally:
            merged.close()
    du.barrier()  # rank 0 has read every journal: each rank may now remove its own
    writer.journal.unlink(missing_ok=True)
    sums = [s for _, s in parts]
    return DetectSummary(
        images=sum(s.images for s in sums),
        detections=sum(s.detections for s in sums),
        failed=sorted((f for s in sums for f in s.failed), key=lambda f: order.get(f[0], -1)),
        seconds=max(s.seconds for s in sums),
    )
