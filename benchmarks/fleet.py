"""Fleet plan at scale. One tenant's offline plan, warm (in-process, cell outputs given) and cold
(a new process, as `perfloop-platform plan --stack tenant-acme` runs: imports, cell, tenant);
then `fleet plan` of generated tenants, each size in a fresh process: wall time, tenants/s, peak
memory of the parent and of the largest worker, resources per tenant. Reports; asserts nothing.

    python -m benchmarks.fleet [--runs 5] [--sizes 100 1000] [--jobs N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from infra.engine import find_project, plan_stack

CELL = "cell-example"
TENANT = "tenant-acme"


def warm(cell_outputs: dict, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        plan_stack(TENANT, cell_outputs=cell_outputs)
        times.append(time.perf_counter() - started)
    return times


def cold(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"from infra.engine import plan_stack; plan_stack({TENANT!r})"], check=True, cwd=find_project().root)
        times.append(time.perf_counter() - started)
    return times


def measure(size: int, jobs: int) -> None:
    """In a fresh process: one `fleet plan` with `size` generated tenants and --out (every plan
    written and diffed, as CI would run it); prints one JSON line for the parent."""
    from infra.fleet import plan_fleet

    with tempfile.TemporaryDirectory() as out:
        fleet = plan_fleet(CELL, out_dir=Path(out), jobs=jobs, generated=size, progress=io.StringIO())
    # ru_maxrss is KiB on Linux. Children: the largest worker; forked workers count the pages
    # they share with the parent too, so parent + largest worker overstates the sum.
    peak = {who: resource.getrusage(which).ru_maxrss / 1024 for who, which in (("parent", resource.RUSAGE_SELF), ("worker", resource.RUSAGE_CHILDREN))}
    counts = [r.resources for r in fleet.rows]
    print(json.dumps({"tenants": len(fleet.rows) + len(fleet.failures), "failures": len(fleet.failures), "seconds": fleet.seconds, "peak_mib": peak, "resources": counts}))


def fleet_run(size: int, jobs: int) -> dict:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", f"from benchmarks.fleet import measure; measure({size}, {jobs})"],
        check=True, capture_output=True, text=True, cwd=find_project().root,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["process_seconds"] = time.perf_counter() - started
    return report


def describe(times: list[float]) -> str:
    return f"median {statistics.median(times):.3f} s, min {min(times):.3f} s, max {max(times):.3f} s over {len(times)} runs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{l:.2f}' for l in os.getloadavg())} at start")

    cell_outputs = plan_stack(CELL).outputs  # pays the imports; the cell is planned once, as the fleet does
    print(f"{TENANT} warm (in-process, cell outputs given): {describe(warm(cell_outputs, args.runs))}")
    print(f"{TENANT} cold (new process: imports, cell, tenant): {describe(cold(args.runs))}")

    runs = {}
    for size in args.sizes:
        report = runs[size] = fleet_run(size, args.jobs)
        n, seconds = report["tenants"], report["seconds"]
        counts = report["resources"]
        print(
            f"fleet plan, {size} generated (+ example tenants = {n}), {args.jobs} jobs: process wall {report['process_seconds']:.1f} s, "
            f"tenants {seconds:.1f} s = {n / seconds:.1f} tenants/s ({seconds / n * 1000:.0f} ms each); "
            f"peak RSS parent {report['peak_mib']['parent']:.0f} MiB, largest worker {report['peak_mib']['worker']:.0f} MiB; "
            f"resources per tenant min {min(counts)} / median {statistics.median(counts):g} / max {max(counts)}; failures {report['failures']}"
        )
    if len(runs) >= 2:
        small, large = min(runs), max(runs)
        per_small = runs[small]["seconds"] / runs[small]["tenants"]
        per_large = runs[large]["seconds"] / runs[large]["tenants"]
        ratio = per_large / per_small
        verdict = "roughly linear" if 0.8 <= ratio <= 1.25 else "NOT linear"
        print(f"scaling {small} → {large}: time per tenant {per_small * 1000:.0f} → {per_large * 1000:.0f} ms (× {ratio:.2f}): {verdict}")


if __name__ == "__main__":
    main()
