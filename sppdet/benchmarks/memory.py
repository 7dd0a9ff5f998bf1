"""``memory`` benchmark: peak resident memory of detection on one 1000 x 1000 image.

Each model runs in a fresh child process (``python -m sppdet.benchmarks.memory SPEC``), so
the parent's own memory (other benchmarks, imports) does not pollute the figure. The child
builds the detector (random weights), makes a random 1000 x 1000 RGB image and 2,000 random
windows, then runs :meth:`Predictor.predict` once (resize to 688, conv, region SPP, fc in
chunks, NMS) and reports, from ``/proc/self/status`` and ``getrusage``:

- ``peak_rss_mb``: the process's peak RSS (``ru_maxrss``): Python, torch, weights, detection;
- ``rss_after_imports_mb``: RSS once torch and sppdet are imported (no model yet);
- ``rss_before_detect_mb``: RSS once the model is built (weights, libraries);
- ``detect_peak_rss_mb``: peak RSS during the detection alone (``VmHWM`` after resetting it
  through ``/proc/self/clear_refs``; equals ``peak_rss_mb`` where the reset is not allowed);
- ``detect_increment_mb``: ``detect_peak_rss_mb - rss_before_detect_mb``, the memory that
  detection itself needs (feature maps, pooled chunks, fc activations).

Models: the paper's ZF-5 (fc 4096-4096, 20 classes) and ``configs/coco_resnet50.yaml``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

from ..utils.memory import proc_status_kb, reset_peak_rss

ROOT = Path(__file__).resolve().parents[2]

SPECS = {
    "full": {
        "zf5_paper": dict(
            config="",
            overrides=["model.backbone=zf5", "model.normalization=caffe"],
            classes=20,
            size=1000,
            proposals=2000,
        ),
        "resnet50_coco": dict(
            config="configs/coco_resnet50.yaml", overrides=["model.weights="], classes=80, size=1000, proposals=2000
        ),
    },
    "quick": {
        "tiny": dict(
            config="",
            overrides=[
                "model.backbone=tiny",
                "model.tiny_width=8",
                "model.fc_dims=[64, 64]",
                "input.test_scales=[224]",
            ],
            classes=3,
            size=200,
            proposals=50,
        ),
    },
}


def _max_rss_kb() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kB on Linux


def measure(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Run in the child: build, detect once, report memory (MB = 2**20 bytes)."""
    import numpy as np
    import torch

    from ..config import load_config
    from ..engine.infer import Predictor
    from ..modeling.detector import build_detector

    after_import = proc_status_kb("VmRSS")
    cfg_path = ROOT / spec["config"] if spec["config"] else None
    cfg = load_config(cfg_path, spec["overrides"])
    torch.manual_seed(0)
    model = build_detector(cfg, spec["classes"]).eval()
    predictor = Predictor(model, cfg, [f"c{i}" for i in range(spec["classes"])], "cpu")
    rng = np.random.default_rng(0)
    n = spec["size"]
    image = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
    wh = rng.uniform(0.05 * n, n, (spec["proposals"], 2))
    xy = rng.uniform(0, 1, (spec["proposals"], 2)) * (n - wh)
    proposals = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    before = proc_status_kb("VmRSS")
    reset = reset_peak_rss()
    predictor.predict(image, proposals)
    peak_total = max(_max_rss_kb(), proc_status_kb("VmHWM"))
    detect_peak = proc_status_kb("VmHWM") if reset else peak_total
    mb = 1.0 / 1024
    return {
        "backbone": cfg.model.backbone,
        "fc_dims": list(cfg.model.fc_dims),
        "classes": spec["classes"],
        "image_hw": [n, n],
        "scale": cfg.input.test_scales,
        "proposals": spec["proposals"],
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "threads": torch.get_num_threads(),
        "peak_rss_mb": round(peak_total * mb, 1),
        "rss_after_imports_mb": round(after_import * mb, 1),
        "rss_before_detect_mb": round(before * mb, 1),
        "detect_peak_rss_mb": round(detect_peak * mb, 1),
        "detect_increment_mb": round((detect_peak - before) * mb, 1),
        "peak_reset_via_clear_refs": reset,
    }


def run_in_child(spec: Dict[str, Any], timeout: float = 600) -> Dict[str, Any]:
    """:func:`measure` in a fresh Python process; its JSON is the last line of its stdout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run(
        [sys.executable, "-m", "sppdet.benchmarks.memory", json.dumps(spec)],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        from ..errors import SppdetError

        raise SppdetError(f"memory benchmark child failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_memory(args: Any) -> Dict[str, Any]:
    """Peak memory of each setting, each measured in a fresh child process; a JSON-able dict."""
    quick = bool(getattr(args, "quick", False))
    device = getattr(args, "device", "cpu") or "cpu"
    results = {name: run_in_child(spec) for name, spec in SPECS["quick" if quick else "full"].items()}
    return {
        "setup": {
            "device": "cpu" if device == "cpu" else f"cpu (--device {device} ignored: host RSS is measured)",
            "process": "fresh child process per model (parent memory excluded)",
            "detect": "Predictor.predict once, random weights, random image and windows",
            "quick": quick,
        },
        "models": results,
    }


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
