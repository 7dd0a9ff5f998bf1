"""Benchmarks behind ``tools/benchmark.py NAME``.

:data:`BENCHMARKS` maps a name to ``"module:function"``; the module is imported only when
its benchmark runs, so registering one is one line and costs nothing at import time. The
function takes the parsed command-line arguments (``repeat``, ``device``, ``threads``) and returns a
JSON-able dict. :func:`time_interleaved` is the shared timer: it runs the candidates in
turn, round after round, so a busy machine slows them all alike and ratios stay fair.
"""

from __future__ import annotations

import importlib
import os
import time
from typing import Any, Callable, Dict, Mapping, Optional, Union

from ..errors import SppdetError

#: name -> "module:function" (or a callable). Add a benchmark with one line here.
BENCHMARKS: Dict[str, Union[str, Callable[[Any], Dict[str, Any]]]] = {
    "spp": "sppdet.benchmarks.spp:run_spp_benchmark",
    "proposals": "sppdet.benchmarks.proposals:run",
    "rcnn-vs-spp": "sppdet.benchmarks.rcnn_vs_spp:run_rcnn_vs_spp",
    "vs-torchvision": "sppdet.benchmarks.vs_torchvision:run_vs_torchvision",
    "memory": "sppdet.benchmarks.memory:run_memory",
    "compress": "sppdet.benchmarks.compress:run_compress",
}


def get_benchmark(name: str) -> Callable[[Any], Dict[str, Any]]:
    """The function registered under ``name`` (imported on demand)."""
    if name not in BENCHMARKS:
        raise SppdetError(f"unknown benchmark '{name}' (known: {', '.join(sorted(BENCHMARKS))})")
    target = BENCHMARKS[name]
    if callable(target):
        return target
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def run_benchmark(name: str, args: Any) -> Dict[str, Any]:
    """Run one registered benchmark and return its JSON-able result.

    ``args.threads`` (when > 0) sets ``torch.set_num_threads`` first; the result gets an
    ``"environment"`` entry (threads, load average before/after, ``OMP_WAIT_POLICY``) because
    timings on a shared machine mean little without it.
    """
    import torch

    threads = int(getattr(args, "threads", 0) or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    before = _load_average()
    result = get_benchmark(name)(args)
    result["environment"] = {
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_avg_1min_before": before,
        "load_avg_1min_after": _load_average(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
    }
    return result


def _load_average() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not available on every platform
        return None


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]], repeat: int, device=None, warmup: int = 1
) -> Dict[str, Dict[str, Any]]:
    """Time each callable ``repeat`` times, interleaved (round ``r`` runs every candidate once).

    Returns ``{name: {"median_ms", "min_ms", "runs_ms", "cpu_median_ms"}}``: wall-clock times,
    plus the median CPU time of this process (all its threads) per call, which a busy machine
    disturbs less. CUDA work is synchronised.
    """
    import torch

    def sync() -> None:
        if device is not None and torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    runs: Dict[str, list] = {name: [] for name in fns}
    cpu: Dict[str, list] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            sync()
            runs[name].append((time.perf_counter() - start) * 1000.0)
            cpu[name].append((time.process_time() - cpu_start) * 1000.0)
    return {
        name: {
            "median_ms": round(_median(ts), 2),
            "min_ms": round(min(ts), 2),
            "runs_ms": [round(t, 2) for t in ts],
            "cpu_median_ms": round(_median(cpu[name]), 2),
        }
        for name, ts in runs.items()
    }


def _median(values: list) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
