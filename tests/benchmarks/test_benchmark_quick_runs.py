"""The rcnn-vs-spp, vs-torchvision and memory benchmarks run end to end in their ``quick``
setting (tiny models, a few windows, one round) and return the documented keys. No timing
targets here: the figures come from ``tools/benchmark.py`` runs."""

from types import SimpleNamespace

import pytest

from sppdet.benchmarks import BENCHMARKS, get_benchmark, run_benchmark
from sppdet.errors import SppdetError

QUICK = SimpleNamespace(quick=True, repeat=1, device="cpu")


def test_every_registered_benchmark_resolves_to_a_function():
    for name in BENCHMARKS:
        assert callable(get_benchmark(name)), name
    assert {"spp", "proposals", "rcnn-vs-spp", "vs-torchvision", "memory"} <= set(BENCHMARKS)
    known = r"\(known: compress, memory, proposals, rcnn-vs-spp"
    with pytest.raises(SppdetError, match=r"unknown benchmark 'nope' " + known):
        get_benchmark("nope")


def test_rcnn_vs_spp_quick():
    r = run_benchmark("rcnn-vs-spp", QUICK)
    assert {
        "setup",
        "timings_ms",
        "spp_ms",
        "rcnn_ms",
        "speedup_conv",
        "speedup_total",
        "gflops",
        "flop_ratio_conv",
        "flop_ratio_total",
        "speedup_total_cpu_time",
    } <= set(r)
    assert not any(k.startswith(("meets_target", "target")) for k in r)  # goals live in docs/benchmarks.md
    assert r["setup"]["rcnn_timed_windows"] < r["setup"]["rcnn_scaled_linearly_to"] == r["setup"]["windows"] == 50
    for key in ("full_fc", "svd_fc", "svd_low_rank_fc"):
        assert r["speedup_total"][key] > 0 and r["speedup_total_cpu_time"][key] > 0 and r["flop_ratio_total"][key] > 1
    # every R-CNN window runs the whole conv stack: far more conv FLOPs than one image pass
    assert r["gflops"]["rcnn_conv"] > r["gflops"]["spp_conv"]
    assert r["gflops"]["fc"]["svd_low_rank_fc"] <= r["gflops"]["fc"]["svd_fc"] < r["gflops"]["fc"]["full_fc"]


@pytest.mark.slow  # 14 s measured (load 13-19 on 2 cores)
def test_vs_torchvision_quick():
    r = run_benchmark("vs-torchvision", QUICK)
    assert {
        "setup",
        "timings_ms",
        "latency_ms",
        "ratios",
        "latency_ms_cpu_time",
        "ratios_cpu_time",
    } <= set(r)
    assert not any(k.startswith(("meets_target", "target")) for k in r)
    assert r["setup"]["ours"]["proposals"] == 50
    for key in (
        "torchvision_frcnn",
        "edgeboxes",
        "ours_detect",
        "ours_detect_svd",
        "ours_detect_incl_edgeboxes",
        "ours_detect_svd_incl_edgeboxes",
    ):
        assert r["latency_ms"][key] > 0
    assert set(r["ratios"]) == {
        "detect_vs_torchvision",
        "detect_svd_vs_torchvision",
        "detect_incl_edgeboxes_vs_torchvision",
        "detect_svd_incl_edgeboxes_vs_torchvision",
    }


@pytest.mark.slow  # 25 s measured (load 13-19 on 2 cores)
def test_memory_quick_runs_in_a_child_process():
    r = run_benchmark("memory", QUICK)
    (m,) = r["models"].values()
    assert m["proposals"] == 50 and m["image_hw"] == [200, 200]
    assert m["peak_rss_mb"] >= m["detect_peak_rss_mb"] >= m["rss_before_detect_mb"] > 0
    assert m["detect_increment_mb"] >= 0
