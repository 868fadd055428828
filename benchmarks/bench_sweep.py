"""Time a 200-point sweep with 1 and 2 worker processes (and optionally a Dask cluster).

    python benchmarks/bench_sweep.py            # 200 points: budget x V x seeds
    python benchmarks/bench_sweep.py --quick    # 20 points

Each point simulates the online controller on the ``default`` scenario (about 0.1 s a
point). Prints the wall time per executor and the speedup over one worker; asserts
nothing about speed. The target of the sweep issue is a speedup >= 1.7 with 2 workers on
the 2-core machine.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from jointopt.sweep import SweepSpec, collect, run_sweep


def spec(quick: bool, rounds: int) -> SweepSpec:
    budgets = [2.0, 2.5, 3.0, 3.5, 4.0]
    Vs = [3.0, 10.0, 30.0, 100.0]
    seeds = tuple(range(1 if quick else 10))
    return SweepSpec(scenario="default", grid={"clients.budget": budgets, "controller.V": Vs},
                     policies=("online",), seeds=seeds, rounds=rounds)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 points instead of 200")
    parser.add_argument("--rounds", type=int, default=30, help="rounds per point (default 30)")
    parser.add_argument("--dask", action="store_true", help="also time a Dask LocalCluster")
    parser.add_argument("--out", help="also write the table as CSV")
    args = parser.parse_args(argv)
    s = spec(args.quick, args.rounds)
    n = len(s.points())
    rows, tables = [], {}
    # the baseline is a pool of one worker process (same code path as two workers); the
    # in-process run (what --workers 1 does) is shown for reference
    runs = [("pool, 1 worker", 1, "pool"), ("pool, 2 workers", 2, "pool"),
            ("in-process", 1, "inline")]
    if args.dask:
        runs.append(("dask LocalCluster, 2 workers", 2, "dask"))
    for label, workers, kind in runs:
        out = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
        try:
            start = time.perf_counter()
            if kind == "dask":
                from dask.distributed import Client, LocalCluster

                with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, Client(cluster) as c:
                    report = run_sweep(s, out, executor=c.get_executor(), workers=workers)
            elif kind == "pool":
                with ProcessPoolExecutor(max_workers=workers) as pool:
                    report = run_sweep(s, out, executor=pool, workers=workers)
            else:
                report = run_sweep(s, out, workers=1)
            seconds = time.perf_counter() - start
            tables[label] = collect(out).drop(columns=["wall_time_s"])
        finally:
            shutil.rmtree(out, ignore_errors=True)
        rows.append({"executor": label, "points": n, "done": report.done, "wall_s": seconds})
        print(f"{label}: {seconds:.2f} s", flush=True)
    table = pd.DataFrame(rows)
    table["speedup"] = table["wall_s"].iloc[0] / table["wall_s"]
    base = tables["pool, 1 worker"]
    table["same_table"] = [base.equals(t) for t in tables.values()]
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    two = float(table.loc[table["executor"] == "pool, 2 workers", "speedup"].iloc[0])
    print(f"\ntarget: speedup >= 1.7 with 2 workers: measured {two:.2f} -> "
          f"{'PASS' if two >= 1.7 else 'MISS'}")
    if args.out:
        table.to_csv(args.out, index=False)
    return table


if __name__ == "__main__":
    main()
