"""``vs-torchvision`` benchmark: our detector vs torchvision Faster R-CNN R50-FPN, one image.

Setup: a real COCO image (640 x 480, from ``../shared/data/coco-mini``; a random image of
that size when absent), both models at shorter side 688 (688 x 917), random weights
(timing only; no download), device and threads as given.

- **ours**: ``configs/coco_resnet50.yaml``'s detector (ResNet-50 to layer3, stride 16, 1x1
  reduce to 256 channels, pyramid {6, 3, 2, 1}, fc 1024-1024, 80 classes) through
  :class:`~sppdet.engine.infer.Predictor` (resize + normalise, conv, region SPP, fc, per-class
  NMS) on 2,000 EdgeBoxes proposals (topped up with random windows if EdgeBoxes returns
  fewer), with the full fc layers and with truncated-SVD fc layers (``svd_ranks``).
- **EdgeBoxes** (``compute_proposals(image, "edgeboxes", cfg.proposals)``) is timed on
  its own and added in the "incl. proposals" figures.
- **torchvision**: ``fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
  min_size=688, max_size=1333)`` in eval mode (its transform, RPN with 1,000 proposals,
  RoIAlign box head, NMS), on the same RGB image as a float tensor in [0, 1].

The goal is in docs/benchmarks.md. Timings are interleaved; latencies and
ratios are given from wall-clock medians and, less disturbed by other processes on a shared
machine, from this process's CPU-time medians (``*_cpu_time``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
COCO_IMAGE = SHARED_DATA / "coco-mini" / "train2017" / "000000054718.jpg"
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "coco_resnet50.yaml"

#: Full setting and the ``quick`` one (unit tests: every code path, seconds). SVD ranks keep
#: Fast R-CNN's proportions (fc6 1/4, fc7 1/16 of the 1024-d layers).
SETTINGS: Dict[str, Dict[str, Any]] = {
    "full": dict(
        backbone="resnet50",
        proposals=2000,
        scale=688,
        svd_ranks=(256, 64),
        image_height=None,
        torchvision="fasterrcnn_resnet50_fpn",
        overrides=(),
    ),
    "quick": dict(
        backbone="tiny",
        proposals=50,
        scale=224,
        svd_ranks=(16, 8),
        image_height=224,
        torchvision="fasterrcnn_mobilenet_v3_large_320_fpn",
        overrides=("model.tiny_width=8", "model.reduce_channels=0", "model.fc_dims=[64, 64]"),
    ),
}


def load_image(height: Optional[int] = None) -> Tuple[np.ndarray, str]:
    """The benchmark's RGB image (resized to ``height`` rows if given) and its name."""
    if COCO_IMAGE.is_file():
        from ..data.image_io import read_image

        image, name = read_image(COCO_IMAGE), COCO_IMAGE.name
    else:
        image, name = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8), "random 640x480"
    if height:
        import cv2

        image = cv2.resize(image, (height * image.shape[1] // image.shape[0], height))
    return image, name


def top_up(boxes: np.ndarray, num: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """``boxes[:num]``, plus random windows when there are fewer than ``num``."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)[:num]
    if len(boxes) >= num:
        return boxes
    rng = np.random.default_rng(seed)
    k = num - len(boxes)
    wh = rng.uniform(0.05, 1.0, (k, 2)) * [width, height]
    xy = rng.uniform(0, 1, (k, 2)) * ([width, height] - wh)
    return np.concatenate([boxes, np.concatenate([xy, xy + wh], 1).astype(np.float32)])


def run_vs_torchvision(args: Any) -> Dict[str, Any]:
    """Our detector (with and without SVD fc) vs torchvision Faster R-CNN on one image."""
    import torch
    import torchvision

    from ..proposals.build import compute_proposals
    from ..utils.comm import resolve_device
    from . import time_interleaved

    quick = bool(getattr(args, "quick", False))
    s = SETTINGS["quick" if quick else "full"]
    device = resolve_device(getattr(args, "device", "cpu") or "cpu")
    repeat = max(1, int(getattr(args, "repeat", 5) or 5))
    cfg, ours, ours_svd = _our_predictors(s, device)
    tv = getattr(torchvision.models.detection, s["torchvision"])(
        weights=None, weights_backbone=None, min_size=s["scale"], max_size=cfg.input.max_size
    )
    tv = tv.to(device).eval()
    box_head_inputs = []  # proposals its box head scores (1,000 at most in eval mode)
    tv.roi_heads.register_forward_hook(lambda mod, inputs, output: box_head_inputs.append(len(inputs[1][0])))

    image, name = load_image(s["image_height"])
    h, w = image.shape[:2]
    found, _ = compute_proposals(image, "edgeboxes", cfg.proposals)
    proposals = top_up(found, s["proposals"], w, h)
    tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255).to(device)
    with torch.inference_mode():
        t = time_interleaved(
            {
                "edgeboxes": lambda: compute_proposals(image, "edgeboxes", cfg.proposals),
                "ours_detect": lambda: ours.predict(image, proposals),
                "ours_detect_svd": lambda: ours_svd.predict(image, proposals),
                "torchvision_frcnn": lambda: tv([tensor]),
            },
            repeat,
            device,
        )
        tv_input = list(tv.transform([tensor])[0].tensors.shape[-2:])
    ours_input = list(ours.model.prepare([image], cfg.input.test_scales, cfg.input.max_size).images[0].shape[-2:])
    result = {
        "setup": {
            "image": name,
            "image_size_hw": [h, w],
            "scale": s["scale"],
            "max_size": cfg.input.max_size,
            "ours_input_hw": ours_input,
            "torchvision_input_hw": tv_input,
            "ours": {
                "backbone": cfg.model.backbone,
                "reduce_channels": cfg.model.reduce_channels,
                "spp_levels": list(cfg.model.spp_levels),
                "fc_dims": list(cfg.model.fc_dims),
                "svd_ranks_fc6_fc7": list(s["svd_ranks"]),
                "classes": len(ours.class_names),
                "proposals": len(proposals),
                "edgeboxes_found": int(len(found)),
                "edgeboxes_max_side": cfg.proposals.max_side,
                "edge_model": cfg.proposals.edge_model or "gradient",
            },
            "torchvision_model": f"{s['torchvision']}(weights=None, weights_backbone=None, min_size=scale, max_size)",
            "torchvision_box_head_proposals": box_head_inputs[-1],
            "weights": "random (timing only)",
            "device": str(device),
            "threads": torch.get_num_threads(),
            "repeat": repeat,
            "torch": torch.__version__,
            "torchvision_version": torchvision.__version__,
            "quick": quick,
        },
        "timings_ms": t,
    }
    for suffix, key in (("", "median_ms"), ("_cpu_time", "cpu_median_ms")):
        result.update(_summary({k: v[key] for k, v in t.items()}, suffix))
    return result


def _our_predictors(s: Dict[str, Any], device):
    """Config and Predictors of our detector with full and with truncated-SVD fc layers."""
    import torch

    from ..config import load_config
    from ..engine.infer import Predictor
    from ..modeling.detector import build_detector

    overrides = [
        "model.weights=",
        f"model.backbone={s['backbone']}",
        f"input.test_scales=[{s['scale']}]",
        f"proposals.max_per_image={s['proposals']}",
        *s["overrides"],
    ]
    cfg = load_config(CONFIG if CONFIG.is_file() else None, overrides)
    classes = [f"class{i}" for i in range(80)]
    torch.manual_seed(0)
    model = build_detector(cfg, len(classes)).to(device).eval()
    svd_model = copy.deepcopy(model)
    svd_model.head.compress_svd(list(s["svd_ranks"]))
    return cfg, Predictor(model, cfg, classes, device), Predictor(svd_model, cfg, classes, device)


def _summary(ms: Dict[str, float], suffix: str) -> Dict[str, Any]:
    """Latencies and ratios to torchvision from one kind of median."""
    tv = ms["torchvision_frcnn"]
    latency = {"torchvision_frcnn": tv, "edgeboxes": ms["edgeboxes"]}
    ratios = {}
    for key in ("ours_detect", "ours_detect_svd"):
        latency[key] = ms[key]
        latency[f"{key}_incl_edgeboxes"] = round(ms[key] + ms["edgeboxes"], 2)
        ratios[f"{key[5:]}_vs_torchvision"] = round(ms[key] / tv, 3)
        ratio = (ms[key] + ms["edgeboxes"]) / tv
        ratios[f"{key[5:]}_incl_edgeboxes_vs_torchvision"] = round(ratio, 3)
    return {f"latency_ms{suffix}": latency, f"ratios{suffix}": ratios}
