"""Where, if anywhere, does SplitGP beat both its baselines? A measured sweep over the
network, the number of rounds and the mixing weight lambda on the digits.

The source paper (Han et al., SplitGP, INFOCOM 2023) claims that SplitGP gives both
personalization (as good as a personalized model when a client's test data looks like its
training data, p = 0) and generalization (as good as FedAvg when many test samples come from
other clients' classes, large p). ``notebooks/split_learning.ipynb`` measures one setting
(MLP, 200 rounds, lambda 0.2); this script measures a grid around it::

    python benchmarks/explore_splitgp_claim.py                       # MLP grid, seeds 0 1
    python benchmarks/explore_splitgp_claim.py --arch cnn --rounds 50 --lams 0.2,0.8 --seeds 0
    python benchmarks/explore_splitgp_claim.py --quick               # smoke run

For every (network, rounds, seed) the baselines (local-only, FedAvg) are trained once and
SplitGP once per lambda (lambda 0 is the multi-exit baseline), all with the same data, split
and initialization (:mod:`jointopt.harness.splitgp`). SplitGP answers at two thresholds:

* ``headline``: the grid threshold maximizing validation accuracy averaged over the p grid
  (what the notebook uses);
* ``per-p``: the grid threshold maximizing validation accuracy at that p (SplitGP told p:
  a generous variant; if it does not beat the baselines, no threshold rule would).

Printed per (network, rounds, lambda): the margin of SplitGP over the better of local-only
and FedAvg at each p (mean over seeds; >= 0 means SplitGP is at or above both there), and
how well the entropy rule finds the OOD samples at p = 1 (offload rate among OOD and among
main-class samples at the headline threshold). Numbers are measured, never asserted;
timings are wall-clock on whatever machine runs it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="MLP, 3 rounds, lambda 0.2, seed 0")
    ap.add_argument("--arch", default="mlp", help="comma list of mlp, cnn")
    ap.add_argument("--rounds", default="25,100,200", help="comma list")
    ap.add_argument("--lams", default="0,0.2,0.5,0.8,1.0", help="comma list of lambda")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--cut", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="CSV of every (config, p) row")
    args = ap.parse_args(argv)

    import math

    from jointopt.harness import splitgp as sg
    from jointopt.harness.data import load_digits_data

    archs = args.arch.split(",")
    rounds_list = [3] if args.quick else [int(r) for r in args.rounds.split(",")]
    lams = [0.2] if args.quick else [float(v) for v in args.lams.split(",")]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    p_grid = sg.P_GRID
    rows, t0 = [], time.perf_counter()
    for arch in archs:
        for rounds in rounds_list:
            for seed in seeds:
                t1 = time.perf_counter()
                data = load_digits_data(test_size=0.3, val_size=1 / 7, seed=seed)
                cfg = sg.SplitTrainConfig(arch=arch, cut=args.cut, rounds=rounds, seed=seed)
                base = {m: sg.train(cfg, m, data=data) for m in ("local", "fedavg")}
                acc = {m: {p: r.accuracy(p) for p in p_grid} for m, r in base.items()}
                for lam in lams:
                    run = sg.train(sg.SplitTrainConfig(**{**cfg.__dict__, "lam": lam}),
                                   "multi_exit" if lam == 0 else "splitgp", data=data)
                    e_head = run.headline_threshold()
                    ood, main = run.detection_rates(1.0, e_head)
                    for p in p_grid:
                        e_p = run.headline_threshold(p_grid=(p,))
                        rows.append({"arch": arch, "rounds": rounds, "lam": lam, "seed": seed,
                                     "p": p, "local": acc["local"][p],
                                     "fedavg": acc["fedavg"][p], "e_headline": e_head,
                                     "splitgp_headline": run.accuracy(p, e_head),
                                     "e_per_p": e_p, "splitgp_per_p": run.accuracy(p, e_p),
                                     "never_offload": run.accuracy(p, math.log(10)),
                                     "ood_offloaded_p1": ood, "main_offloaded_p1": main})
                print(f"  {arch} {rounds} rounds seed {seed}: {2 + len(lams)} runs in "
                      f"{time.perf_counter() - t1:.1f} s", file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    df["best_baseline"] = df[["local", "fedavg"]].max(axis=1)
    for v in ("headline", "per_p"):
        df[f"margin_{v}"] = df[f"splitgp_{v}"] - df["best_baseline"]
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out, index=False)

    m = df.groupby(["arch", "rounds", "lam", "p"])[
        ["local", "fedavg", "splitgp_headline", "splitgp_per_p", "never_offload",
         "margin_headline", "margin_per_p"]].mean()
    print(f"SplitGP vs local-only and FedAvg on digits (K = 10 clients, 2 label shards each), "
          f"cut {args.cut}, seeds {seeds}; mean over seeds")
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(m.round(4).to_string())
    det = df.groupby(["arch", "rounds", "lam"])[
        ["e_headline", "ood_offloaded_p1", "main_offloaded_p1"]].mean()
    print("\nheadline threshold (nats, mean over seeds) and offload rate among OOD / main-class "
          "samples at p = 1 (ideal 1 / 0):")
    print(det.round(3).to_string())
    wins = m.groupby(["arch", "rounds", "lam"]).apply(
        lambda g: pd.Series({
            "p_where_headline_>=_both": [p for (_, _, _, p), v in g["margin_headline"].items()
                                         if v >= 0],
            "p_where_per_p_>=_both": [p for (_, _, _, p), v in g["margin_per_p"].items()
                                      if v >= 0],
            "worst_margin_headline": g["margin_headline"].min(),
            "worst_margin_per_p": g["margin_per_p"].min()}))
    print("\nwhere SplitGP is at or above both baselines (margin >= 0, mean over seeds):")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(wins.round(4).to_string())
    print(f"\nwall time: {time.perf_counter() - t0:.1f} s (shared machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
