"""``rcnn-vs-spp --weights W``: R-CNN mode vs SPP mode on a trained checkpoint.

Without ``--weights`` but with ``--compress-result``: the random ZF-5 of the default
benchmark with the fc setting (rank fractions, int8) chosen on a trained model.

The model (any backbone), its fc weights and its test scale come from the checkpoint; the
image and the 2,000 windows are those of the random-weights benchmark
(:mod:`sppdet.benchmarks.rcnn_vs_spp`). Two fc settings, each applied to *both* modes:

- ``full_fc``: the checkpoint's fc layers;
- ``equal_accuracy_fc``: the fc compression chosen by ``tools/benchmark.py compress``
  (``--compress-result compress.json``: its ``best_within_0.5pt``, with the mAP loss measured
  there), else the checkpoint's own ``test.fc_compression`` (mAP loss unknown: null).

``speedup_total`` is R-CNN total / SPP total per setting; ``speedup_total_equal_accuracy`` is
that of ``equal_accuracy_fc``, reported with its ``map_loss`` (a fraction: 0.004 = 0.4 points).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, cast

import torch

from ..engine.checkpoint import load_model_from_checkpoint
from ..errors import SppdetError
from ..modeling.compress import FcCompression, compress_head, parse_fc_compression
from ..modeling.head import SPPHead
from .compress import SETTINGS as COMPRESS_SETTINGS


def chosen_setting(path: Optional[str], fallback: str) -> Tuple[str, Optional[float], str]:
    """``(spec, map_loss, source)`` from a ``compress`` JSON result, else ``fallback``."""
    if not path:
        return fallback, None, "checkpoint config test.fc_compression (mAP loss not measured here)"
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SppdetError(f"--compress-result {path}: cannot read JSON ({e})") from None
    best = (data.get("compress") or data).get("best_within_0.5pt") if isinstance(data, dict) else None
    if not isinstance(best, dict) or "spec" not in best:
        raise SppdetError(f"--compress-result {path}: no 'best_within_0.5pt' entry (run 'benchmark.py compress')")
    return str(best["spec"]), float(best.get("map_loss", float("nan"))), f"{path} best_within_0.5pt"


def trained_bench(
    args: Any, s: Dict[str, Any], device, repeat: int, bench_cls, summary: Callable, g: Callable
) -> Dict[str, Any]:
    """Run the benchmark on ``args.weights`` (see module docstring)."""
    weights = getattr(args, "weights", None)
    if weights:
        model, cfg, class_names, _ = load_model_from_checkpoint(
            weights, list(getattr(args, "opts", None) or []), device
        )
        default_spec = cfg.test.fc_compression
    else:  # the random-weights model of setting s, with the fc setting chosen on a trained one
        bench = bench_cls(s, device)
        model, cfg, class_names, default_spec = bench.model, bench.cfg, [""] * s["num_classes"], ""
    spec, map_loss, source = chosen_setting(getattr(args, "compress_result", None), default_spec)
    full = cast(SPPHead, model.head)
    if spec or getattr(args, "compress_result", None):
        specs = {"equal_accuracy_fc": spec}
    else:  # nothing chosen yet: every setting of the compress benchmark, timed in this one run
        specs = {name: name for name in COMPRESS_SETTINGS if name}
        source = "none chosen: every compress setting timed (pick one with --compress-result)"
    for sp in specs.values():
        if parse_fc_compression(sp).int8 and torch.device(device).type != "cpu":
            raise SppdetError(f"fc setting '{sp}': int8 runs on the CPU only (use --device cpu)")
    heads = {"full_fc": full, **{name: compress_head(full, sp) for name, sp in specs.items()}}
    if weights:
        setting = dict(
            s,
            backbone=cfg.model.backbone,
            fc_dims=tuple(cfg.model.fc_dims),
            num_classes=len(class_names),
            scale=int(cfg.input.test_scales[0]),
        )
        bench = bench_cls(setting, device, model, cfg, heads)
    else:
        bench.heads = heads
    with torch.inference_mode():
        timings = bench.time(repeat)
        # FLOPs of the float equivalent (int8 layers do the same multiply-adds; the counter skips them)
        bench.heads = {
            "full_fc": full,
            **{k: compress_head(full, FcCompression(parse_fc_compression(v).svd_fractions)) for k, v in specs.items()},
        }
        flops = bench.flops()
        bench.heads = heads
    result: Dict[str, Any] = {
        "setup": {
            **bench.setup(),
            "weights": str(weights) if weights else "random (timing only)",
            "fc_configs": {"full_fc": "the checkpoint's fc layers", **{k: v or "full" for k, v in specs.items()}},
            "equal_accuracy_source": source,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "repeat": repeat,
            "torch": torch.__version__,
        },
        "timings_ms": timings,
    }
    for suffix, key in (("", "median_ms"), ("_cpu_time", "cpu_median_ms")):
        result.update(summary({k: v[key] for k, v in timings.items()}, bench, suffix))
    eq = result["speedup_total"].get("equal_accuracy_fc")
    result.update(
        {
            "gflops": {
                "spp_conv": g(flops["spp_conv"]),
                "rcnn_conv": g(flops["rcnn_conv"]),
                "fc": {k: g(v) for k, v in flops["fc"].items()},
            },
            "speedup_total_equal_accuracy": eq,
            "speedup_total_equal_accuracy_cpu_time": result["speedup_total_cpu_time"].get("equal_accuracy_fc"),
            "fc_compression": spec,
            "map_loss": map_loss,
        }
    )
    return result
