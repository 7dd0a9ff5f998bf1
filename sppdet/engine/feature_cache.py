"""The paper recipe's feature cache: the conv feature map of every training image view, on disk.

The conv layers stay fixed, so each training image (and its mirror image when
``train.paper.flip``) goes through the backbone once per scale of ``input.train_scales``, and
its conv map is stored in float16, channels last. The windows (ground-truth boxes first, then
the top ``proposals.max_per_image`` proposals) are small per-view metadata; a window's
region-SPP (pool5) vector is pooled from the cached map whenever a later stage needs it
(:meth:`FeatureCache.pool`), at the scale where its area is closest to
``input.target_size ** 2`` (the paper's multi-scale rule, :func:`assign_scales`). So the cache
holds ``C x H/16 x W/16`` numbers per view and scale instead of ``D = C x sum(n*n)`` per window:
for ZF-5 on a VOC image at 688 px about 1.3 MB instead of 51 MB.

Layout (``<cache_dir>/``)::

    shards/<name>.npy   float16, 1-D: the view's maps, one per scale, each (H_s, W_s, C)
                        flattened and concatenated; memory-mapped when read
    shards/<name>.npz   that view's windows: boxes (N, 4) (in the view's pixels, x mirrored for
                        a flipped view), max_iou (N,), gt_label (N,) (label of the best-overlapping
                        ground truth, 0 when none), gt_index (N,) (-1 when none), is_gt (N,),
                        gt_boxes (G, 4), gt_labels (G,); map_shapes (S, 3) and factors (S,) (the
                        resize factor of each scale); the shard key and the size and hashes of
                        the .npy
    meta.json           written LAST: settings fingerprint, channels, and per shard its key,
                        window count and the sizes and hashes of both files, and a checksum of itself

``<name>`` is a hash of the image id, plus ``_flip`` for the mirrored view. Every file is written
atomically (temp + rename), the ``.npy`` before the ``.npz`` that vouches for it, so a kill -9
loses at most the image being written and ``--resume`` continues with the next.

Integrity: a shard's *key* hashes the cache settings (backbone and its weights, input scales,
proposal settings...), the image's ground truth, its proposals and the view. A shard is valid
when its ``.npz`` loads, carries the expected key, and the ``.npy`` has the recorded size and
hash. Opening checks ``meta.json`` (checksum, fingerprint) and every file's size, the ``.npz``
hashes and a sampled hash of each ``.npy`` (its first and last 64 KiB and 16 blocks in between;
``verify="full"`` hashes every byte). A stale cache (other settings, backbone weights, proposals
or images) or a damaged one is rebuilt, reusing the shards that are still valid. The SPP levels
and the fc layers are not part of the key: the maps do not depend on them.

Under ``torchrun`` every rank calls :func:`build_feature_cache` together: rank 0 decides whether
the cache is reused, the images are sharded over the ranks (both views of an image on the same
rank), each rank writes its own shards (atomically, as above), and after the ranks' shard records
are gathered rank 0 writes ``meta.json``; the others then open the finished cache. The cache
folder must be on a filesystem every rank sees.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import SppdetError
from ..fileio import atomic_write, save_json
from ..modeling.features import assign_scales, image_scale_factors
from ..structures import box_iou, clip_boxes, hflip_boxes, valid_boxes_mask
from ..utils import comm as du

log = logging.getLogger("sppdet.paper")

FORMAT = "sppdet-feature-cache"
VERSION = 2
META = "meta.json"
SHARDS = "shards"
#: Memory maps kept open while reading (least recently used ones are closed).
MAX_OPEN = 256
#: Largest float16 value: a map beyond it cannot be cached.
FP16_MAX = 65000.0
_WINDOW_FIELDS = ("boxes", "max_iou", "gt_label", "gt_index", "is_gt", "gt_boxes", "gt_labels")
_VIEW_FIELDS = ("map_shapes", "factors")


class CacheError(SppdetError):
    """The feature cache is missing, stale or damaged (it is rebuilt where possible)."""


# ---------------------------------------------------------------------------------------
# Hashing


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def file_sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sampled_sha1(path: Path, size: Optional[int] = None) -> str:
    """Hash of a file's first and last 64 KiB and 16 evenly spaced 4 KiB blocks (all of it
    when smaller than 1 MiB): cheap, and catches truncation, zero-filled and rewritten files."""
    size = os.path.getsize(path) if size is None else size
    if size < (1 << 20):
        return file_sha1(path)
    h = hashlib.sha1(str(size).encode())
    with open(path, "rb") as f:
        offsets = [0] + [int(size * i / 17) for i in range(1, 17)] + [size - (1 << 16)]
        for off in offsets:
            f.seek(off)
            h.update(f.read(1 << 16 if off in (0, size - (1 << 16)) else 4096))
    return h.hexdigest()


def _array_sha1(*arrays: np.ndarray) -> str:
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def module_sha1(module: torch.nn.Module) -> str:
    """Hash of a module's state (parameters and buffers): identifies backbone weights."""
    h = hashlib.sha1()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_settings(cfg, model: torch.nn.Module) -> Dict:
    """Everything besides the images and proposals that the cached maps and windows depend on."""
    m, i, p = cfg.model, cfg.input, cfg.proposals
    backbone: Any = model.backbone
    return {
        "format": FORMAT,
        "version": VERSION,
        "backbone": m.backbone,
        "tiny_width": m.tiny_width,
        "weights": m.weights,
        "normalization": m.normalization,
        "feature_stride": m.feature_stride,
        "reduce_channels": m.reduce_channels,
        "train_scales": list(i.train_scales),
        "max_size": i.max_size,
        "max_per_image": p.max_per_image,
        "exclude_difficult": cfg.data.exclude_difficult,
        "classes": list(cfg.data.classes),
        "backbone_sha1": module_sha1(backbone),
        "channels": int(backbone.out_channels),
    }


# ---------------------------------------------------------------------------------------
# Windows of one image


def image_windows(
    rec, proposals: np.ndarray, max_per_image: int, exclude_difficult: bool, width: int, height: int
) -> Dict[str, np.ndarray]:
    """The windows cached for one image: ground truth first, then the top proposals.

    Proposals are clipped to the image and degenerate ones dropped (as at test time).
    """
    keep = rec.training_mask(exclude_difficult)
    gt = np.asarray(rec.boxes[keep], dtype=np.float32).reshape(-1, 4)
    gt_labels = np.asarray(rec.labels[keep], dtype=np.int64)
    props = np.asarray(proposals, dtype=np.float32).reshape(-1, 4)
    if max_per_image > 0:
        props = props[:max_per_image]
    props = clip_boxes(props, width, height)
    props = props[valid_boxes_mask(props, 0.0)]
    boxes = np.concatenate([gt, props]).astype(np.float32)
    n = len(boxes)
    if len(gt):
        iou = box_iou(boxes, gt)
        gt_index = iou.argmax(1).astype(np.int64)
        max_iou = iou.max(1).astype(np.float32)
        gt_label = gt_labels[gt_index]
    else:
        gt_index = -np.ones(n, np.int64)
        max_iou = np.zeros(n, np.float32)
        gt_label = np.zeros(n, np.int64)
    is_gt = np.zeros(n, bool)
    is_gt[: len(gt)] = True
    return {
        "boxes": boxes,
        "max_iou": max_iou,
        "gt_label": gt_label,
        "gt_index": gt_index,
        "is_gt": is_gt,
        "gt_boxes": gt,
        "gt_labels": gt_labels,
    }


def _shard_name(image_id: str, flip: bool) -> str:
    return _sha1(image_id.encode())[:20] + ("_flip" if flip else "")


# ---------------------------------------------------------------------------------------
# Reading


@dataclass
class ShardInfo:
    name: str
    image_id: str
    flip: bool
    key: str
    windows: int


class FeatureCache:
    """Read side of a complete cache (open with :meth:`open`).

    Attributes:
        channels: C, the channels of a conv map.
        scales: S, the number of cached scales.
        target_size: the multi-scale rule's target (each window at the scale where its area is
            closest to ``target_size ** 2``).
        shards: one :class:`ShardInfo` per image view, in build order.
        index: concatenated windows of all shards: ``shard (W,)``, ``row (W,)``, ``boxes (W, 4)``,
            ``max_iou (W,)``, ``gt_label (W,)``, ``gt_box (W, 4)`` (the best-overlapping ground
            truth, zeros when none), ``is_gt (W,)``, ``scale (W,)`` (the scale it is pooled at).
    """

    def __init__(self, folder: Path, meta: Dict, target_size: float = 224.0) -> None:
        self.folder = Path(folder)
        self.meta = meta
        self.channels = int(meta["channels"])
        self.scales = len(meta["settings"]["train_scales"])
        self.target_size = float(target_size)
        self.fingerprint = meta["fingerprint"]
        self.shards = [
            ShardInfo(s["name"], s["image_id"], bool(s["flip"]), s["key"], int(s["windows"])) for s in meta["shards"]
        ]
        self.reused = False  # set when build_feature_cache found it complete and current
        self._maps: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self._windows = [self._load_windows(i) for i in range(len(self.shards))]
        self.index = self._build_index()

    def __len__(self) -> int:
        return len(self.shards)

    @property
    def num_windows(self) -> int:
        return len(self.index["shard"])

    @property
    def nbytes(self) -> int:
        """Bytes on disk (maps and window files)."""
        return int(sum(s["npy_bytes"] + s["npz_bytes"] for s in self.meta["shards"]))

    def _path(self, i: int, ext: str) -> Path:
        return self.folder / SHARDS / f"{self.shards[i].name}.{ext}"

    def _load_windows(self, i: int) -> Dict[str, np.ndarray]:
        with np.load(self._path(i, "npz"), allow_pickle=False) as z:
            return {k: z[k] for k in _WINDOW_FIELDS + _VIEW_FIELDS}

    def windows(self, i: int) -> Dict[str, np.ndarray]:
        """Window arrays of shard ``i`` (see module docstring)."""
        return self._windows[i]

    def maps(self, i: int) -> List[np.ndarray]:
        """Memory-mapped float16 conv maps ``(H_s, W_s, C)`` of shard ``i``, one per scale."""
        flat = self._maps.get(i)
        if flat is None:
            flat = np.load(self._path(i, "npy"), mmap_mode="r")
            self._maps[i] = flat
            if len(self._maps) > MAX_OPEN:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(i)
        out, at = [], 0
        for h, w, c in self._windows[i]["map_shapes"].tolist():
            out.append(flat[at : at + h * w * c].reshape(h, w, c))
            at += h * w * c
        return out

    @torch.no_grad()
    def pool(self, model, windows: np.ndarray, device="cpu") -> torch.Tensor:
        """float32 ``(B, D)`` region-SPP vectors of windows given as global indices into
        :attr:`index`, pooled from the cached maps with ``model.pool`` (in the requested order).

        The views involved are stacked (zero-padded bottom/right, as a live batch is) per scale;
        only the scales their windows use are loaded.
        """
        windows = np.asarray(windows, dtype=np.int64)
        views, local = np.unique(self.index["shard"][windows], return_inverse=True)
        if len(windows) == 0:
            return torch.zeros((0, model.spp_dim))
        used = np.unique(self.index["scale"][windows])
        feats: List[torch.Tensor] = []
        for s in range(self.scales):
            if s not in used:  # never read: a 1x1 placeholder keeps the scale indices
                feats.append(torch.zeros((len(views), self.channels, 1, 1), device=device))
                continue
            maps = [self.maps(int(v))[s] for v in views]
            h, w = max(m.shape[0] for m in maps), max(m.shape[1] for m in maps)
            batch = np.zeros((len(views), h, w, self.channels), dtype=np.float32)
            for j, m in enumerate(maps):
                batch[j, : m.shape[0], : m.shape[1]] = m
            # NHWC storage seen as NCHW: the channels-last layout region SPP reads fastest
            feats.append(torch.from_numpy(batch).permute(0, 3, 1, 2).to(device))
        factors = torch.from_numpy(np.stack([self._windows[int(v)]["factors"] for v in views]).astype(np.float64))
        boxes = torch.from_numpy(self.index["boxes"][windows])
        rois = torch.cat([torch.from_numpy(local.astype(np.float32))[:, None], boxes], 1).to(device)
        return model.pool(feats, factors, rois, self.target_size).float()

    def pool_view(self, model, i: int, rows: Optional[np.ndarray] = None, device="cpu") -> torch.Tensor:
        """float32 ``(N, D)`` vectors of shard ``i``'s windows (all, or ``rows``)."""
        first = int(np.searchsorted(self.index["shard"], i))
        rows = np.arange(self.shards[i].windows) if rows is None else np.asarray(rows)
        return self.pool(model, first + rows, device)

    def _build_index(self) -> Dict[str, np.ndarray]:
        parts: Dict[str, List[np.ndarray]] = {
            k: [] for k in ("shard", "row", "boxes", "max_iou", "gt_label", "gt_box", "is_gt", "scale")
        }
        for i, w in enumerate(self._windows):
            n = len(w["boxes"])
            parts["shard"].append(np.full(n, i, np.int32))
            parts["row"].append(np.arange(n, dtype=np.int32))
            gt_box = np.zeros((n, 4), np.float32)
            has = w["gt_index"] >= 0
            gt_box[has] = w["gt_boxes"][w["gt_index"][has]]
            parts["gt_box"].append(gt_box)
            for k in ("boxes", "max_iou", "gt_label", "is_gt"):
                parts[k].append(w[k])
            factors = torch.from_numpy(np.asarray(w["factors"], np.float64)).expand(n, -1)
            level = assign_scales(torch.from_numpy(w["boxes"]), factors, self.target_size)  # as model.pool does
            parts["scale"].append(level.numpy().astype(np.int8))
        out = {}
        for k, v in parts.items():
            out[k] = np.concatenate(v) if v else np.zeros((0, 4) if k in ("boxes", "gt_box") else (0,))
        return out

    # -- opening and checking ----------------------------------------------------------
    @classmethod
    def open(
        cls, folder, fingerprint: Optional[str] = None, verify: str = "quick", target_size: float = 224.0
    ) -> "FeatureCache":
        """Open a complete cache; :class:`CacheError` says why one is absent, stale or damaged.

        ``verify``: "none" (meta only), "quick" (sizes, hashes of small files, sampled hash of
        feature files) or "full" (every byte hashed).
        """
        folder = Path(folder)
        meta = read_meta(folder)
        if fingerprint is not None and meta["fingerprint"] != fingerprint:
            raise CacheError(f"{folder}: stale (built with other settings, weights, images or proposals)")
        if verify != "none":
            bad = [s["name"] for s in meta["shards"] if not _shard_files_ok(folder, s, full=verify == "full")]
            if bad:
                raise CacheError(f"{folder}: {len(bad)} damaged shard(s), e.g. {bad[0]}")
        return cls(folder, meta, target_size)


def _checksum(meta: Dict) -> str:
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return _sha1(json.dumps(body, sort_keys=True).encode())


def read_meta(folder: Path) -> Dict:
    path = Path(folder) / META
    if not path.is_file():
        raise CacheError(f"{folder}: no complete cache ({META} missing)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CacheError(f"{path}: unreadable ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CacheError(f"{path}: not a {FORMAT} v{VERSION} file")
    if meta.get("checksum") != _checksum(meta):
        raise CacheError(f"{path}: checksum mismatch (edited or damaged)")
    return meta


def _shard_files_ok(folder: Path, s: Dict, full: bool = False) -> bool:
    base = folder / SHARDS / s["name"]
    npy, npz = base.with_name(base.name + ".npy"), base.with_name(base.name + ".npz")
    try:
        if os.path.getsize(npy) != s["npy_bytes"] or os.path.getsize(npz) != s["npz_bytes"]:
            return False
        if file_sha1(npz) != s["npz_sha1"]:
            return False
        if full:
            return file_sha1(npy) == s["npy_sha1"]
        return sampled_sha1(npy) == s["npy_sample"]
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# Building


@dataclass
class _Job:
    index: int  # dataset index
    image_id: str
    flip: bool
    key: str
    name: str


def _shard_record(folder: Path, job: _Job) -> Optional[Dict]:
    """The meta entry of an existing valid shard for ``job``, or None."""
    base = folder / SHARDS / job.name
    npy, npz = base.with_name(base.name + ".npy"), base.with_name(base.name + ".npz")
    if not (npy.is_file() and npz.is_file()):
        return None
    try:
        with np.load(npz, allow_pickle=False) as z:
            if str(z["key"]) != job.key:
                return None
            rec = {
                "npy_bytes": int(z["npy_bytes"]),
                "npy_sha1": str(z["npy_sha1"]),
                "npy_sample": str(z["npy_sample"]),
                "windows": int(len(z["boxes"])),
            }
        size = os.path.getsize(npy)
        if size != rec["npy_bytes"] or sampled_sha1(npy, size) != rec["npy_sample"]:
            return None
    except Exception:  # any unreadable/partial file just means "recompute this shard"
        return None
    return _complete_record(rec, job, npz)


def _complete_record(rec: Dict, job: _Job, npz: Path) -> Dict:
    """A shard's index record: ``rec`` (its .npy facts) plus the job's identity and the .npz's size and hash."""
    rec.update(
        name=job.name,
        image_id=job.image_id,
        flip=job.flip,
        key=job.key,
        npz_bytes=os.path.getsize(npz),
        npz_sha1=file_sha1(npz),
    )
    return rec


def _write_shard(
    folder: Path, job: _Job, maps: Sequence[np.ndarray], factors: Sequence[float], windows: Dict[str, np.ndarray]
) -> Dict:
    base = folder / SHARDS / job.name
    npy, npz = base.with_name(base.name + ".npy"), base.with_name(base.name + ".npz")
    flat = np.concatenate([m.reshape(-1) for m in maps]).astype(np.float16, copy=False)
    with atomic_write(npy, "wb") as f:
        np.save(f, flat, allow_pickle=False)
    size = os.path.getsize(npy)
    rec = {
        "npy_bytes": size,
        "npy_sha1": file_sha1(npy),
        "npy_sample": sampled_sha1(npy, size),
        "windows": int(len(windows["boxes"])),
    }
    arrays: Dict[str, Any] = dict(
        key=np.array(job.key),
        npy_bytes=np.array(size),
        npy_sha1=np.array(rec["npy_sha1"]),
        npy_sample=np.array(rec["npy_sample"]),
        map_shapes=np.array([m.shape for m in maps], dtype=np.int64).reshape(-1, 3),
        factors=np.asarray(factors, dtype=np.float64),
        **windows,
    )
    with atomic_write(npz, "wb") as f:
        np.savez(f, **arrays)
    return _complete_record(rec, job, npz)


@torch.no_grad()
def conv_maps(
    model, image: np.ndarray, scales: Sequence[int], max_size: int, flip: bool, device
) -> Tuple[List[np.ndarray], List[float]]:
    """float16 conv maps ``(H_s, W_s, C)`` of one image view at each scale, and the resize factors."""
    batch = model.prepare([image], scales, max_size, flips=[flip]).to(device)
    maps = []
    for feat in model.conv_features(batch):
        m = feat[0].float()
        if not torch.isfinite(m).all() or m.abs().max() > FP16_MAX:
            raise SppdetError(
                f"feature cache: conv features overflow float16 (|x| > {FP16_MAX:g}) or are not "
                "finite; check model.normalization and the backbone weights"
            )
        maps.append(m.permute(1, 2, 0).contiguous().cpu().numpy().astype(np.float16))
    return maps, [float(f) for f in batch.factors[0].tolist()]


def _jobs(dataset, proposals, cfg, settings_sha: str) -> Tuple[List[_Job], List[Tuple[int, int]]]:
    """One job per image view with its shard key; also each image's ``(height, width)``."""
    views = [False, True] if cfg.train.paper.flip else [False]
    jobs, sizes = [], []
    for i, rec in enumerate(dataset):
        props = np.asarray(proposals.boxes(rec.image_id), dtype=np.float32).reshape(-1, 4)
        if cfg.proposals.max_per_image > 0:
            props = props[: cfg.proposals.max_per_image]
        keep = rec.training_mask(cfg.data.exclude_difficult)
        gt_sha = _array_sha1(rec.boxes[keep], rec.labels[keep])
        sizes.append((max(1, int(rec.height)), max(1, int(rec.width))))
        for flip in views:
            key = _sha1(json.dumps([settings_sha, rec.image_id, gt_sha, _array_sha1(props), flip]).encode())
            jobs.append(_Job(i, rec.image_id, flip, key, _shard_name(rec.image_id, flip)))
    return jobs, sizes


def cache_fingerprint(settings: Dict, jobs: Sequence[_Job]) -> str:
    return _sha1(json.dumps([settings, [j.key for j in jobs]], sort_keys=True).encode())


def expected_fingerprint(model, dataset, proposals, cfg) -> str:
    """The fingerprint a cache of ``dataset`` built with ``model`` and ``cfg`` must carry."""
    settings = cache_settings(cfg, model)
    jobs, _ = _jobs(dataset, proposals, cfg, _sha1(json.dumps(settings, sort_keys=True).encode()))
    return cache_fingerprint(settings, jobs)


def map_bytes(
    sizes: Sequence[Tuple[int, int]], scales: Sequence[int], max_size: int, channels: int, stride: int
) -> int:
    """float16 bytes of the conv maps of images of ``(height, width)`` sizes at ``scales`` (one view
    each): ``C x ceil(h_s / stride) x ceil(w_s / stride) x 2`` per scale, as the backbone pads."""
    if not sizes:
        return 0
    factors = image_scale_factors(sizes, scales, max_size).numpy()
    hw = np.asarray(sizes, dtype=np.float64)
    total = 0
    for s in range(len(scales)):
        h = np.maximum(1, np.round(hw[:, 0] * factors[:, s]))
        w = np.maximum(1, np.round(hw[:, 1] * factors[:, s]))
        total += int((np.ceil(h / stride) * np.ceil(w / stride)).sum()) * channels * 2
    return total


def build_feature_cache(
    model, dataset, proposals, cfg, folder, device="cpu", resume: bool = True, progress: bool = True
) -> FeatureCache:
    """Build (or reuse, or repair) the feature cache of ``dataset`` in ``folder`` and open it.

    A complete cache with the same fingerprint that passes the quick check is reused as is.
    Otherwise each image view's shard is reused when valid (with ``resume``) or recomputed,
    stray files are removed and ``meta.json`` is written last.
    """
    from tqdm import tqdm

    from ..data.image_io import read_image

    t0 = time.time()
    folder = Path(folder)
    model.eval()
    target = float(cfg.input.target_size)
    settings = cache_settings(cfg, model)
    settings_sha = _sha1(json.dumps(settings, sort_keys=True).encode())
    jobs, sizes = _jobs(dataset, proposals, cfg, settings_sha)
    fingerprint = cache_fingerprint(settings, jobs)
    cache = _open_current(folder, fingerprint, target) if du.is_main_process() else None
    if du.broadcast_object(cache is not None):  # rank 0 decides: every rank takes the same branch
        if cache is None:
            cache = FeatureCache(folder, read_meta(folder), target)
        cache.reused = True
        return cache
    meta_path = folder / META
    if du.is_main_process():
        (folder / SHARDS).mkdir(parents=True, exist_ok=True)
        if meta_path.exists():
            meta_path.unlink()  # the cache is incomplete until a new meta.json is written
        _remove_temp_files(folder / SHARDS)
        views = len(jobs) // max(1, len(dataset))
        est = views * map_bytes(
            sizes, cfg.input.train_scales, cfg.input.max_size, settings["channels"], model.backbone.stride
        )
        _check_disk(folder, len(dataset), views, len(cfg.input.train_scales), est)
    du.barrier()

    records, reused = [], 0
    world, rank = du.get_world_size(), du.get_rank()
    mine = [job for job in jobs if job.index % world == rank]  # both views of an image on one rank
    bar = tqdm(
        mine, desc="feature cache", unit="view", disable=not (progress and du.is_main_process()), mininterval=1.0
    )
    image: Optional[np.ndarray] = None
    image_index = -1
    for job in bar:
        rec = _shard_record(folder, job) if resume else None
        if rec is not None:
            records.append(rec)
            reused += 1
            continue
        ds_rec = dataset[job.index]
        if image_index != job.index:
            image, image_index = read_image(ds_rec.file_name, cfg.input.max_image_pixels), job.index
        assert image is not None  # read above for the first job of each image
        h, w = image.shape[:2]
        win = image_windows(
            ds_rec, proposals.boxes(ds_rec.image_id), cfg.proposals.max_per_image, cfg.data.exclude_difficult, w, h
        )
        if job.flip:
            win["boxes"] = hflip_boxes(win["boxes"], w)
            win["gt_boxes"] = hflip_boxes(win["gt_boxes"], w)
        maps, factors = conv_maps(model, image, cfg.input.train_scales, cfg.input.max_size, job.flip, device)
        records.append(_write_shard(folder, job, maps, factors, win))
    bar.close()
    if world > 1:  # every rank's shards are written once their records arrive here
        parts = du.all_gather_object((records, reused))
        by_name = {r["name"]: r for part, _ in parts for r in part}
        records, reused = [by_name[j.name] for j in jobs], sum(n for _, n in parts)
    if du.is_main_process():
        if reused:
            log.info("feature cache: reused %d of %d shards", reused, len(jobs))
        _remove_stray_files(folder / SHARDS, {j.name for j in jobs})
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "fingerprint": fingerprint,
            "settings": settings,
            "channels": settings["channels"],
            "dtype": "float16",
            "num_windows": int(sum(r["windows"] for r in records)),
            "shards": records,
            "build_seconds": round(time.time() - t0, 2),
        }
        meta["checksum"] = _checksum(meta)
        save_json(meta, meta_path)
    du.barrier()  # meta.json is written: the cache is complete
    return FeatureCache(folder, meta if du.is_main_process() else read_meta(folder), target)


def _open_current(folder: Path, fingerprint: str, target_size: float) -> Optional[FeatureCache]:
    """The complete cache in ``folder`` when it has ``fingerprint`` and passes the quick check."""
    try:
        cache = FeatureCache.open(folder, fingerprint, verify="quick", target_size=target_size)
    except CacheError as e:
        if (folder / META).exists() or (folder / SHARDS).exists():
            log.warning("feature cache: %s; rebuilding (valid shards are reused with --resume)", e)
        return None
    log.info("feature cache: reusing %s (%d views, %d windows)", folder, len(cache), cache.num_windows)
    return cache


def _check_disk(folder: Path, images: int, views: int, scales: int, est: int) -> None:
    """Log the cache's size (computed from the map shapes); a clear error when the disk cannot hold it."""
    log.info(
        "feature cache: %d images x %d view(s) x %d scale(s), conv maps in float16 = %.3f GB -> %s",
        images,
        views,
        scales,
        est / 1e9,
        folder,
    )
    free = shutil.disk_usage(folder).free
    if est > free:
        raise SppdetError(
            f"feature cache needs ~{est / 1e9:.1f} GB but {folder} has {free / 1e9:.1f} GB free "
            f"(turn off train.paper.flip, use fewer input.train_scales or set train.paper.cache_dir)"
        )


def _remove_temp_files(shards: Path) -> None:
    for p in shards.glob(".*.tmp"):
        p.unlink(missing_ok=True)


def _remove_stray_files(shards: Path, names: set) -> None:
    for p in list(shards.glob("*.npy")) + list(shards.glob("*.npz")):
        if p.stem not in names:
            p.unlink(missing_ok=True)
