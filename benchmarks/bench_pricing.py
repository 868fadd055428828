"""The V trade-off of the online controller under both pricings (closing-note numbers).

Run from the repository root::

    python benchmarks/bench_pricing.py                 # default scenario, 300 rounds, seeds 0-2
    python benchmarks/bench_pricing.py --quick         # 2 values of V, 40 rounds, one seed

For each ``controller.V`` and each ``controller.pricing`` (``backlog``: the textbook price
``Z``; ``exact``: the backlog the decision leaves, :mod:`jointopt.controller`) the online
policy runs in the surrogate; the script prints the mean virtual-queue backlog, the average
timely accuracy, the average use relative to the budget, the round solves a round and the
wall time a round (the time depends on the machine's load). Numbers are measured, never
asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from jointopt import load_scenario
from jointopt.policies import Online
from jointopt.surrogate import simulate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--Vs", default="0.3,1,3,10,30,100")
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    Vs = [float(v) for v in args.Vs.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    rounds = args.rounds
    if args.quick:
        Vs, seeds, rounds = [1.0, 10.0], [0], 40
    base = load_scenario(args.scenario)
    rows = []
    for pricing in ("backlog", "exact"):
        for V in Vs:
            problem = base.replace(controller={**base.to_dict()["controller"], "V": V,
                                               "pricing": pricing})
            runs, solves, t0 = [], [], time.perf_counter()
            for seed in seeds:
                policy = Online()
                runs.append(simulate(problem, policy, rounds=rounds, seed=seed).summary)
                solves.append(policy.controller.solves / rounds)
            wall = (time.perf_counter() - t0) / (rounds * len(seeds))
            rows.append({"pricing": pricing, "V": V,
                         "mean_backlog": np.mean([r["mean_backlog"] for r in runs]),
                         "timely_accuracy": np.mean([r["avg_timely_accuracy"] for r in runs]),
                         "use/budget": np.mean([r["budget_ratio"] for r in runs]),
                         "solves/round": np.mean(solves), "ms/round": 1e3 * wall})
    table = pd.DataFrame(rows)
    print(f"scenario {base.name}: online, {rounds} rounds, seeds {seeds} (measured; wall "
          f"times depend on the machine's load)")
    print(table.to_string(index=False, float_format="{:.4f}".format))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
