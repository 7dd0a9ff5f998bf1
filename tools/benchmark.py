#!/usr/bin/env python
"""Run sppdet benchmarks; print the JSON result and optionally save it.

    python tools/benchmark.py spp --out output/spp.json --repeat 7
    python tools/benchmark.py all --device cuda
    python tools/benchmark.py compress --weights output/bccd/model_final.pth --out compress.json
    python tools/benchmark.py rcnn-vs-spp --weights output/bccd/model_final.pth --compress-result compress.json

The output is ``{name: result}`` for every benchmark run. See :mod:`sppdet.benchmarks`.

Unless OMP_WAIT_POLICY is already set, it is set to PASSIVE for this process: on a shared,
busy machine OpenMP worker threads that spin between ops steal the cores the work needs and
turn multi-threaded timings into noise. The value used is recorded in each result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from sppdet.benchmarks import BENCHMARKS, run_benchmark
from sppdet.cli import run_tool, setup_logging
from sppdet.fileio import save_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(BENCHMARKS) + ["all"], help="benchmark to run, or 'all'")
    parser.add_argument("--out", help="also write the JSON here (atomically)")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds per measurement (median reported)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch.set_num_threads before running (default 0: torch's default)"
    )
    parser.add_argument("--quick", action="store_true", help="small settings (a smoke run), where a benchmark has them")
    parser.add_argument("--weights", help="trained checkpoint (compress: required; rcnn-vs-spp: not random ZF-5)")
    parser.add_argument("--split", help="compress: evaluate on this split (default: the config's test split)")
    parser.add_argument("--limit", type=int, default=0, help="compress: only the first N images (smoke run)")
    parser.add_argument("--save-weights", help="compress: save the checkpoint with the chosen test.fc_compression here")
    parser.add_argument(
        "--compress-result", help="rcnn-vs-spp --weights: JSON of 'compress' whose best_within_0.5pt setting to time"
    )
    parser.add_argument("opts", nargs="*", help="KEY=VALUE config overrides for --weights, e.g. proposals.cache_dir=D")
    args = parser.parse_intermixed_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    setup_logging()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads OpenMP, i.e. later
    names = sorted(BENCHMARKS) if args.name == "all" else [args.name]
    result = {name: run_benchmark(name, args) for name in names}
    print(json.dumps(result, indent=2))
    if args.out:
        save_json(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
