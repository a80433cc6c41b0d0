"""Run every benchmark in one process and write outputs/bench/results.json plus a table.

Usage: python benchmarks/run_all.py [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "outputs" / "bench"
SUITES = ["bench_training", "bench_curvature", "bench_evaluation", "bench_threads", "bench_dynamics"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and samples")
    parser.add_argument("--only", nargs="*", choices=SUITES, help="run only these suites")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    results = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick}
    for name in args.only or SUITES:
        module = importlib.import_module(name)
        print(f"== {name}", flush=True)
        results[name.removeprefix("bench_")] = r = module.run(quick=args.quick)
        module.print_table(r)
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(OUT / "results.json")
    print(f"wrote {OUT / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
