"""One streaming writer of detection results, used by ``tools/detect.py`` and ``tools/eval.py``.

Shaped like detectron2's ``DatasetEvaluator``: :meth:`DetectionsWriter.reset` once,
:meth:`~DetectionsWriter.process` per image as soon as its detections exist,
:meth:`~DetectionsWriter.finish` at the end. Memory stays flat for any number of images:

* each image is appended at once to a journal, ``.<name>.partial.jsonl`` next to the output
  (one JSON line per image, full precision, written with a single ``write`` call so a
  ``kill -9`` never leaves half a line; a torn last line after a power cut is dropped);
* the result files (the sppdet detections json, and optionally a COCO results json and VOC
  comp4 files) are assembled from the journal by streaming, atomically: at :meth:`finish`, and
  at most every ``refresh_seconds`` while running, so a long run's results can be read (and
  survive a crash) without rewriting the whole file after every image;
* ``reset(resume=True)`` reads back what an interrupted run wrote (the journal, or the finished
  detections json) so the caller can skip those images; the journal is removed by ``finish``.

The file formats are those of :mod:`sppdet.evaluation.detections`, written with the same
per-image helpers (:func:`sppdet_entry`, :func:`coco_rows`, :func:`comp4_lines`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import DataError, SppdetError
from ..fileio import PathLike, atomic_write, load_json
from .detections import FORMAT_NAME, coco_rows, comp4_lines, sppdet_entry, sppdet_header

#: Journal keys that are not extra per-image fields.
_CORE = ("image_id", "file_name", "width", "height", "boxes", "scores", "labels")


def read_journal(path: PathLike) -> Iterator[Dict]:
    """The entries of a journal file in order; a torn (unterminated) last line is skipped."""
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                return  # torn by a crash: that image is simply not done
            try:
                yield json.loads(line)
            except (ValueError, UnicodeDecodeError):
                raise DataError(f"{path}: line {n} is not valid JSON (delete the file to start over)") from None


class DetectionsWriter:
    """Stream per-image detections into an sppdet detections json (+ COCO json, comp4 files).

    Args:
        path: the sppdet detections json to write.
        class_names: label ``k`` is ``class_names[k-1]``.
        coco_path: also write a COCO results json here.
        comp4_dir: also write VOC ``<prefix>_det_<split>_<class>.txt`` files here.
        comp4_split, comp4_prefix: names of the comp4 files.
        coco_image_ids: image id -> integer COCO id; default: ``int(image_id)`` when every id
            is a distinct number, else the position from 1.
        category_ids: COCO ``category_id`` of each label (``[k-1]``); default ``k``.
        header: extra top-level fields of the json (e.g. a video's ``fps``).
        refresh_seconds: rewrite the result files at most this often while running (None: only
            at :meth:`finish`).
        journal: journal file (default ``.<name>.partial.jsonl`` next to ``path``).
    """

    def __init__(
        self,
        path: PathLike,
        class_names: Sequence[str],
        coco_path: Optional[PathLike] = None,
        comp4_dir: Optional[PathLike] = None,
        comp4_split: str = "detect",
        comp4_prefix: str = "comp4",
        coco_image_ids: Optional[Mapping[str, int]] = None,
        category_ids: Optional[Sequence[int]] = None,
        header: Optional[Dict] = None,
        refresh_seconds: Optional[float] = None,
        journal: Optional[PathLike] = None,
    ) -> None:
        self.path = Path(path)
        self.class_names = list(class_names)
        self.coco_path = Path(coco_path) if coco_path is not None else None
        self.comp4_dir = Path(comp4_dir) if comp4_dir is not None else None
        self.comp4_split, self.comp4_prefix = comp4_split, comp4_prefix
        self.coco_image_ids = coco_image_ids
        self.category_ids = category_ids
        self.header = dict(header or {})
        self.refresh_seconds = refresh_seconds
        self.journal = Path(journal) if journal is not None else self.path.with_name(f".{self.path.stem}.partial.jsonl")
        self._fd: Optional[int] = None
        self._last_write = 0.0
        self.count = 0  # images in the journal

    # -- the evaluator-like interface ------------------------------------------------------

    def reset(self, resume: bool = False) -> List[Dict]:
        """Open the journal; returns the entries already done (``resume``), else starts empty.

        Resuming reads the journal of an interrupted run, or, when the run had finished (no
        journal), its detections json; entries are dicts with ``image_id``, ``file_name``...
        """
        self.close()
        if self.journal.is_symlink():  # planted: replaced, never followed
            self.journal.unlink()
        done: List[Dict] = []
        if resume and self.journal.is_file():
            done = list(read_journal(self.journal))
        elif resume and self.path.is_file():
            done = list(self._entries_of_json(self.path))
        try:
            self._fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise SppdetError(f"{self.journal}: cannot write ({e.strerror})") from e
        self.count = 0
        for entry in done:  # rewritten whole: drops a torn tail
            self.add_entry(entry)
        self._last_write = time.time()
        return done

    def process(
        self,
        image_id: str,
        detections,
        file_name: Optional[str] = None,
        width: Optional[int] = None,
        height: Optional[int] = None,
        **extra,
    ) -> None:
        """Append one image: ``detections`` has ``boxes (N, 4)`` (x1, y1, x2, y2 pixels),
        ``scores (N,)`` and ``labels (N,)`` in 1..K; ``extra`` fields go into its json entry."""
        entry: Dict = {"image_id": str(image_id)}
        if file_name is not None:
            entry["file_name"] = str(file_name)
        if width is not None and height is not None:
            entry.update(width=int(width), height=int(height))
        entry.update(extra)
        entry["boxes"] = np.asarray(detections.boxes, dtype=np.float32).reshape(-1, 4).tolist()
        entry["scores"] = np.asarray(detections.scores, dtype=np.float32).reshape(-1).tolist()
        entry["labels"] = np.asarray(detections.labels, dtype=np.int64).reshape(-1).tolist()
        self.add_entry(entry)
        if self.refresh_seconds is not None and time.time() - self._last_write > self.refresh_seconds:
            self.write()

    def add_entry(self, entry: Dict) -> None:
        """Append a journal entry as :meth:`process` makes them (e.g. one read from another journal)."""
        if self._fd is None:
            raise RuntimeError("DetectionsWriter.reset() was not called")
        data = (json.dumps(entry) + "\n").encode("utf-8")
        try:
            written = os.write(self._fd, data)  # one call: a killed process never leaves half a line
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as e:  # disk full...
            raise SppdetError(f"{self.journal}: cannot write ({e.strerror})") from e
        self.count += 1

    def finish(self) -> None:
        """Write the result files and remove the journal."""
        self.write()
        self.close()
        self.journal.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the journal (kept on disk: ``reset(resume=True)`` continues from it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- result files ----------------------------------------------------------------------

    def entries(self) -> Iterator[Dict]:
        """The journal's entries so far, in order (read from disk, one at a time)."""
        return read_journal(self.journal)

    def write(self) -> None:
        """(Re)write the result files from the journal, atomically."""
        self._write_sppdet()
        if self.coco_path is not None:
            self._write_coco()
        if self.comp4_dir is not None:
            self._write_comp4()
        self._last_write = time.time()

    @staticmethod
    def _dets(e: Dict) -> SimpleNamespace:
        return SimpleNamespace(boxes=e["boxes"], scores=e["scores"], labels=e["labels"])

    def _write_sppdet(self) -> None:
        head = json.dumps({**sppdet_header(self.class_names), **self.header})
        with atomic_write(self.path, "w") as f:
            f.write(head[:-1] + ', "images": [')
            for k, e in enumerate(self.entries()):
                extra = {key: v for key, v in e.items() if key not in _CORE}
                entry = sppdet_entry(
                    e["image_id"], self._dets(e), self.class_names, e.get("file_name"), e.get("width"), e.get("height"),
                    **extra,
                )  # fmt: skip
                f.write(("\n " if k == 0 else ",\n ") + json.dumps(entry))
            f.write("\n]}\n")

    def _write_coco(self) -> None:
        ids = self.coco_image_ids
        if ids is None:  # as coco_image_ids(dataset) does for a dataset without COCO ids
            names = [e["image_id"] for e in self.entries()]
            numeric = bool(names) and all(i.isdigit() for i in names) and len({int(i) for i in names}) == len(names)
            ids = {i: (int(i) if numeric else k + 1) for k, i in enumerate(names)}
        assert self.coco_path is not None
        with atomic_write(self.coco_path, "w") as f:
            f.write("[")
            first = True
            for e in self.entries():
                for row in coco_rows(ids[e["image_id"]], self._dets(e), self.category_ids):
                    f.write(("" if first else ", ") + json.dumps(row))
                    first = False
            f.write("]\n")

    def _write_comp4(self) -> None:
        assert self.comp4_dir is not None
        with contextlib.ExitStack() as stack:
            files = [
                stack.enter_context(
                    atomic_write(self.comp4_dir / f"{self.comp4_prefix}_det_{self.comp4_split}_{n}.txt", "w")
                )
                for n in self.class_names
            ]
            for e in self.entries():
                for label, line in comp4_lines(e["image_id"], self._dets(e)):
                    if 1 <= label <= len(files):
                        files[label - 1].write(line + "\n")

    @staticmethod
    def _entries_of_json(path: Path) -> Iterator[Dict]:
        """Journal entries of a finished sppdet detections json (its values are already rounded)."""
        data = load_json(path)
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME or not isinstance(data.get("images"), list):
            raise DataError(f'{path}: not an sppdet detections file (no "format": "{FORMAT_NAME}"); cannot resume')
        for i, img in enumerate(data["images"]):
            try:
                dets = img["detections"]
                entry = {k: v for k, v in img.items() if k != "detections"}
                entry["boxes"] = [[float(v) for v in d["box"]] for d in dets]
                entry["scores"] = [float(d["score"]) for d in dets]
                entry["labels"] = [int(d["label"]) for d in dets]
                str(entry["image_id"])
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{path}: images[{i}] is malformed; cannot resume from this file") from None
            yield entry
