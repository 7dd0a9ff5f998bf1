"""``spp`` benchmark: region SPP pyramid vs torchvision ``roi_pool`` on one realistic image.

Setup (SPP-net's single-scale test setting): a ``(1, 256, 43, 58)`` conv5 map (a 688 x 917
image at stride 16) and ``num_rois`` windows with log-uniform sides in ``[16, image side]``
placed uniformly inside the image. Times (interleaved, medians over ``--repeat`` rounds):

- ``spp_pyramid``: :func:`sppdet.layers.roi_spp`, levels {6, 3, 2, 1}, max;
- ``roi_pool_6x6``: one ``torchvision.ops.roi_pool(features, rois, (6, 6), 1/16)``;
- ``roi_pool_pyramid``: four ``roi_pool`` calls, one per level (the naive pyramid).

- ``spp_pyramid_torch``: the torch inference path (sparse tables), which ``roi_spp`` takes
  where the numba kernels do not apply (no numba, CUDA, not float32).

``ratio`` = median spp_pyramid / median roi_pool_6x6 (the median of the per-round ratios is
given too; the goal is in docs/benchmarks.md). Forward+backward (``sum()`` of the
output as loss) is timed as well: ``spp_pyramid`` (on CPU float32 the numba kernels of
:mod:`sppdet.layers.spp.max_numba`), ``spp_pyramid_torch`` (one ``roi_pool`` with argmax and
block maxima, :mod:`sppdet.layers.spp.max_train`) and ``spp_pyramid_rank_keys`` (the fallback).
Every candidate runs once before timing (warm-up), so numba's compilation is not timed; the
first call's time is reported as ``numba.first_call_s`` (a compile, or a load from numba's
on-disk cache). ``args.quick``: 200 windows on a 64-channel map (smoke run).
"""

from __future__ import annotations

import math
from typing import Any, Dict

LEVELS = (6, 3, 2, 1)


def make_rois(num: int, img_w: int = 917, img_h: int = 688, min_side: float = 16.0, seed: int = 0):
    """``(num, 5)`` float32 windows ``(0, x1, y1, x2, y2)`` inside a ``img_w x img_h`` image."""
    import torch

    g = torch.Generator().manual_seed(seed)
    w = torch.exp(torch.empty(num).uniform_(math.log(min_side), math.log(img_w), generator=g))
    h = torch.exp(torch.empty(num).uniform_(math.log(min_side), math.log(img_h), generator=g))
    x1 = torch.rand(num, generator=g) * (img_w - w)
    y1 = torch.rand(num, generator=g) * (img_h - h)
    return torch.stack([torch.zeros(num), x1, y1, x1 + w, y1 + h], 1)


def run_spp_benchmark(args: Any) -> Dict[str, Any]:
    """Region SPP pyramid vs torchvision ``roi_pool`` (module docstring); a JSON-able dict."""
    import torch
    import torchvision
    from torchvision.ops import roi_pool

    from ..layers.spp import max_numba, project_rois, roi_spp
    from ..layers.spp.max_rank import RoISPPMax
    from ..layers.spp.max_tables import roi_spp_max
    from ..layers.spp.max_train import roi_spp_max_train
    from ..utils.comm import resolve_device
    from . import time_interleaved
    from .spp_train import run_training_sizes

    device = resolve_device(getattr(args, "device", "cpu") or "cpu")
    repeat = max(1, int(getattr(args, "repeat", 5) or 5))
    quick = bool(getattr(args, "quick", False))
    num_rois, channels, stride = (200, 64, 16) if quick else (2000, 256, 16)
    img_h, img_w = 688, 917
    feat_h, feat_w = -(-img_h // stride), -(-img_w // stride)  # 43 x 58
    torch.manual_seed(0)
    features = torch.randn(1, channels, feat_h, feat_w, device=device)
    rois = make_rois(num_rois, img_w, img_h).to(device)
    cells = project_rois(rois, stride, 0.0, feat_h, feat_w)
    first_call = _first_call_seconds(features, rois, stride)

    def spp():
        return roi_spp(features, rois, LEVELS, stride)

    def spp_torch():
        return roi_spp_max(features, rois[:, 0].long(), cells, LEVELS)

    def tv6():
        return roi_pool(features, rois, (6, 6), 1.0 / stride)

    def tv_pyramid():
        return torch.cat([roi_pool(features, rois, (n, n), 1.0 / stride).flatten(1) for n in LEVELS], 1)

    with torch.no_grad():
        fwd = time_interleaved(
            {"spp_pyramid": spp, "roi_pool_6x6": tv6, "roi_pool_pyramid": tv_pyramid, "spp_pyramid_torch": spp_torch},
            repeat,
            device,
        )

    feats_grad = features.clone().requires_grad_()

    def backward(fn):
        def run():
            feats_grad.grad = None
            fn(feats_grad).sum().backward()

        return run

    def rank_keys(f):  # the differentiable path used where roi_pool would bin differently
        return RoISPPMax.apply(f, rois[:, 0].long(), cells, LEVELS)

    bwd = time_interleaved(
        {
            "spp_pyramid": backward(lambda f: roi_spp(f, rois, LEVELS, stride)),
            "spp_pyramid_torch": backward(lambda f: roi_spp_max_train(f, rois[:, 0].long(), cells, LEVELS)),
            "spp_pyramid_rank_keys": backward(rank_keys),
            "roi_pool_6x6": backward(lambda f: roi_pool(f, rois, (6, 6), 1.0 / stride)),
        },
        max(1, repeat // 2),
        device,
    )

    training = run_training_sizes(repeat, device, quick)  # cheap: every round (2 were too noisy)
    ratio = fwd["spp_pyramid"]["median_ms"] / fwd["roi_pool_6x6"]["median_ms"]
    paired = sorted(a / b for a, b in zip(fwd["spp_pyramid"]["runs_ms"], fwd["roi_pool_6x6"]["runs_ms"]))
    return {
        "setup": {
            "features": [1, channels, feat_h, feat_w],
            "num_rois": num_rois,
            "stride": stride,
            "image_size_hw": [img_h, img_w],
            "levels": list(LEVELS),
            "mode": "max",
            "device": str(device),
            "repeat": repeat,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "quick": quick,
        },
        "numba": {
            "used": max_numba.applies(features),
            "threading_layer": max_numba.threading_layer(),
            "first_call_s": first_call,
        },
        "forward_ms": fwd,
        "forward_backward_ms": bwd,
        "ratio_spp_pyramid_vs_roi_pool_6x6": round(ratio, 3),
        "ratio_per_round_median": round(paired[len(paired) // 2], 3),
        "ratio_cpu_time": round(fwd["spp_pyramid"]["cpu_median_ms"] / fwd["roi_pool_6x6"]["cpu_median_ms"], 3),
        "ratio_roi_pool_pyramid_vs_roi_pool_6x6": round(
            fwd["roi_pool_pyramid"]["median_ms"] / fwd["roi_pool_6x6"]["median_ms"], 3
        ),
        "ratio_spp_pyramid_torch_vs_roi_pool_6x6": round(
            fwd["spp_pyramid_torch"]["median_ms"] / fwd["roi_pool_6x6"]["median_ms"], 3
        ),
        **training,
    }


def _first_call_seconds(features, rois, stride: float) -> Dict[str, float]:
    """Seconds of the first ``roi_spp`` call of this process, inference and training (forward
    + backward) on a small slice: numba compiles its kernels then, or loads them from its cache."""
    import time

    import torch

    from ..layers.spp import roi_spp

    small, few = features[:, :8].contiguous(), rois[:16]
    start = time.perf_counter()
    with torch.no_grad():
        roi_spp(small, few, LEVELS, stride)
    inference = time.perf_counter() - start
    start = time.perf_counter()
    roi_spp(small.clone().requires_grad_(), few, LEVELS, stride).sum().backward()
    return {"inference": round(inference, 3), "training": round(time.perf_counter() - start, 3)}
