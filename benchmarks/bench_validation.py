"""How well the calibrated surrogate tracks real federated training (closing-note numbers).

Run from the repository root (needs the ``train`` extra: torch, scikit-learn)::

    python benchmarks/bench_validation.py                  # default scenario, 6 policies,
                                                           # seeds 0 1 2, 100 rounds
    python benchmarks/bench_validation.py --quick          # 3 policies, 10 clients, 1 seed
    python benchmarks/bench_validation.py --rounds 200 --seeds 0,1,2,3 --out results/val

For every seed :func:`jointopt.harness.validate.validate` calibrates the surrogate on pilot
runs and runs every policy in the calibrated surrogate and in real FedAvg on the digits.
The script prints, per seed and pooled over seeds, the Spearman rank correlation between
predicted and measured average timely accuracy across policies, and the mean absolute
error; with ``--out`` it writes the tidy table (``validation_all.csv``) and the figure
(``validation_all.png``: one point per policy and seed). Numbers are measured, never
asserted.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from jointopt import load_scenario
from jointopt.harness.validate import (
    DEFAULT_POLICIES,
    plot_validation,
    resize,
    spearman,
    validate,
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--policies", default=",".join(DEFAULT_POLICIES))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--clients", type=int)
    ap.add_argument("--surrogate-seeds", type=int, default=20)
    ap.add_argument("--quick", action="store_true",
                    help="3 policies, 10 clients, 30 rounds, one seed")
    ap.add_argument("--out", metavar="DIR")
    args = ap.parse_args(argv)
    policies = args.policies.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    rounds, clients = args.rounds, args.clients
    if args.quick:
        policies, seeds, rounds, clients = ["online", "training_first", "equal_split"], [0], 30, 10
    problem = load_scenario(args.scenario)
    if clients:
        problem = resize(problem, clients)
    tables = []
    print(f"scenario {problem.name}: {problem.clients.count} clients, {rounds} rounds, "
          f"policies {', '.join(policies)}")
    for seed in seeds:
        t0 = time.perf_counter()
        res = validate(problem, policies, rounds=rounds, seed=seed,
                       surrogate_seeds=args.surrogate_seeds)
        conv, acc = res.calibration["convergence"], res.calibration["accuracy"]
        print(f"\nseed {seed} ({time.perf_counter() - t0:.1f} s): calibration a={conv['a']:.3f} "
              f"b={conv['b']:.3f} c={conv['c']:.4f} (r2 {conv['r2']:.3f}), accuracy map "
              f"{acc['map']} r2 {acc['r2']:.3f}")
        print(res.table[["policy", "predicted", "measured", "abs_error"]]
              .to_string(index=False, float_format="{:.4f}".format))
        print(f"spearman {res.spearman:.3f}  mae {res.mae:.4f}")
        tables.append(res.table)
    table = pd.concat(tables, ignore_index=True)
    per_seed = table.groupby("seed").apply(
        lambda g: pd.Series({"spearman": spearman(g["predicted"], g["measured"]),
                             "mae": g["abs_error"].mean()}), include_groups=False)
    means = table.groupby("policy", sort=False)[["predicted", "measured"]].mean()
    print("\nsummary (validation_spearman, validation_mae)")
    print(f"per-seed spearman: mean {per_seed['spearman'].mean():.3f} "
          f"(min {per_seed['spearman'].min():.3f}); per-seed mae: mean "
          f"{per_seed['mae'].mean():.4f}")
    print(f"pooled over {len(seeds)} seed(s): spearman of seed-mean accuracies "
          f"{spearman(means['predicted'], means['measured']):.3f}, mae "
          f"{table['abs_error'].mean():.4f}")
    print(means.to_string(float_format="{:.4f}".format))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "validation_all.csv", index=False)
        plot_validation(table, out / "validation_all.png")
        print(f"wrote {out / 'validation_all.csv'} and {out / 'validation_all.png'}")
    return 0 if np.isfinite(table["abs_error"]).all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
