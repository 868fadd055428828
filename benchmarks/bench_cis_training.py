"""Measured advantage of serving-rate-aware over equal exit weighting (CIS early exits).

Documented in ``docs/kinds/cis_early_exit.md`` [project choice]: real federated training of the
early-exit network on digits (:mod:`jointopt.harness.early_exit`, fast setting
``FAST``: DigitsEE-MLP, T = 30, K = 20) on the 7-node tree, for each data split and device
share, rules ``serving_rate`` and ``equal``, several seeds; prints the seed-paired advantage
``Delta = Acc_CIS(serving_rate) - Acc_CIS(equal)`` (mean, std, 95% CI over seeds).
``--backend surrogate`` runs the torch-free S3 surrogate instead.

    python benchmarks/bench_cis_training.py                 # full: 7 shares x 3 splits x 3 seeds
    python benchmarks/bench_cis_training.py --quick         # CI smoke run
    python benchmarks/bench_cis_training.py --with-p40      # + tiny-p40 rows ((ii))

Timings are wall-clock on whatever machine runs it (shared CPU here).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny grid (CI smoke run)")
    ap.add_argument("--nodes", type=int, default=7)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--splits", default="eq,2x,tiny")
    ap.add_argument("--shares", default="0.05,0.10,0.20,0.33,0.45,0.60,0.80")
    ap.add_argument("--pi", default="p0", help="p0 or p40")
    ap.add_argument("--backend", default="torch", choices=("torch", "surrogate"))
    ap.add_argument("--with-p40", action="store_true",
                    help="also serving_rate under p40 on tiny at shares 0.45/0.60/0.80, "
                         "compared with equal under pi = 0 (the authors' grid)")
    ap.add_argument("--out", default=None, help="CSV of the runs (resumable)")
    args = ap.parse_args(argv)

    import numpy as np
    import pandas as pd

    from jointopt.harness import cis_surrogate, early_exit
    from jointopt.harness.cis_grid import advantage, run_grid

    splits = args.splits.split(",")
    shares = args.shares.split(",")
    seeds = range(args.seeds)
    config = None
    if args.quick:
        splits, shares, seeds = ["eq", "tiny"], ["0.05", "0.80"], range(2)
        config = (early_exit.with_config(early_exit.FAST, rounds=3, local_steps=5)
                  if args.backend == "torch" else cis_surrogate.SurrogateConfig(rounds=3))
    start = time.perf_counter()
    df = run_grid(nodes=args.nodes, splits=splits, shares=shares, seeds=seeds, pi=args.pi,
                  backend=args.backend, config=config, csv=args.out,
                  progress=lambda r: print(f"  {r['split']:>4} {r['share']} {r['rule']:<12} "
                                           f"seed {r['seed']}: acc_cis {r['acc_cis']:.4f} "
                                           f"({r['wall_s']:.1f} s)", file=sys.stderr,
                                           flush=True))
    if args.with_p40 and not args.quick:
        p40_shares = [x for x in ("0.45", "0.60", "0.80") if x in shares]
        p40 = run_grid(nodes=args.nodes, splits=["tiny"], shares=p40_shares, seeds=seeds,
                       pi="p40", rules=["serving_rate"], backend=args.backend, config=config,
                       csv=args.out)
        equal0 = df[(df.split == "tiny") & (df.rule == "equal") & (df.pi == "p0")
                    & df.share.isin(p40_shares)]
        cross = pd.concat([p40[p40.pi == "p40"], equal0.assign(pi="p40")], ignore_index=True)
        df = pd.concat([df[df.pi == "p0"], cross.assign(split="tiny-p40")], ignore_index=True)
    total = time.perf_counter() - start
    adv = advantage(df)
    cfg = config or (early_exit.FAST if args.backend == "torch"
                     else cis_surrogate.SurrogateConfig())
    print(f"CIS early exits: serving_rate vs equal, {args.backend} backend, {args.nodes} nodes, "
          f"pi {args.pi}, {len(list(seeds))} seeds")
    print(f"config: {cfg}")
    print(f"{'split':>5} {'share':>6} {'serving_rate':>13} {'equal':>8} {'delta':>9} "
          f"{'std':>8} {'ci95':>8} {'n':>3}")
    for r in adv.itertuples(index=False):
        print(f"{r.split:>5} {r.share:>6} {r.serving_rate:13.4f} {r.equal:8.4f} "
              f"{r.delta_mean:+9.4f} {r.delta_std:8.4f} {r.ci95:8.4f} {r.n_seeds:3d}")
    print("tiny-p40: serving_rate under p40 against equal under pi = 0, paired by seed"
          if args.with_p40 and not args.quick else "")
    per_run = df["wall_s"].to_numpy()
    print(f"runs {len(df)}, wall {total:.1f} s, per run median {np.median(per_run):.2f} s "
          f"(shared machine)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
