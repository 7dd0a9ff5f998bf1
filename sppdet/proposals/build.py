"""Proposals for a dataset: computed (cached, resumable, parallel) or read from a file.

:func:`get_proposals` is what training and inference call. It returns a
:class:`~sppdet.proposals.store.ProposalStore` covering every image of the dataset, in the
native format, from a cache file named after what determines its content::

    <cache>/<dataset>-<split>-<method>-<key>.npz     key = hash(method, parameters, dataset ids
                                                            [, source file size + mtime])

so changing a parameter, the image list or the source file gives a new key and a fresh cache.
``<cache>`` is ``proposals.cache_dir``, else ``<output_dir>/proposals``.

Computing is resumable: finished images are written every ``chunk_size`` images, atomically,
as small stores in a side folder ``<cache file>.partial/``; a killed run loses at most one
chunk and the next run computes only what is missing. The side folder is removed once the
final store is written.

Under ``torchrun`` every rank calls :func:`get_proposals` together: the images still missing are
sharded over the ranks (rank ``r`` of ``w`` computes every ``w``-th one, with its own
``proposals.workers`` processes), each rank writes its own chunks, and after a barrier rank 0
writes the store, which the other ranks then open. The cache folder must therefore be on a
filesystem every rank sees (a shared one for several nodes); a missing image is a clear error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import time
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
from tqdm import tqdm

from ..config import Config, ProposalConfig, ProposalMethod, choices
from ..data.image_io import read_image
from ..errors import ConfigError, DataError
from ..structures import clip_boxes
from ..utils import comm as du
from .edge_boxes import edge_boxes
from .io import RawProposals, load_proposals, log_report, sanitize_proposals, write_store
from .selective_search import selective_search
from .store import ProposalStore, save_proposals

logger = logging.getLogger(__name__)

METHODS = tuple(m for m in choices(ProposalMethod) if m != "file")  # computed methods; config.py lists them
#: Bump when a generator's output changes for the same parameters (invalidates caches).
ALGORITHM_VERSION = 1


def compute_proposals(
    image_rgb: np.ndarray, method: str, cfg: ProposalConfig
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Proposals for one RGB image: ``(boxes float32 (N, 4) ours, scores (N,) or None)``.

    ``method``: ``"ss-fast"``, ``"ss-quality"`` (Selective Search, no scores: ranking order)
    or ``"edgeboxes"`` (scores). Uses ``cfg.max_side``, ``cfg.max_per_image``, ``cfg.min_size``
    and, for EdgeBoxes, ``cfg.edge_model``.
    """
    if method in ("ss-fast", "ss-quality"):
        boxes = selective_search(
            image_rgb, mode=method[3:], max_side=cfg.max_side, max_boxes=cfg.max_per_image, min_size=cfg.min_size
        )
        return boxes, None
    if method == "edgeboxes":
        return edge_boxes(
            image_rgb,
            max_boxes=cfg.max_per_image,
            model_path=cfg.edge_model,
            max_side=cfg.max_side,
            min_size=cfg.min_size,
        )
    raise ConfigError(f"proposals.method: unknown method '{method}' (use 'file' or one of {', '.join(METHODS)})")


# ---------------------------------------------------------------------------------------
# cache keys


def ids_hash(ids: Iterable[str]) -> str:
    """sha1 of the image id list (order matters)."""
    return hashlib.sha1("\n".join(ids).encode("utf-8")).hexdigest()


def _key(parts: Dict) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _method_params(method: str, pcfg: ProposalConfig) -> Dict:
    params = {
        "method": method,
        "max_per_image": pcfg.max_per_image,
        "min_size": pcfg.min_size,
        "max_side": pcfg.max_side,
        "version": ALGORITHM_VERSION,
    }
    if method == "edgeboxes":
        params["edge_model"] = _file_signature(pcfg.edge_model) if pcfg.edge_model else ""
    return params


def _file_signature(path: str) -> Dict:
    """Identity of a source file or folder: resolved path, sizes and modification times."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: proposal source not found")
    files = sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else [p]
    stats = [(q.name, q.stat().st_size, q.stat().st_mtime_ns) for q in files]
    return {"path": str(p.resolve()), "files": hashlib.sha1(repr(stats).encode()).hexdigest()}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "dataset"


def cache_folder(cfg: Config, output_dir: Optional[Union[str, Path]] = None) -> Path:
    """``proposals.cache_dir``, else ``<output_dir or cfg.output_dir>/proposals``."""
    if cfg.proposals.cache_dir:
        return Path(cfg.proposals.cache_dir)
    return Path(output_dir or cfg.output_dir) / "proposals"


def _open_cached(path: Path, key: str, ids: List[str]) -> Optional[ProposalStore]:
    if not path.is_file():
        return None
    try:
        store = ProposalStore(path)
        store.verify()
    except DataError as e:
        logger.warning("ignoring unreadable proposal cache (%s); recomputing", e)
        return None
    if store.meta.get("key") != key or store.ids != ids:
        logger.warning("%s: stale proposal cache (parameters or image list changed); recomputing", path)
        return None
    return store


# ---------------------------------------------------------------------------------------
# computing, resumable


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one image per process: no nested threading


def _compute_one(task: Tuple[str, str, int, int, str, ProposalConfig]):
    image_id, file_name, width, height, method, pcfg = task

    image = read_image(file_name)
    boxes, scores = compute_proposals(image, method, pcfg)
    h, w = image.shape[:2]
    if (w, h) != (width, height):  # annotation size disagrees with the pixels: keep boxes inside both
        boxes = clip_boxes(boxes, min(w, width), min(h, height))
    return image_id, boxes, scores


def _read_partial(folder: Path, key: str) -> RawProposals:
    done: RawProposals = {}
    if not folder.is_dir():
        return done
    for chunk in sorted(folder.glob("chunk-*.npz")):
        try:
            store = ProposalStore(chunk)
            store.verify()
        except DataError as e:
            logger.warning("skipping damaged partial chunk %s (%s)", chunk.name, e)
            continue
        if store.meta.get("key") != key:
            continue
        done.update(store.to_dict())
    return done


def _write_chunk(folder: Path, key: str, items: List[Tuple[str, np.ndarray, Optional[np.ndarray]]]) -> None:
    if not items:
        return
    n = len(list(folder.glob("chunk-*.npz")))
    name = folder / f"chunk-{n:06d}-r{du.get_rank()}-{os.getpid()}-{int(time.time() * 1000) % 10**9}.npz"
    scores = [s for _, _, s in items]
    save_proposals(
        name,
        [i for i, _, _ in items],
        [b for _, b, _ in items],
        scores if all(s is not None for s in scores) else None,
        meta={"key": key},
    )


def compute_dataset_proposals(
    dataset,
    method: str,
    pcfg: ProposalConfig,
    out_path: Union[str, Path],
    key: str = "",
    meta: Optional[Dict] = None,
    chunk_size: int = 32,
    progress: bool = True,
) -> ProposalStore:
    """Compute ``method`` proposals for every image of ``dataset`` into the native store ``out_path``.

    Parallel over images (``pcfg.workers`` processes, 0 = this process); resumable through
    the side folder ``<out_path>.partial/`` (module docstring). Returns the opened store.
    Under torchrun every rank must call it: images are sharded, rank 0 writes the store.
    """
    if method not in METHODS:
        raise ConfigError(f"proposals.method: unknown method '{method}' (use one of {', '.join(METHODS)})")
    out_path = Path(out_path)
    key = key or _key({"params": _method_params(method, pcfg), "ids": ids_hash(dataset.ids)})
    partial = out_path.parent / (out_path.name + ".partial")
    done = _read_partial(partial, key)
    du.barrier()  # every rank sees the same finished set before any rank adds to it
    todo = [(r.image_id, r.file_name, r.width, r.height, method, pcfg) for r in dataset if r.image_id not in done]
    if done:
        logger.info("resuming proposals: %d images done, %d to go", len(done), len(todo))
    mine = todo[du.get_rank() :: du.get_world_size()]
    if mine:
        partial.mkdir(parents=True, exist_ok=True)
        _run_tasks(mine, pcfg.workers, partial, key, done, chunk_size, progress and du.is_main_process(), method)
    if du.get_world_size() > 1:
        du.barrier()  # every rank's chunks are written
        done = _read_partial(partial, key) if du.is_main_process() else done
    if du.is_main_process():
        ids = dataset.ids
        missing = [i for i in ids if i not in done]
        if missing:
            raise DataError(
                f"{partial}: proposals of {len(missing)} image(s) (e.g. {missing[0]}) were computed "
                f"by other ranks but are not visible here; under torchrun on several nodes the "
                f"proposal cache folder must be on a shared filesystem (proposals.cache_dir)"
            )
        results = {i: done[i] for i in ids}
        write_store(
            out_path,
            results,
            meta={
                "key": key,
                "method": method,
                **(meta or {}),
                "params": _method_params(method, pcfg),
                "ids_sha1": ids_hash(ids),
            },
        )
        shutil.rmtree(partial, ignore_errors=True)
    du.barrier()  # the store is complete before the other ranks open it
    return ProposalStore(out_path)


def _run_tasks(
    todo, workers: int, partial: Path, key: str, done: RawProposals, chunk_size: int, progress: bool, method: str
) -> None:
    buffer: List = []
    bar = tqdm(
        total=len(todo), desc=f"proposals ({method})", unit="img", disable=not progress or None, dynamic_ncols=True
    )
    pool = None
    old_threads = cv2.getNumThreads()
    try:
        if workers and workers > 0 and len(todo) > 1:
            # spawn, not fork: forking a process whose OpenMP/opencv thread pools are running
            # can deadlock the children (seen with cv2 after image generation in the same process)
            ctx = multiprocessing.get_context("spawn")
            pool = ctx.Pool(min(workers, len(todo)), initializer=_worker_init)
            results: Iterator = pool.imap(_compute_one, todo, chunksize=max(1, min(4, len(todo) // (workers * 8) or 1)))
        else:
            cv2.setNumThreads(1)
            results = map(_compute_one, todo)
        for image_id, boxes, scores in results:
            done[image_id] = (boxes, scores)
            buffer.append((image_id, boxes, scores))
            bar.update(1)
            if len(buffer) >= chunk_size:
                _write_chunk(partial, key, buffer)
                buffer = []
    finally:
        _write_chunk(partial, key, buffer)  # also on Ctrl-C: keep what is finished
        bar.close()
        cv2.setNumThreads(old_threads)
        if pool is not None:
            pool.terminate()
            pool.join()


# ---------------------------------------------------------------------------------------
# the entry point used by training and inference


def get_proposals(
    cfg: Config, dataset, split: str, output_dir: Optional[Union[str, Path]] = None, progress: bool = True
) -> ProposalStore:
    """A :class:`ProposalStore` covering every image of ``dataset`` (module docstring).

    ``cfg.proposals.method == "file"``: read ``train_file`` (split ``"train"``) or ``test_file``
    (any supported format, :func:`~sppdet.proposals.io.load_proposals`), sanitize it against
    the dataset (clip, drop invalid/small/duplicate boxes, top ``max_per_image``) and cache it
    natively. Otherwise compute ``cfg.proposals.method`` for every image (cached, resumable).
    """
    pcfg = cfg.proposals
    folder = cache_folder(cfg, output_dir)
    ids = dataset.ids
    dname = _safe(dataset.name or "dataset")
    if pcfg.method == "file":
        source = pcfg.train_file if split == "train" else pcfg.test_file
        field = "train_file" if split == "train" else "test_file"
        if not source:
            raise ConfigError(f"proposals.method is 'file' but proposals.{field} is empty")
        params = {
            "source": _file_signature(source),
            "max_per_image": pcfg.max_per_image,
            "min_size": pcfg.min_size,
            "version": ALGORITHM_VERSION,
        }
        key = _key({"params": params, "ids": ids_hash(ids)})
        path = folder / f"{dname}-{split}-file-{key}.npz"
        # under torchrun rank 0 converts the file (cheap next to computing) while the others wait
        store = _file_store(path, key, dataset, source, pcfg) if du.is_main_process() else None
        du.barrier()
        return store if store is not None else ProposalStore(path)
    key = _key({"params": _method_params(pcfg.method, pcfg), "ids": ids_hash(ids)})
    path = folder / f"{dname}-{split}-{pcfg.method}-{key}.npz"
    cached = _open_cached(path, key, ids) if du.is_main_process() else None
    if du.broadcast_object(cached is not None):  # rank 0 decides, so every rank takes the same branch
        logger.info("using cached proposals %s", path)
        return cached if cached is not None else ProposalStore(path)
    logger.info("computing %s proposals for %d images -> %s", pcfg.method, len(dataset), path)
    return compute_dataset_proposals(
        dataset, pcfg.method, pcfg, path, key=key, meta={"split": split, "dataset": dataset.name}, progress=progress
    )


def _file_store(path: Path, key: str, dataset, source: str, pcfg: ProposalConfig) -> ProposalStore:
    """The native cache of a proposal file for ``dataset``: reused when current, else converted."""
    cached = _open_cached(path, key, dataset.ids)
    if cached is not None:
        logger.info("using proposals from %s (cleaned copy: %s)", source, path)
        if isinstance(cached.meta.get("report"), dict):
            log_report(f"{source}: ", cached.meta["report"])  # repeat what the clean-up dropped
        return cached
    logger.info("reading proposals from %s", source)
    raw = load_proposals(source, dataset=dataset, allow_pickle=pcfg.allow_pickle)
    clean, report = sanitize_proposals(raw, dataset, pcfg.max_per_image, pcfg.min_size, source=source)
    write_store(
        path,
        clean,
        meta={"key": key, "method": "file", "source": str(source), "report": report, "ids_sha1": ids_hash(dataset.ids)},
    )
    return ProposalStore(path)
