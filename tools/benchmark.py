#!/usr/bin/env python
"""Run sppdet benchmarks; print the JSON result and optionally save it.

    python tools/benchmark.py spp --out output/spp.json --repeat 7
    python tools/benchmark.py all --device cuda

The output is ``{name: result}`` for every benchmark run. See :mod:`sppdet.benchmarks`.
"""
from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--threads", type=int, default=0,
                        help="torch.set_num_threads before running (default 0: torch's default)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    setup_logging()
    names = sorted(BENCHMARKS) if args.name == "all" else [args.name]
    result = {name: run_benchmark(name, args) for name in names}
    print(json.dumps(result, indent=2))
    if args.out:
        save_json(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
