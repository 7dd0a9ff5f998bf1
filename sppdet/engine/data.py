"""Training input pipeline: images + proposals -> sampled windows, deterministic per sample.

Every random choice for a sample (scale, flip, window sampling) comes from a generator
seeded by ``(seed, position in the sample stream)``. The stream itself is a seeded
permutation per epoch. So a run resumed at iteration ``t`` sees exactly the samples an
uninterrupted run would, whatever the number of loader workers; under torchrun each rank
takes every ``world_size``-th sample of the same stream.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..config import Config
from ..data.augment import rotate_hue
from ..data.dataset import DetectionDataset
from ..data.image_io import read_image
from ..modeling.features import collate_images, prepare_image
from ..modeling.sampler import sample_windows
from ..structures import BoxCoder, hflip_boxes


def mix_seed(*values: int) -> int:
    """Stable 63-bit mix of integers (seeds must not depend on Python's hash salt)."""
    h = 1469598103934665603
    for v in values:
        h ^= int(v) & 0xFFFFFFFFFFFFFFFF
        h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


class SampleStream(Sampler):
    """Infinite stream of ``(image index, sample seed)``, starting at position ``start``.

    Position ``p`` of the stream is image ``perm_e[p % n]`` of epoch ``e = p // n``; rank ``r``
    of ``w`` takes positions ``start + r, start + r + w, ...``.
    """

    def __init__(self, num_images: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.n = num_images
        self.seed = seed
        self.start = start
        self.rank = rank
        self.world_size = world_size

    def _perm(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        pos = self.start + self.rank
        epoch, perm = -1, torch.empty(0, dtype=torch.int64)
        while True:
            e = pos // self.n
            if e != epoch:
                epoch, perm = e, self._perm(e)
            yield int(perm[pos % self.n]), mix_seed(self.seed, pos, 7)
            pos += self.world_size


class WindowDataset(Dataset):
    """Map ``(image index, sample seed)`` to one training sample (see module docstring)."""

    def __init__(self, dataset: DetectionDataset, proposals, cfg: Config, normalization: str) -> None:
        self.dataset = dataset
        self.proposals = proposals
        self.cfg = cfg
        self.normalization = normalization
        self.box_coder = BoxCoder(cfg.model.box_weights)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]) -> Dict:
        index, seed = key
        rec = self.dataset[index]
        g = torch.Generator().manual_seed(seed)
        tc = self.cfg.train
        image = read_image(rec.file_name, self.cfg.input.max_image_pixels)
        h, w = image.shape[:2]
        scales = self.cfg.input.train_scales
        scale = scales[int(torch.randint(len(scales), (1,), generator=g))]
        flip = bool(tc.flip and torch.rand(1, generator=g).item() < 0.5)
        keep = rec.training_mask(self.cfg.data.exclude_difficult)
        gt = torch.as_tensor(rec.boxes[keep], dtype=torch.float32)
        labels = torch.as_tensor(rec.labels[keep])
        props = torch.as_tensor(np.asarray(self.proposals.boxes(rec.image_id), dtype=np.float32)).reshape(-1, 4)
        if flip:
            gt = hflip_boxes(gt, w)
            props = hflip_boxes(props, w)
        s = sample_windows(
            props,
            gt,
            labels,
            self.box_coder,
            tc.rois_per_image,
            tc.fg_fraction,
            tc.fg_iou,
            tc.bg_iou_low,
            tc.bg_iou_high,
            generator=g,
        )
        if tc.hue_jitter > 0 and torch.rand(1, generator=g).item() < tc.hue_jitter_prob:
            turn = (2.0 * torch.rand(1, generator=g).item() - 1.0) * tc.hue_jitter
            image = rotate_hue(image, turn)
        tensors, factors = prepare_image(image, [scale], self.cfg.input.max_size, self.normalization, flip)
        return {
            "image": (tensors, factors),
            "size": (h, w),
            "boxes": s.boxes,
            "labels": s.labels,
            "targets": s.targets,
            "image_id": rec.image_id,
        }


def make_collate(size_divisible: int):
    """Collate samples into ``(ImageBatch, rois (R, 5), labels (R,), targets (R, 4))``."""

    def collate(samples: List[Dict]):
        batch = collate_images([s["image"] for s in samples], [s["size"] for s in samples], size_divisible)
        rois = torch.cat(
            [torch.cat([torch.full((len(s["boxes"]), 1), float(i)), s["boxes"]], 1) for i, s in enumerate(samples)], 0
        )
        labels = torch.cat([s["labels"] for s in samples])
        targets = torch.cat([s["targets"] for s in samples])
        return batch, rois, labels, targets

    return collate


def build_train_loader(
    dataset: DetectionDataset,
    proposals,
    cfg: Config,
    normalization: str,
    size_divisible: int,
    start_iter: int = 0,
    rank: int = 0,
    world_size: int = 1,
    ims_per_batch: Optional[int] = None,
    start_sample: Optional[int] = None,
):
    """An infinite DataLoader of this rank's training batches (``ims_per_batch`` images each).

    The stream starts at global position ``start_sample`` (samples consumed by all ranks so
    far), by default ``start_iter * ims_per_batch * world_size``. Rank ``r``'s ``k``-th batch
    holds positions ``start + r + w * (k * ipb + j)``, ``j < ipb``: so one step of ``w`` ranks
    with ``ipb`` images each covers the same ``w * ipb`` positions as one step of one process
    with ``w * ipb`` images (in another order within the step).
    """
    from torch.utils.data import DataLoader

    ipb = ims_per_batch or cfg.train.ims_per_batch
    start = start_iter * ipb * world_size if start_sample is None else int(start_sample)
    stream = SampleStream(len(dataset), cfg.train.seed, start=start, rank=rank, world_size=world_size)
    ds = WindowDataset(dataset, proposals, cfg, normalization)
    workers = max(0, cfg.train.workers)
    return DataLoader(
        ds,
        batch_size=ipb,
        sampler=stream,
        collate_fn=make_collate(size_divisible),
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=2 if workers else None,
    )
