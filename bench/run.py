"""`make bench`: run the benchmarks and write bench/results/<name>.json plus bench/results/SUMMARY.md.

Ratios are measured side by side in one run (this machine is shared and noisy); absolute numbers are
for orientation only. ``python -m bench.run --only NAME [--scale N]`` runs one benchmark.
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.harness import write_result, write_summary
from bench.registry import BENCHMARKS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run of the harness)")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the data sizes (features_vs_duckdb: 1 = 1M and 10M events; gx_events_overhead: 1 = 10M)",
    )
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error(f"--scale must be positive, got {args.scale}")
    for name in args.only or sorted(BENCHMARKS):
        print(f"\n=== bench {name}", flush=True)
        started = time.time()
        result = BENCHMARKS[name](args)
        result["wall_s"] = round(time.time() - started, 1)
        print(f"-> {write_result(name, result)}")
    print(f"summary: {write_summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
