"""``rcnn-vs-spp`` benchmark: R-CNN mode vs SPP-net mode on the same ZF-5 model (paper Table 4).

Setup (SPP-net's 1-scale test setting): ZF-5 (random weights: timing only), pyramid
{6, 3, 2, 1}, fc6/fc7 4096-d, 20 classes; the real VOC2007 image ``000004.jpg`` (500 x 406)
with its first 2,000 real Selective Search windows (fast-rcnn demo file) when
``../shared/data`` is present, else a random 917 x 688 image and random windows.

- **SPP mode**: the image resized to shorter side 688 (688 x 848), conv5 once, region SPP
  of every window, fc in the chunks :class:`~sppdet.engine.infer.Predictor` uses.
- **R-CNN mode** (:class:`~sppdet.modeling.rcnn_baseline.RCNNBaseline`): each window with
  16 px context warped to 224 x 224 from the original image, conv per window (batches of
  32), pool5 = the same pyramid over the window's whole map, the same fc. Its per-window
  stages are timed on ``rcnn_windows`` windows and scaled linearly to all windows (the
  work per window is fixed, so the scaling is exact up to batching effects); its fc time is
  that of the same fc layers on the same ``(R, D)`` input as SPP mode. Its convs run through
  the same :meth:`SPPDetector.conv_features` (and CPU fast path) as SPP mode's.

Three fc configurations are reported, each applied to *both* modes: the full fc layers, the
truncated-SVD ones at Fast R-CNN's ranks (section 3.1; :meth:`SPPHead.compress_svd`, fc6 1024,
fc7 256) and a lower-rank truncation (256, 128; its accuracy is not verified here: the weights
are random). FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``: conv and
linear layers only (pooling, LRN, ReLU and warping are not counted). Image resizing and
normalisation are outside every timing. All timings are interleaved (:func:`time_interleaved`);
speed-ups are given from wall-clock medians and, less disturbed by other processes on a
shared machine, from this process's CPU-time medians (``*_cpu_time``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

VOC_IMAGE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "voc07-demo" / "000004.jpg"

#: Full setting and the ``quick`` one (unit tests: every code path, seconds).
SETTINGS = {
    "full": dict(
        backbone="zf5",
        tiny_width=32,
        windows=2000,
        rcnn_windows=64,
        rcnn_batch=32,
        fc_dims=(4096, 4096),
        svd_ranks=(1024, 256),
        low_ranks=(256, 128),
        num_classes=20,
        scale=688,
    ),
    "quick": dict(
        backbone="tiny",
        tiny_width=8,
        windows=50,
        rcnn_windows=8,
        rcnn_batch=4,
        fc_dims=(64, 64),
        svd_ranks=(16, 8),
        low_ranks=(8, 4),
        num_classes=3,
        scale=224,
    ),
}


def truncate_svd_head(head, ranks):
    """A copy of a :meth:`SPPHead.compress_svd` head keeping only the top ``ranks`` singular
    directions of each factorised fc layer: exactly the lower-rank truncated SVD, without
    recomputing it (the factors are ordered by singular value)."""
    import torch
    from torch import nn

    out = copy.deepcopy(head)
    pairs = [i for i, m in enumerate(out.fc) if isinstance(m, nn.Sequential)]
    for i, rank in zip(pairs, ranks):
        first, second = out.fc[i]
        if rank >= first.out_features:
            continue
        a, b = nn.Linear(first.in_features, rank, bias=False), nn.Linear(rank, second.out_features)
        with torch.no_grad():
            a.weight.copy_(first.weight[:rank])
            b.weight.copy_(second.weight[:, :rank])
            b.bias.copy_(second.bias)
        out.fc[i] = nn.Sequential(a, b)
    return out


def load_image_and_windows(num: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, str]:
    """RGB image, ``(num, 4)`` float32 windows (ours) and a description of where they came from."""
    from ..structures import zero_based_inclusive_to_xyxy

    boxes_file = VOC_IMAGE.with_name("000004_boxes.mat")
    if VOC_IMAGE.is_file() and boxes_file.is_file():
        import scipy.io

        from ..data.image_io import read_image

        image = read_image(VOC_IMAGE)
        boxes = zero_based_inclusive_to_xyxy(scipy.io.loadmat(str(boxes_file))["boxes"].astype(np.float32))
        if len(boxes) >= num:
            return image, boxes[:num], f"{VOC_IMAGE.name} + first {num} of its {len(boxes)} Selective Search windows"
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (688, 917, 3), dtype=np.uint8)
    wh = np.exp(rng.uniform(np.log(16), np.log(600), (num, 2)))
    xy = rng.uniform(0, 1, (num, 2)) * (np.array([917, 688]) - wh).clip(min=1)
    return image, np.concatenate([xy, xy + wh], 1).astype(np.float32), "random 917x688 image, random windows"


def count_flops(fn) -> int:
    """FLOPs of the conv/linear ops that ``fn()`` runs (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def run_rcnn_vs_spp(args: Any) -> Dict[str, Any]:
    """R-CNN (per-window conv) vs SPP-net (conv once) on one image: timings, speedups, FLOPs."""
    import torch

    from ..utils.comm import resolve_device

    quick = bool(getattr(args, "quick", False))
    s = SETTINGS["quick" if quick else "full"]
    device = resolve_device(getattr(args, "device", "cpu") or "cpu")
    repeat = max(1, int(getattr(args, "repeat", 5) or 5))
    if getattr(args, "weights", None) or getattr(args, "compress_result", None):
        from .rcnn_vs_spp_trained import trained_bench

        return trained_bench(args, s, device, repeat, _Bench, _summary, _g)
    bench = _Bench(s, device)
    with torch.inference_mode():
        timings = bench.time(repeat)
        flops = bench.flops()
    result: Dict[str, Any] = {
        "setup": {
            **bench.setup(),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "repeat": repeat,
            "torch": torch.__version__,
            "quick": quick,
        },
        "timings_ms": timings,
    }
    for suffix, key in (("", "median_ms"), ("_cpu_time", "cpu_median_ms")):
        result.update(_summary({k: v[key] for k, v in timings.items()}, bench, suffix))
    fc_flops = flops["fc"]
    result.update(
        {
            "gflops": {
                "spp_conv": _g(flops["spp_conv"]),
                "rcnn_conv": _g(flops["rcnn_conv"]),
                "fc": {k: _g(v) for k, v in fc_flops.items()},
            },
            "flop_ratio_conv": round(flops["rcnn_conv"] / flops["spp_conv"], 1),
            "flop_ratio_total": {
                k: round((flops["rcnn_conv"] + f) / (flops["spp_conv"] + f), 1) for k, f in fc_flops.items()
            },
            "flops_counted": "conv + linear layers (torch.utils.flop_counter); pooling, LRN, ReLU, warping not counted",
        }
    )
    return result


def _g(flops: int) -> float:
    return float(f"{flops / 1e9:.4g}")


class _Bench:
    """The model, its fc variants, the image, the windows and the callables to time."""

    def __init__(self, s: Dict[str, Any], device, model=None, cfg=None, heads=None) -> None:
        """``model``/``cfg``/``heads`` (a trained model, its config and its fc variants by
        name) replace the random ZF-5 of setting ``s``."""
        import torch

        from ..config import load_config
        from ..engine.infer import CHUNK
        from ..modeling.detector import build_detector
        from ..modeling.rcnn_baseline import RCNNBaseline

        self.s, self.chunk = s, CHUNK
        if model is None:
            self.cfg = load_config(
                None,
                [
                    f"model.backbone={s['backbone']}",
                    f"model.tiny_width={s['tiny_width']}",
                    "model.normalization=caffe",
                    "model.dropout=0.0",
                    f"model.fc_dims={list(s['fc_dims'])}",
                ],
            )
            torch.manual_seed(0)
            self.model = build_detector(self.cfg, s["num_classes"]).to(device).eval()
            svd = copy.deepcopy(self.model.head)
            svd.compress_svd(list(s["svd_ranks"]))
            self.heads = {
                "full_fc": self.model.head,
                "svd_fc": svd,
                "svd_low_rank_fc": truncate_svd_head(svd, s["low_ranks"]),
            }
        else:
            self.cfg, self.model, self.heads = cfg, model.to(device).eval(), dict(heads)
        self.rcnn = RCNNBaseline(self.model, batch_size=s["rcnn_batch"])
        self.image, windows, self.source = load_image_and_windows(s["windows"])
        self.R, self.n = len(windows), min(s["rcnn_windows"], len(windows))
        self.boxes = torch.from_numpy(windows).to(device)
        self.rois = torch.cat([self.boxes.new_zeros((self.R, 1)), self.boxes], 1)
        with torch.inference_mode():
            self.batch = self.model.prepare([self.image], [s["scale"]], self.cfg.input.max_size).to(device)
            self.im = self.rcnn.prepare(self.image).to(device)

    def _rcnn_batches(self):
        b = self.rcnn.batch_size
        return [self.boxes[i : min(i + b, self.n)] for i in range(0, self.n, b)]

    def time(self, repeat: int) -> Dict[str, Dict[str, Any]]:
        """Interleaved timings (call inside inference mode)."""
        from . import time_interleaved

        model, rcnn, batch, rois, R, chunk = self.model, self.rcnn, self.batch, self.rois, self.R, self.chunk
        feats = model.conv_features(batch)
        self.pooled = pooled = model.pool(feats, batch.factors, rois)
        windows = self._rcnn_batches()
        self.crops = crops = [rcnn.warp(self.im, w) for w in windows]
        maps = [rcnn.conv(c) for c in crops]

        def fc(head):
            return lambda: [head(pooled[i : i + chunk]) for i in range(0, R, chunk)]

        def spp_total(head):
            def run():
                p = model.pool(model.conv_features(batch), batch.factors, rois)
                return [head(p[i : i + chunk]) for i in range(0, R, chunk)]

            return run

        fns = {
            "spp_conv": lambda: model.conv_features(batch),
            "spp_pool": lambda: model.pool(feats, batch.factors, rois),
            "rcnn_warp": lambda: [rcnn.warp(self.im, w) for w in windows],
            "rcnn_conv": lambda: [rcnn.conv(c) for c in crops],
            "rcnn_pool5": lambda: [rcnn.pool(m) for m in maps],
        }
        for name, head in self.heads.items():
            fns[f"fc_{name}"] = fc(head)
            fns[f"spp_total_{name}"] = spp_total(head)
        return time_interleaved(fns, repeat, self.boxes.device)

    def flops(self) -> Dict[str, Any]:
        """Conv/linear FLOPs of each part for all ``R`` windows (after :meth:`time`)."""
        one = self.crops[0][:1]
        return {
            "spp_conv": count_flops(lambda: self.model.conv_features(self.batch)),
            "rcnn_conv": self.R * count_flops(lambda: self.rcnn.conv(one)),
            "fc": {k: self.R * count_flops(lambda: h(self.pooled[:1])) for k, h in self.heads.items()},
        }

    def setup(self) -> Dict[str, Any]:
        s = self.s
        return {
            "backbone": s["backbone"],
            "weights": "random (timing only)",
            "spp_levels": list(self.cfg.model.spp_levels),
            "fc_dims": list(s["fc_dims"]),
            "num_classes": s["num_classes"],
            "fc_configs": {
                "full_fc": "full fc6/fc7",
                "svd_fc": f"truncated SVD, ranks {list(s['svd_ranks'])}",
                "svd_low_rank_fc": f"truncated SVD, ranks {list(s['low_ranks'])}",
            },
            "fc_config_applies_to": "both modes (same fc layers and weights)",
            "image": self.source,
            "image_size_hw": list(self.image.shape[:2]),
            "spp_scale": s["scale"],
            "spp_input_hw": list(self.batch.images[0].shape[-2:]),
            "windows": self.R,
            "fc_chunk": self.chunk,
            "rcnn_crop": self.rcnn.crop_size,
            "rcnn_context": self.rcnn.context,
            "rcnn_batch": self.rcnn.batch_size,
            "rcnn_timed_windows": self.n,
            "rcnn_scaled_linearly_to": self.R,
            "rcnn_fc": "the same fc layers on the same (R, D) input as SPP mode",
            "excluded": "image resize/normalisation (both modes), NMS",
        }


def _summary(ms: Dict[str, float], bench: _Bench, suffix: str) -> Dict[str, Any]:
    """Per-stage times (R-CNN scaled to all windows) and speed-ups from one kind of median."""
    scale = bench.R / float(bench.n)
    rcnn = {k: ms[f"rcnn_{k}"] * scale for k in ("warp", "conv", "pool5")}
    fc = {k: ms[f"fc_{k}"] for k in bench.heads}
    spp_total = {k: ms[f"spp_total_{k}"] for k in bench.heads}
    rcnn_total = {k: sum(rcnn.values()) + fc[k] for k in bench.heads}
    r1 = lambda d: {k: round(v, 1) for k, v in d.items()}  # noqa: E731
    return {
        f"spp_ms{suffix}": {"conv": ms["spp_conv"], "pool": ms["spp_pool"], "fc": fc, "total": spp_total},
        f"rcnn_ms{suffix}": {**r1(rcnn), "fc": fc, "total": r1(rcnn_total)},
        f"speedup_conv{suffix}": round(rcnn["conv"] / ms["spp_conv"], 1),
        f"speedup_total{suffix}": {k: round(rcnn_total[k] / spp_total[k], 1) for k in bench.heads},
    }
