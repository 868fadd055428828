"""Time the surrogate: T rounds for N clients, online controller and a static baseline.

    python benchmarks/bench_surrogate.py            # T = 1000, N in {100, 1k, 10k}
    python benchmarks/bench_surrogate.py --quick    # a few seconds

Instances are the built-in ``large`` scenario resized to N clients (heterogeneous rates,
deadlines, costs, caps and budgets). The static baseline (``equal_split``) isolates the
cost of the simulation itself; the online policy adds one warm-started per-round solve a
round, to convergence or (``controller.sweeps_per_round = 1``) one ascent sweep a round.
Prints a table with the ratios to the baseline; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from jointopt import scenarios
from jointopt.surrogate import simulate

TARGET = "online policy, N = 10,000, T = 1000 under 5 s (2-core machine)"


def instance(n: int):
    raw = scenarios.read_scenario("large")
    raw["clients"]["count"] = n
    return scenarios.from_dict(raw)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--rounds", type=int, help="rounds T (default 1000, quick 20)")
    parser.add_argument("--sizes", type=int, nargs="+", help="client counts N")
    parser.add_argument("--out", help="also write the table as CSV")
    args = parser.parse_args(argv)
    rounds = args.rounds or (20 if args.quick else 1000)
    sizes = args.sizes or ([100, 1000] if args.quick else [100, 1000, 10000])
    rows = []
    for n in sizes:
        problem = instance(n)
        row = {"N": n, "T": rounds}
        one_sweep = problem.replace(
            controller={**problem.to_dict()["controller"], "sweeps_per_round": 1})
        for label, prob, policy in (("equal_split", problem, "equal_split"),
                                    ("online", problem, "online"),
                                    ("online_1sweep", one_sweep, "online")):
            start = time.perf_counter()
            res = simulate(prob, policy, rounds=rounds, seed=0)
            row[f"{label}_s"] = time.perf_counter() - start
            row[f"{label}_acc"] = res.summary["avg_timely_accuracy"]
        row["online/baseline"] = row["online_s"] / row["equal_split_s"]
        row["online_1sweep/baseline"] = row["online_1sweep_s"] / row["equal_split_s"]
        rows.append(row)
        print(f"N={n}: equal_split {row['equal_split_s']:.2f} s, online {row['online_s']:.2f} s,"
              f" online 1 sweep/round {row['online_1sweep_s']:.2f} s", flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    big = table[(table["N"] == 10000) & (table["T"] == 1000)]
    if len(big):
        print(f"\ntarget: {TARGET}")
        for label in ("equal_split", "online", "online_1sweep"):
            seconds = float(big[f"{label}_s"].iloc[0])
            print(f"  {label:14s} {seconds:7.2f} s -> {'PASS' if seconds < 5 else 'MISS'}")
    if args.out:
        table.to_csv(args.out, index=False)
    return table


if __name__ == "__main__":
    main()
