"""Forward+backward of region max-SPP at training sizes, against one ``roi_pool`` 6x6.

Part of ``tools/benchmark.py spp``. Two training-time settings (``sum()`` of the output as
the loss, gradient w.r.t. the map; interleaved medians):

- ``256_windows_64x40x54``: 256 windows on a ``(1, 64, 40, 54)`` map (a 640 x 864 image);
- ``bccd_2x64_windows_96x38x50``: 2 images x 64 windows on a ``(2, 96, 38, 50)`` map (BCCD
  at scale 600: 608 x 800 padded input, MobileNetV2 stride 16, 96 channels).

Candidates: ``spp_pyramid`` (:func:`sppdet.layers.roi_spp`, levels {6, 3, 2, 1}; on CPU
float32 the numba kernels of :mod:`sppdet.layers.spp.max_numba`), ``spp_pyramid_torch`` (the
torch training path, :mod:`sppdet.layers.spp.max_train`: one ``roi_pool`` with argmax, coarser
levels as block maxima, scatter backward), ``spp_pyramid_roi_pool_per_level`` (one torchvision
``roi_pool`` per level) and ``roi_pool_6x6``. ``backward_ratio_spp_pyramid_vs_roi_pool_6x6``
maps each setting to median ``spp_pyramid`` / median ``roi_pool_6x6`` (forward+backward);
``backward_ratio_spp_pyramid_torch_vs_roi_pool_6x6`` the same for the torch path.
"""

from __future__ import annotations

from typing import Any, Dict

LEVELS = (6, 3, 2, 1)
STRIDE = 16
#: name -> (N, C, H, W, windows per image)
SETTINGS = {
    "256_windows_64x40x54": (1, 64, 40, 54, 256),
    "bccd_2x64_windows_96x38x50": (2, 96, 38, 50, 64),
}


def run_training_sizes(repeat: int, device, quick: bool = False) -> Dict[str, Any]:
    """``{"forward_backward_training_ms": {setting: timings}, "backward_ratio_...": {setting: ratio}}``."""
    import torch
    from torchvision.ops import roi_pool

    from ..layers import spp as spp_mod
    from ..layers.spp import max_roi_pool as spp_roi_pool
    from ..layers.spp import roi_spp
    from ..layers.spp.max_train import roi_spp_max_train
    from . import time_interleaved
    from .spp import make_rois

    timings, ratios, ratios_cpu, vs_previous, torch_path = {}, {}, {}, {}, {}
    for name, (N, C, H, W, per_image) in SETTINGS.items():
        if quick:
            C, per_image = 8, 16
        torch.manual_seed(0)
        feats = torch.randn(N, C, H, W, device=device).requires_grad_()
        rois = torch.cat(
            [
                make_rois(per_image, W * STRIDE, H * STRIDE, seed=i).index_fill_(1, torch.tensor([0]), float(i))
                for i in range(N)
            ]
        ).to(device)

        def run(fn):
            def step():
                feats.grad = None
                fn().sum().backward()

            return step

        def per_level():
            cells = spp_mod.project_rois(rois, STRIDE, 0.0, H, W)
            return spp_roi_pool.roi_spp_max_roi_pool(feats, rois[:, 0].long(), cells, LEVELS)

        def torch_train():
            cells = spp_mod.project_rois(rois, STRIDE, 0.0, H, W)
            return roi_spp_max_train(feats, rois[:, 0].long(), cells, LEVELS)

        t = time_interleaved(
            {
                "spp_pyramid": run(lambda: roi_spp(feats, rois, LEVELS, STRIDE)),
                "spp_pyramid_torch": run(torch_train),
                "spp_pyramid_roi_pool_per_level": run(per_level),
                "roi_pool_6x6": run(lambda: roi_pool(feats, rois, (6, 6), 1.0 / STRIDE)),
            },
            repeat,
            device,
        )
        timings[name] = {"setup": {"features": [N, C, H, W], "windows": N * per_image}, **t}
        ratios[name] = round(t["spp_pyramid"]["median_ms"] / t["roi_pool_6x6"]["median_ms"], 3)
        ratios_cpu[name] = round(t["spp_pyramid"]["cpu_median_ms"] / t["roi_pool_6x6"]["cpu_median_ms"], 3)
        vs_previous[name] = round(t["spp_pyramid_roi_pool_per_level"]["median_ms"] / t["roi_pool_6x6"]["median_ms"], 3)
        torch_path[name] = round(t["spp_pyramid_torch"]["median_ms"] / t["roi_pool_6x6"]["median_ms"], 3)
    return {
        "forward_backward_training_ms": timings,
        "backward_ratio_spp_pyramid_vs_roi_pool_6x6": ratios,
        "backward_ratio_spp_pyramid_vs_roi_pool_6x6_cpu_time": ratios_cpu,
        "backward_ratio_roi_pool_per_level_vs_roi_pool_6x6": vs_previous,
        "backward_ratio_spp_pyramid_torch_vs_roi_pool_6x6": torch_path,
    }
