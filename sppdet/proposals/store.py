"""The native proposal store: one uncompressed ``.npz`` for a whole dataset, read lazily.

Layout (every member a plain ``.npy`` inside a zip written with ``ZIP_STORED``, no pickle)::

    ids      (I,)    unicode   image ids, in dataset order
    offsets  (I+1,)  int64     image i owns rows offsets[i]:offsets[i+1]
    boxes    (M, 4)  float32   every image's boxes, concatenated, sppdet convention (x1, y1, x2, y2)
    scores   (M,)    float32   optional: one score per box (higher is better)
    meta     ()      unicode   JSON: format version plus what the writer recorded (method, params...)

Boxes of one image are kept in their ranking order (best first), so "top N" is ``boxes[:N]``.

Reading: ``ids``, ``offsets`` and ``meta`` are small and read (CRC-checked) on open. ``boxes`` and
``scores`` are located inside the zip and memory-mapped (``np.load(mmap_mode='r')`` cannot map a
member of an ``.npz``), so reading one image of a 5,000 x 2,000-box store touches only that
image's rows. A compressed member (someone re-saved the file with ``savez_compressed``) is read
into memory instead. Structure and sizes are checked on open (a truncated file fails there);
:meth:`ProposalStore.verify` re-reads every byte against the zip's CRC-32 to catch bit rot.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DataError
from ..fileio import atomic_write
from .source import Proposals

FORMAT_VERSION = 1
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # zip local file header, 30 bytes
_REQUIRED = ("ids", "offsets", "boxes", "meta")


def _check_boxes(boxes, image_id: str) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise DataError(f"proposals for image '{image_id}': expected (N, 4) boxes, got shape {arr.shape}")
    return arr


def save_proposals(
    path: Union[str, Path],
    ids: Sequence[str],
    boxes_list: Sequence[np.ndarray],
    scores_list: Optional[Sequence[Optional[np.ndarray]]] = None,
    meta: Optional[Dict] = None,
) -> Path:
    """Write a native store atomically.

    Args:
        path: output ``.npz`` file.
        ids: image ids (unique strings), in dataset order.
        boxes_list: per image a float ``(N_i, 4)`` array in sppdet's convention, best first.
        scores_list: None, or per image a ``(N_i,)`` score array (all images, or none, have scores).
        meta: JSON-serialisable dict stored with the file (method, parameters, source...).
    """
    ids = [str(i) for i in ids]
    if len(ids) != len(boxes_list):
        raise DataError(f"{path}: {len(ids)} ids but {len(boxes_list)} box arrays")
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise DataError(f"{path}: duplicate image ids {dup}")
    boxes = [_check_boxes(b, i) for i, b in zip(ids, boxes_list)]
    counts = np.array([len(b) for b in boxes], dtype=np.int64)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    arrays = {
        "ids": np.array(ids, dtype=str) if ids else np.zeros((0,), dtype="<U1"),
        "offsets": offsets,
        "boxes": np.concatenate(boxes, axis=0) if boxes else np.zeros((0, 4), np.float32),
        "meta": np.array(json.dumps({"format": "sppdet-proposals", "version": FORMAT_VERSION, **(meta or {})})),
    }
    if scores_list is not None:
        if len(scores_list) != len(ids) or any(s is None for s in scores_list):
            raise DataError(f"{path}: give scores for every image or for none")
        scores = [np.asarray(s, dtype=np.float32).reshape(-1) for s in scores_list]
        for i, s, b in zip(ids, scores, boxes):
            if len(s) != len(b):
                raise DataError(f"proposals for image '{i}': {len(b)} boxes but {len(s)} scores")
        arrays["scores"] = np.concatenate(scores) if scores else np.zeros((0,), np.float32)
    path = Path(path)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # ZIP_STORED: members can be memory-mapped
    return path


class ProposalStore:
    """Read access to a native store: ``store.get(image_id) -> (boxes, scores or None)``.

    ``boxes`` is a float32 ``(N, 4)`` copy in sppdet's convention, best first. The object can be
    pickled to DataLoader workers (it re-opens the file there).
    """

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        self._open()

    # -- opening -------------------------------------------------------------------------
    def _fail(self, what: str) -> DataError:
        return DataError(
            f"{self.path}: not a valid sppdet proposal store ({what}); "
            "re-create it (tools/proposals.py compute/convert)"
        )

    def _open(self) -> None:
        if not self.path.is_file():
            raise DataError(f"{self.path}: proposal file not found")
        try:
            with zipfile.ZipFile(self.path) as zf:
                infos = {i.filename[:-4]: i for i in zf.infolist() if i.filename.endswith(".npy")}
                missing = [m for m in _REQUIRED if m not in infos]
                if missing:
                    raise self._fail(f"missing member(s) {missing}")
                ids = self._read_small(zf, "ids")
                offsets = self._read_small(zf, "offsets")
                meta_arr = self._read_small(zf, "meta")
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as e:
            raise self._fail(f"truncated or corrupt: {e}") from e
        try:
            self.meta: Dict = json.loads(str(meta_arr[()]))
        except (json.JSONDecodeError, IndexError, TypeError) as e:
            raise self._fail("unreadable meta") from e
        if ids.ndim != 1 or ids.dtype.kind != "U":
            raise self._fail("ids must be a 1-D unicode array")
        if offsets.shape != (len(ids) + 1,) or offsets.dtype.kind not in "iu":
            raise self._fail("offsets must have one entry per image plus one")
        if len(offsets) and (offsets[0] != 0 or np.any(np.diff(offsets) < 0)):
            raise self._fail("offsets are not increasing from 0")
        self._ids: List[str] = [str(i) for i in ids]
        self._offsets = offsets.astype(np.int64)
        self._index = {i: k for k, i in enumerate(self._ids)}
        if len(self._index) != len(self._ids):
            raise self._fail("duplicate image ids")
        total = int(self._offsets[-1])
        self._boxes = self._map_member(infos["boxes"], (total, 4))
        self._scores = self._map_member(infos["scores"], (total,)) if "scores" in infos else None

    def _read_small(self, zf: zipfile.ZipFile, name: str) -> np.ndarray:
        with zf.open(name + ".npy") as f:  # reading to the end checks the CRC
            arr = np.lib.format.read_array(f, allow_pickle=False)
            if f.read(1):
                raise self._fail(f"trailing bytes after {name}")
        return arr

    def _map_member(self, info: zipfile.ZipInfo, shape: Tuple[int, ...]) -> np.ndarray:
        name = info.filename[:-4]
        if info.compress_type != zipfile.ZIP_STORED:  # compressed: cannot map, read it all
            with zipfile.ZipFile(self.path) as zf:
                arr = self._read_small(zf, name)
            return self._check_member(arr, name, shape)
        file_size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            raw = f.read(_LOCAL_HEADER.size)
            if len(raw) != _LOCAL_HEADER.size:
                raise self._fail(f"{name}: local header cut off")
            fields = _LOCAL_HEADER.unpack(raw)
            if fields[0] != b"PK\x03\x04":
                raise self._fail(f"{name}: bad local header")
            data_start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
            f.seek(data_start)
            try:
                version = np.lib.format.read_magic(f)
                hdr = (
                    np.lib.format.read_array_header_1_0(f)
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0(f)
                )
            except ValueError as e:
                raise self._fail(f"{name}: bad array header ({e})") from e
            arr_shape, fortran, dtype = hdr
            arr_offset = f.tell()
        if dtype != np.float32 or fortran or tuple(arr_shape) != shape:
            raise self._fail(f"{name}: expected float32 {shape}, got {dtype} {tuple(arr_shape)}")
        nbytes = int(np.prod(shape)) * 4
        if arr_offset + nbytes > data_start + info.file_size or arr_offset + nbytes > file_size:
            raise self._fail(f"{name}: data cut off")
        if nbytes == 0:
            return np.zeros(shape, np.float32)
        return np.memmap(self.path, dtype=np.float32, mode="r", offset=arr_offset, shape=shape)

    def _check_member(self, arr: np.ndarray, name: str, shape: Tuple[int, ...]) -> np.ndarray:
        if arr.dtype != np.float32 or arr.shape != shape:
            raise self._fail(f"{name}: expected float32 {shape}, got {arr.dtype} {arr.shape}")
        return arr

    def verify(self) -> None:
        """Read every member in full and check its CRC-32 (DataError on any corruption)."""
        try:
            with zipfile.ZipFile(self.path) as zf:
                bad = zf.testzip()
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
            raise self._fail(f"corrupt: {e}") from e
        if bad is not None:
            raise self._fail(f"checksum mismatch in member {bad}")

    # -- pickling (DataLoader workers) ---------------------------------------------------
    def __getstate__(self) -> Dict:
        return {"path": self.path}

    def __setstate__(self, state: Dict) -> None:
        self.path = state["path"]
        self._open()

    # -- access --------------------------------------------------------------------------
    @property
    def ids(self) -> List[str]:
        """Image ids in store order."""
        return list(self._ids)

    @property
    def has_scores(self) -> bool:
        """Whether the store holds a score per box."""
        return self._scores is not None

    @property
    def num_boxes(self) -> int:
        """Total number of boxes over all images."""
        return int(self._offsets[-1])

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def get(self, image_id: str) -> Proposals:
        """``(boxes float32 (N, 4), scores float32 (N,) or None)`` of one image, best first."""
        try:
            k = self._index[image_id]
        except KeyError:
            raise KeyError(f"image id '{image_id}' not in proposal store {self.path}") from None
        a, b = int(self._offsets[k]), int(self._offsets[k + 1])
        boxes = np.array(self._boxes[a:b], dtype=np.float32)
        scores = None if self._scores is None else np.array(self._scores[a:b], dtype=np.float32)
        return boxes, scores

    def boxes(self, image_id: str) -> np.ndarray:
        """Boxes ``(N, 4)`` of one image (sppdet convention, best first)."""
        return self.get(image_id)[0]

    def to_dict(self) -> Dict[str, Proposals]:
        """Every image's proposals (loads the whole store)."""
        return {i: self.get(i) for i in self._ids}

    def __repr__(self) -> str:
        return f"ProposalStore({str(self.path)!r}, images={len(self)}, boxes={self.num_boxes})"
