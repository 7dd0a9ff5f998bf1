"""Foreign proposal formats, converted to sppdet's box convention where they are read.

:func:`load_proposals` returns ``{image_id: (boxes float32 (N, 4), scores float32 (N,) or None)}``
with boxes in our continuous ``(x1, y1, x2, y2)`` convention (:mod:`sppdet.structures`), in the
file's order. :func:`sanitize_proposals` then checks them against a dataset and
:func:`convert_to_store` writes the native store (:mod:`sppdet.proposals.store`).

Formats (``fmt`` names; ``"auto"`` picks by extension, then by content):

=====================  ===========================================  ===============================
fmt                    what the file holds                           to ours
=====================  ===========================================  ===============================
``native``             our ``.npz`` store                            as is
``rcnn-mat``           R-CNN / SPP_net ``selective_search_data`` and  :func:`rcnn_mat_to_xyxy`
                       ``edge_box_data`` ``.mat`` (MATLAB v5 or       (1-based inclusive
                       v7.3/HDF5): cell arrays ``images`` (ids) and   ``[y1 x1 y2 x2]``); a 5th
                       ``boxes`` (N x 4 each)                         column is taken as a score
``folder``             one file per image, file stem = image id      per file, below
                       (a trailing ``_boxes`` is dropped, as in
                       fast-rcnn's ``000004_boxes.mat``)
 - ``.mat``            variable ``boxes`` (fast-rcnn demo files)      0-based inclusive
                                                                     ``[x1 y1 x2 y2]``: x2+1, y2+1
 - ``.npy`` / ``.txt`` ``(N, 4)`` or ``(N, 5)``: ``x1 y1 x2 y2         already ours (continuous,
                       [score]``, one box per row (txt: whitespace,    no +1); score optional
                       ``#`` comments)
``detectron-pkl``      Detectron (v1): dict ``boxes``, ``scores``,    0-based inclusive (Detectron
                       ``indexes`` (or ``ids``), lists per image      clips to ``width - 1`` and
                                                                     uses ``+1`` widths): x2+1, y2+1
``detectron2-pkl``     detectron2: dict ``ids``, ``boxes``,           ``bbox_mode`` 0 XYXY_ABS: as
                       ``objectness_logits``, optional ``bbox_mode``  is; 1 XYWH_ABS: xywh->xyxy;
                                                                     absent: XYXY_ABS (detectron2's
                                                                     default). Logits kept as scores
``mmdet-pkl``          mmdetection: list of ``(n, 4)``/``(n, 5)``     continuous XYXY (mmdet >= 2.0)
                       arrays in dataset order (needs the dataset)
``coco-json``          list of ``{"image_id", "bbox": [x,y,w,h],      :func:`xywh_to_xyxy`; ids map
                       "score"}``                                     to the dataset's ``coco_id``
                                                                     when it has them, else str()
=====================  ===========================================  ===============================

Pickles can run code: ``.pkl`` files load only with ``allow_pickle=True``, and then through an
unpickler that accepts numpy arrays and plain containers only.
"""

from __future__ import annotations

import io as _io
import logging
import pickle
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import h5py
import numpy as np
import scipy.io

from ..errors import DataError
from ..fileio import load_json
from ..structures import clip_boxes, rcnn_mat_to_xyxy, xywh_to_xyxy, zero_based_inclusive_to_xyxy
from .mat5_check import Mat5Error, check_mat5, is_mat5
from .store import Proposals, ProposalStore, save_proposals

logger = logging.getLogger(__name__)

FORMATS = (
    "auto",
    "native",
    "rcnn-mat",
    "folder",
    "mat",
    "npy",
    "txt",
    "detectron-pkl",
    "detectron2-pkl",
    "mmdet-pkl",
    "pkl",
    "coco-json",
)
PER_IMAGE_EXTS = (".mat", ".npy", ".txt")
RawProposals = Dict[str, Proposals]


# ---------------------------------------------------------------------------------------
# shape checks shared by every reader


def _split_cols(arr: Any, path: Path, image_id: str, convert) -> Proposals:
    """``(N, 4)`` or ``(N, 5)`` array -> (converted boxes, scores or None); DataError otherwise."""
    try:
        a = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: image '{image_id}': boxes are not numeric ({_first_line(e)})") from e
    if a.size == 0:
        return np.zeros((0, 4), np.float32), None
    if a.ndim != 2 or a.shape[1] not in (4, 5):
        raise DataError(f"{path}: image '{image_id}': expected an (N, 4) or (N, 5) box array, got shape {a.shape}")
    scores = a[:, 4].astype(np.float32) if a.shape[1] == 5 else None
    return np.asarray(convert(a[:, :4]), dtype=np.float32), scores


def _with_scores(boxes: Any, scores: Any, path: Path, image_id: str, convert) -> Proposals:
    b, s = _split_cols(boxes, path, image_id, convert)
    if scores is not None:
        s = np.asarray(scores, dtype=np.float32).reshape(-1)
        if len(s) != len(b):
            raise DataError(f"{path}: image '{image_id}': {len(b)} boxes but {len(s)} scores")
    return b, s


def _identity(b: np.ndarray) -> np.ndarray:
    return b


# ---------------------------------------------------------------------------------------
# MATLAB


def _h5_value(f, obj) -> Any:
    """A MATLAB v7.3 dataset as numpy in MATLAB's (row, col) order, with chars as a str."""
    if isinstance(obj, h5py.Reference):
        obj = f[obj]
    attrs = obj.attrs
    data = obj[()]
    cls = attrs.get("MATLAB_class", b"")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    if "MATLAB_empty" in attrs and np.asarray(attrs["MATLAB_empty"]).any():
        return "" if cls == "char" else np.zeros((0,), dtype=np.float64)  # data holds the dims only
    if cls == "char":
        return "".join(chr(c) for c in np.asarray(data).T.reshape(-1))
    if cls == "cell" or (isinstance(data, np.ndarray) and data.dtype == object):
        refs = np.asarray(data).T  # MATLAB is column-major: HDF5 holds the transpose
        return [_h5_value(f, r) for r in refs.reshape(-1, order="F")]
    return np.asarray(data).T


def _read_mat(path: Path) -> Dict[str, Any]:
    """Variables of a ``.mat`` file: v7.3 (HDF5) via h5py, v5 via scipy."""
    try:
        if h5py.is_hdf5(str(path)):
            with h5py.File(path, "r") as f:
                return {k: _h5_value(f, f[k]) for k in f.keys() if not k.startswith("#")}

        data = path.read_bytes()
        if is_mat5(data):  # scipy's compiled reader can crash the process on a corrupt v5 file
            check_mat5(data)
        raw = scipy.io.loadmat(_io.BytesIO(data), squeeze_me=False, struct_as_record=False)
    except Mat5Error as e:
        raise DataError(f"{path}: not a valid MATLAB v5 file ({e})") from None
    except DataError:
        raise
    except MemoryError:  # a corrupt size field: scipy allocates what the header claims
        raise DataError(f"{path}: cannot read MATLAB file (an array size in it is larger than memory)") from None
    except Exception as e:  # scipy/h5py raise many types for corrupt files
        raise DataError(f"{path}: cannot read MATLAB file ({_first_line(e)})") from e
    out: Dict[str, Any] = {}
    for k, v in raw.items():
        if k.startswith("__"):
            continue
        if isinstance(v, np.ndarray) and v.dtype == object:  # cell array
            out[k] = [_mat5_cell_item(x) for x in v.reshape(-1, order="F")]
        else:
            out[k] = v
    return out


def _mat5_cell_item(x: Any) -> Any:
    """A v5 cell element: char arrays become str, numeric arrays stay as they are."""
    if isinstance(x, np.ndarray) and x.dtype.kind == "U":
        return "".join(x.reshape(-1).tolist())
    return x


def _load_rcnn_mat(path: Path, variables: Dict[str, Any]) -> RawProposals:
    images, boxes = variables["images"], variables["boxes"]
    if isinstance(images, np.ndarray) and images.dtype.kind == "U":  # char matrix, one id a row
        images = ["".join(r).strip() for r in images.reshape(images.shape[0], -1)]
    if not isinstance(images, list) or not isinstance(boxes, list):
        raise DataError(f"{path}: 'images' and 'boxes' must be cell arrays (R-CNN selective_search_data)")
    if len(images) != len(boxes):
        raise DataError(f"{path}: {len(images)} images but {len(boxes)} box arrays")
    out: RawProposals = {}
    for name, b in zip(images, boxes):
        image_id = str(name).strip()
        out[image_id] = _split_cols(b, path, image_id, rcnn_mat_to_xyxy)
    return out


def _load_one_mat(path: Path, image_id: str) -> Proposals:
    variables = _read_mat(path)
    if "boxes" not in variables:
        raise DataError(f"{path}: no variable 'boxes' (found {sorted(variables)})")
    return _split_cols(variables["boxes"], path, image_id, zero_based_inclusive_to_xyxy)


# ---------------------------------------------------------------------------------------
# per-image files


def _stem_id(path: Path) -> str:
    stem = path.stem
    return stem[: -len("_boxes")] if stem.endswith("_boxes") and len(stem) > 6 else stem


def _load_per_image(path: Path, image_id: Optional[str] = None) -> Proposals:
    image_id = image_id or _stem_id(path)
    ext = path.suffix.lower()
    if ext == ".mat":
        return _load_one_mat(path, image_id)
    if ext == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as e:  # numpy raises many types for a corrupt header (SyntaxError, TokenError...)
            raise DataError(f"{path}: not a plain numeric .npy array ({_first_line(e)})") from e
        return _split_cols(arr, path, image_id, _identity)
    if ext == ".txt":
        try:
            arr = np.loadtxt(path, dtype=np.float64, ndmin=2, comments="#")
        except ValueError as e:
            raise DataError(f"{path}: expected rows 'x1 y1 x2 y2 [score]' ({_first_line(e)})") from e
        return _split_cols(arr, path, image_id, _identity)
    raise DataError(f"{path}: unsupported per-image proposal file (use {', '.join(PER_IMAGE_EXTS)})")


def _load_folder(path: Path) -> RawProposals:
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in PER_IMAGE_EXTS)
    if not files:
        raise DataError(f"{path}: no per-image proposal files ({', '.join(PER_IMAGE_EXTS)}) in this folder")
    out: RawProposals = {}
    seen: Dict[str, Path] = {}
    for p in files:
        image_id = _stem_id(p)
        if image_id in seen:
            raise DataError(f"{path}: two files for image '{image_id}': {seen[image_id].name}, {p.name}")
        seen[image_id] = p
        out[image_id] = _load_per_image(p, image_id)
    return out


# ---------------------------------------------------------------------------------------
# pickles


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers; refuses every other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("collections", "OrderedDict"),
        ("builtins", "list"),
        ("builtins", "dict"),
        ("builtins", "tuple"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "int"),
        ("builtins", "float"),
        ("builtins", "str"),
        ("builtins", "bytes"),
        ("builtins", "bytearray"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        if name == "BoxMode" and module.startswith("detectron2"):
            return int  # detectron2.structures.BoxMode(value) -> the plain int value
        if module.startswith("numpy") and name.startswith(("dtype", "Float", "Int", "UInt", "Bool")):
            return super().find_class(module, name)  # numpy 2 dtype classes (numpy.dtypes.Float32DType)
        raise DataError(
            f"refusing to unpickle '{module}.{name}': only numpy arrays and plain "
            "containers are accepted in proposal pickles"
        )


def _read_pickle(path: Path, allow_pickle: bool) -> Any:
    if not allow_pickle:
        raise DataError(
            f"{path}: is a pickle; unpickling can run arbitrary code, so it is refused "
            "by default. If you trust this file, pass allow_pickle=True "
            "(tools: --allow-pickle; config: proposals.allow_pickle: true)"
        )
    data = path.read_bytes()
    try:  # latin1: Python 2 pickles (Detectron) hold numpy buffers as str
        return _SafeUnpickler(_io.BytesIO(data), encoding="latin1").load()
    except DataError as e:
        raise DataError(f"{path}: {e}") from e
    except Exception as e:
        raise DataError(f"{path}: cannot unpickle ({_first_line(e)})") from e


def _pkl_kind(obj: Any) -> str:
    if isinstance(obj, dict):
        if "objectness_logits" in obj or "bbox_mode" in obj:
            return "detectron2-pkl"
        if "scores" in obj or "indexes" in obj:
            return "detectron-pkl"
        if "ids" in obj and "boxes" in obj:
            return "detectron2-pkl"
    if isinstance(obj, (list, tuple)):
        return "mmdet-pkl"
    return "unknown"


def _id_mapper(dataset) -> Any:
    """Foreign id (COCO int or str) -> dataset id: via the records' coco_id when they have one."""
    by_coco = {}
    if dataset is not None:
        by_coco = {str(r.coco_id): r.image_id for r in dataset if r.coco_id is not None}

    def to_id(x: Any) -> str:
        if isinstance(x, bytes):
            x = x.decode()
        if isinstance(x, np.generic):
            x = x.item()
        s = str(x)
        return by_coco.get(s, s)

    return to_id


def _from_pickle(path: Path, obj: Any, kind: str, dataset) -> RawProposals:
    to_id = _id_mapper(dataset)
    if kind == "detectron-pkl":
        ids = obj.get("indexes", obj.get("ids"))
        if ids is None or "boxes" not in obj:
            raise DataError(f"{path}: Detectron proposal dict needs 'boxes' and 'indexes' (or 'ids')")
        scores = obj.get("scores")
        return _zip_lists(path, [to_id(i) for i in ids], obj["boxes"], scores, zero_based_inclusive_to_xyxy)
    if kind == "detectron2-pkl":
        if "ids" not in obj or "boxes" not in obj:
            raise DataError(f"{path}: detectron2 proposal dict needs 'ids' and 'boxes'")
        try:
            mode = int(np.asarray(obj.get("bbox_mode", 0)).reshape(-1)[0])
        except (TypeError, ValueError, OverflowError, IndexError):  # None, inf, nan, [], text
            raise DataError(f"{path}: bbox_mode {obj.get('bbox_mode')!r} is not an integer box mode") from None
        if mode not in (0, 1):
            raise DataError(f"{path}: bbox_mode {mode} not supported (0 = XYXY_ABS, 1 = XYWH_ABS)")
        convert = _identity if mode == 0 else xywh_to_xyxy
        return _zip_lists(path, [to_id(i) for i in obj["ids"]], obj["boxes"], obj.get("objectness_logits"), convert)
    if kind == "mmdet-pkl":
        if dataset is None:
            raise DataError(
                f"{path}: an mmdetection proposal file is a list in dataset order; give "
                "the dataset (tools: --dataset-config C --split S)"
            )
        if len(obj) != len(dataset):
            raise DataError(
                f"{path}: {len(obj)} entries but the dataset has {len(dataset)} images "
                "(mmdetection files must follow the dataset order)"
            )
        return {r.image_id: _split_cols(a, path, r.image_id, _identity) for r, a in zip(dataset, obj)}
    raise DataError(
        f"{path}: unrecognised pickle content ({type(obj).__name__}); expected a Detectron "
        "or detectron2 dict or an mmdetection list"
    )


def _zip_lists(path: Path, ids: List[str], boxes: Sequence, scores: Optional[Sequence], convert) -> RawProposals:
    if len(ids) != len(boxes) or (scores is not None and len(scores) != len(ids)):
        raise DataError(
            f"{path}: ids, boxes and scores lists differ in length "
            f"({len(ids)}, {len(boxes)}, {None if scores is None else len(scores)})"
        )
    out: RawProposals = {}
    for k, image_id in enumerate(ids):
        out[image_id] = _with_scores(boxes[k], None if scores is None else scores[k], path, image_id, convert)
    return out


# ---------------------------------------------------------------------------------------
# COCO json


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _load_coco_json(path: Path, dataset) -> RawProposals:
    data = load_json(path)  # UTF-8, or UTF-16/32 with a BOM
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of {{image_id, bbox, score}} objects")
    to_id = _id_mapper(dataset)
    grouped: Dict[str, Tuple[List, List]] = {}
    has_score = bool(data) and all("score" in d for d in data if isinstance(d, dict))
    for k, d in enumerate(data):
        if not isinstance(d, dict) or "image_id" not in d or "bbox" not in d:
            raise DataError(f"{path}: entry {k} lacks 'image_id' or 'bbox'")
        image_id = to_id(d["image_id"])
        b = d["bbox"]
        if not isinstance(b, (list, tuple)) or len(b) != 4 or not all(_is_number(v) for v in b):
            raise DataError(f"{path}: image '{image_id}': entry {k} bbox must be [x, y, w, h] numbers, got {b!r}"[:300])
        if not _is_number(d.get("score", 0.0)):
            raise DataError(f"{path}: image '{image_id}': entry {k} score must be a number, got {d['score']!r}"[:300])
        boxes, scores = grouped.setdefault(image_id, ([], []))
        boxes.append(b)
        scores.append(d.get("score", 0.0))
    out: RawProposals = {}
    for image_id, (boxes, scores) in grouped.items():
        out[image_id] = _with_scores(
            np.asarray(boxes, np.float64).reshape(-1, 4), scores if has_score else None, path, image_id, xywh_to_xyxy
        )
    return out


# ---------------------------------------------------------------------------------------
# entry points


def detect_format(path: Union[str, Path]) -> str:
    """Best guess of a proposal file's format from its extension (pickles: see content)."""
    path = Path(path)
    if path.is_dir():
        return "folder"
    ext = path.suffix.lower()
    return {
        ".npz": "native",
        ".mat": "mat",
        ".npy": "npy",
        ".txt": "txt",
        ".pkl": "pkl",
        ".pickle": "pkl",
        ".json": "coco-json",
    }.get(ext, "unknown")


def load_proposals(path: Union[str, Path], dataset=None, allow_pickle: bool = False, fmt: str = "auto") -> RawProposals:
    """Read proposals from any supported format (module docstring) into our convention.

    Returns ``{image_id: (boxes float32 (N, 4), scores float32 (N,) or None)}`` in file order.
    ``dataset`` is needed for mmdetection lists and maps COCO integer ids to dataset ids.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: proposal file not found")
    if fmt not in FORMATS:
        raise DataError(f"unknown proposal format '{fmt}' (choose from {', '.join(FORMATS)})")
    kind = detect_format(path) if fmt == "auto" else fmt
    if kind == "native":
        return ProposalStore(path).to_dict()
    if kind == "folder":
        return _load_folder(path)
    if kind in ("mat", "rcnn-mat"):
        variables = _read_mat(path)
        if "images" in variables and "boxes" in variables:
            return _load_rcnn_mat(path, variables)
        if kind == "rcnn-mat":
            raise DataError(f"{path}: no 'images'/'boxes' cell arrays (found {sorted(variables)})")
        if "boxes" not in variables:
            raise DataError(f"{path}: no variable 'boxes' (found {sorted(variables)})")
        image_id = _stem_id(path)
        return {image_id: _split_cols(variables["boxes"], path, image_id, zero_based_inclusive_to_xyxy)}
    if kind in ("npy", "txt"):
        return {_stem_id(path): _load_per_image(path)}
    if kind in ("pkl", "detectron-pkl", "detectron2-pkl", "mmdet-pkl"):
        obj = _read_pickle(path, allow_pickle)
        kind = _pkl_kind(obj) if kind == "pkl" else kind
        try:
            return _from_pickle(path, obj, kind, dataset)
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
            # The unpickled object can be any mix of containers: a wrong type anywhere in it is
            # the file's fault, whichever line of the conversion trips over it.
            raise DataError(f"{path}: unexpected content for {kind} ({_first_line(e)})") from e
    if kind == "coco-json":
        return _load_coco_json(path, dataset)
    raise DataError(
        f"{path}: cannot tell the proposal format from the extension; pass fmt= one of {', '.join(FORMATS[1:])}"
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:150] if text else ''}"


def _few(items: Sequence[str], n: int = 5) -> str:
    items = list(items)
    shown = ", ".join(repr(i) for i in items[:n])
    return shown + (f" ... ({len(items)} in all)" if len(items) > n else "")


def sanitize_proposals(
    raw: RawProposals,
    dataset=None,
    max_per_image: int = 2000,
    min_size: float = 0.0,
    source: str = "",
    allow_missing: bool = False,
) -> Tuple[RawProposals, Dict[str, int]]:
    """Check and clean proposals; returns ``(clean, report)``.

    With a dataset: ids must match (none matching, or dataset images missing from the file,
    is a DataError naming a few; ids the dataset lacks are ignored and counted), boxes are
    clipped to the image and the result follows dataset order. Then, per image: non-finite or
    degenerate boxes (width or height <= 0) are dropped, boxes with a side < ``min_size`` are
    dropped, exact duplicates are dropped (first kept), and the top ``max_per_image`` are kept:
    by score (stable) when scores exist, else in file order. Images left empty are counted
    and logged, not an error.
    """
    where = f"{source}: " if source else ""
    report = {
        "images": 0,
        "extra_ids": 0,
        "missing_ids": 0,
        "empty_images": 0,
        "boxes_in": 0,
        "clipped": 0,
        "dropped_invalid": 0,
        "dropped_small": 0,
        "dropped_duplicate": 0,
        "dropped_topk": 0,
        "boxes_out": 0,
    }
    if dataset is not None:
        ds_ids = dataset.ids
        extra = [i for i in raw if i not in dataset]
        missing = [i for i in ds_ids if i not in raw]
        if ds_ids and len(missing) == len(ds_ids):
            raise DataError(
                f"{where}no proposal image id matches the dataset: file has {_few(list(raw))}; "
                f"dataset has {_few(ds_ids)}"
            )
        if missing and not allow_missing:
            raise DataError(f"{where}{len(missing)} dataset images have no entry in the proposal file: {_few(missing)}")
        report["extra_ids"], report["missing_ids"] = len(extra), len(missing)
        order = ds_ids
    else:
        order = list(raw)
    clean: RawProposals = {}
    for image_id in order:
        boxes, scores = raw.get(image_id, (np.zeros((0, 4), np.float32), None))
        boxes = np.asarray(boxes, dtype=np.float32)
        if boxes.size and (boxes.ndim != 2 or boxes.shape[1] != 4):
            raise DataError(f"{where}image '{image_id}': expected (N, 4) boxes, got {boxes.shape}")
        boxes = boxes.reshape(-1, 4)
        if scores is not None:
            scores = np.asarray(scores, dtype=np.float32).reshape(-1)
            if len(scores) != len(boxes):
                raise DataError(f"{where}image '{image_id}': {len(boxes)} boxes but {len(scores)} scores")
        report["boxes_in"] += len(boxes)
        keep = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if scores is not None:
            keep &= np.isfinite(scores)
        report["dropped_invalid"] += int((~keep).sum())
        boxes, scores = boxes[keep], None if scores is None else scores[keep]
        if dataset is not None:
            rec = dataset.get(image_id)
            clipped = clip_boxes(boxes, rec.width, rec.height)
            report["clipped"] += int(np.any(clipped != boxes, axis=1).sum())
            boxes = clipped
        keep = ((boxes[:, 2] - boxes[:, 0]) >= max(min_size, 1e-6)) & (
            (boxes[:, 3] - boxes[:, 1]) >= max(min_size, 1e-6)
        )
        report["dropped_small"] += int((~keep).sum())
        boxes, scores = boxes[keep], None if scores is None else scores[keep]
        _, first = np.unique(boxes, axis=0, return_index=True)
        first = np.sort(first)
        report["dropped_duplicate"] += len(boxes) - len(first)
        boxes, scores = boxes[first], None if scores is None else scores[first]
        if scores is not None:
            order_idx = np.argsort(-scores, kind="stable")
            boxes, scores = boxes[order_idx], scores[order_idx]
        if max_per_image and len(boxes) > max_per_image:
            report["dropped_topk"] += len(boxes) - max_per_image
            boxes, scores = boxes[:max_per_image], None if scores is None else scores[:max_per_image]
        if len(boxes) == 0:
            report["empty_images"] += 1
        report["boxes_out"] += len(boxes)
        clean[image_id] = (np.ascontiguousarray(boxes, dtype=np.float32), scores)
    report["images"] = len(clean)
    log_report(where, report)
    return clean, report


def log_report(where: str, r: Dict[str, int]) -> None:
    """Log, as warnings, what :func:`sanitize_proposals` dropped (``where`` prefixes each line)."""
    if r["empty_images"]:
        logger.warning("%s%d of %d images have no proposals", where, r["empty_images"], r["images"])
    if r["dropped_invalid"]:
        logger.warning(
            "%sdropped %d of %d boxes with a non-finite, empty or inverted coordinate (or a non-finite score)",
            where,
            r["dropped_invalid"],
            r["boxes_in"],
        )
    if r["extra_ids"]:
        logger.info("%s%d ids in the file are not in the dataset (ignored)", where, r["extra_ids"])
    dropped = {k: v for k, v in r.items() if (k.startswith("dropped_") or k == "clipped") and v}
    if dropped:
        logger.info("%sproposal clean-up: %s", where, ", ".join(f"{k}={v}" for k, v in dropped.items()))


def has_any_scores(proposals: RawProposals) -> bool:
    """True when every image carries scores (so a store can hold them)."""
    return bool(proposals) and all(s is not None for _, s in proposals.values())


def write_store(path: Union[str, Path], proposals: RawProposals, meta: Optional[Dict] = None) -> Path:
    """Save a ``{id: (boxes, scores)}`` dict as a native store (scores kept if every image has them)."""
    ids = list(proposals)
    boxes = [proposals[i][0] for i in ids]
    scores = [proposals[i][1] for i in ids] if has_any_scores(proposals) else None
    return save_proposals(path, ids, boxes, scores, meta=meta)


def convert_to_store(
    path: Union[str, Path],
    out: Union[str, Path],
    dataset=None,
    allow_pickle: bool = False,
    fmt: str = "auto",
    max_per_image: int = 0,
    min_size: float = 0.0,
    allow_missing: bool = False,
) -> Dict[str, int]:
    """Read any supported format, sanitize (against ``dataset`` when given), write a native store.

    Returns the sanitize report. ``max_per_image=0`` keeps every box.
    """
    raw = load_proposals(path, dataset=dataset, allow_pickle=allow_pickle, fmt=fmt)
    clean, report = sanitize_proposals(
        raw, dataset, max_per_image=max_per_image, min_size=min_size, source=str(path), allow_missing=allow_missing
    )
    write_store(
        out,
        clean,
        meta={
            "source": str(path),
            "source_format": fmt if fmt != "auto" else detect_format(path),
            "max_per_image": max_per_image,
            "min_size": min_size,
        },
    )
    return report
