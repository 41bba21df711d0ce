"""Wall time of an offline plan: cold (a fresh interpreter, as `perfloop-platform plan` runs) and
warm (the program again in the same process). Reports; asserts nothing.

    python -m benchmarks.plan_time --stack byoc-example --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from infra.engine import find_project, plan_stack


def cold(stack: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", f"from infra.engine import plan_stack; plan_stack({stack!r})"],
        check=True,
        cwd=find_project().root,
    )
    return time.perf_counter() - started


def warm(stack: str) -> float:
    started = time.perf_counter()
    plan_stack(stack)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="byoc-example")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    plan_stack(args.stack)  # first run pays pulumi_gcp's module imports
    for label, measure in (("cold (new process)", cold), ("warm (same process)", warm)):
        times = [measure(args.stack) for _ in range(args.runs)]
        print(f"{args.stack} {label}: median {statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s over {args.runs} runs")


if __name__ == "__main__":
    main()
