"""SplitGP against its three baselines on the digits: accuracy vs the OOD portion p
(closing-note numbers of issue 7).

Run from the repository root (needs the ``train`` extra: torch, scikit-learn)::

    python benchmarks/bench_split_training.py               # MLP, 200 rounds, seeds 0 1 2
    python benchmarks/bench_split_training.py --quick       # 5 rounds, seed 0
    python benchmarks/bench_split_training.py --arch cnn --rounds 100 --jobs 2 --out results/split

For every seed the four methods of ``docs/kinds/split_learning.md`` (personalized local-only,
FedAvg, multi-exit = SplitGP with lambda 0, SplitGP) are trained with the same data, split,
initialization and schedule (:func:`jointopt.harness.splitgp.train_methods`); the offloading
methods answer at their headline threshold (: the grid threshold maximizing the
validation accuracy averaged over the p grid). The script prints accuracy vs p (mean and
std over seeds, unweighted mean over clients) and whether SplitGP is at or above every
baseline at each p, as measured; with ``--out`` it writes the tidy table and the figure.
Numbers are measured, never asserted; timings are wall-clock on whatever machine runs it.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd


def _one_seed(args: tuple) -> pd.DataFrame:
    from jointopt.harness import splitgp as sg

    cfg, p_grid = args
    runs = sg.train_methods(cfg)
    return sg.accuracy_frame(runs.values(), p_grid=p_grid)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 rounds, seed 0")
    ap.add_argument("--arch", default="mlp", choices=["mlp", "cnn"])
    ap.add_argument("--cut", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--gamma", type=float, default=0.5)
    ap.add_argument("--lam", type=float, default=0.2)
    ap.add_argument("--p-grid", default="0,0.2,0.4,0.6,0.8,1.0")
    ap.add_argument("--jobs", type=int, default=1, help="processes (one seed each)")
    ap.add_argument("--out", type=Path, default=None, help="folder for CSV and PNG")
    args = ap.parse_args(argv)

    from jointopt.harness import splitgp as sg

    rounds = 5 if args.quick else args.rounds
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    p_grid = tuple(float(p) for p in args.p_grid.split(","))
    cfgs = [sg.SplitTrainConfig(arch=args.arch, cut=args.cut, rounds=rounds, gamma=args.gamma,
                                lam=args.lam, seed=s) for s in seeds]
    print(f"SplitGP vs baselines: arch={args.arch} cut={args.cut} rounds={rounds} "
          f"gamma={args.gamma} lambda={args.lam} seeds={seeds} (K=10 clients, 2 label "
          f"shards each)")
    t0 = time.perf_counter()
    work = [(c, p_grid) for c in cfgs]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            frames = list(pool.map(_one_seed, work))
    else:
        frames = [_one_seed(w) for w in work]
    frame = pd.concat(frames, ignore_index=True)
    wall = time.perf_counter() - t0

    thr = frame.groupby(["method", "seed"])["e_th"].first().unstack("seed")
    print("\nheadline thresholds E_th (nats; ln C = on device / never offload):")
    print(thr.round(3).to_string())
    table = sg.compare(frame)
    methods = [m for m in sg.METHODS if m in table.columns]
    shown = pd.DataFrame({"p": table["p"]})
    for m in methods:
        shown[m] = [f"{a:.4f} ± {s:.4f}" for a, s in zip(table[m], table[f"{m}_std"],
                                                         strict=True)]
    shown["splitgp >= all"] = table["splitgp_at_or_above_all"]
    q = frame[frame["method"].isin(["multi_exit", "splitgp"])].groupby(["p", "method"])["q"]
    print(f"\naccuracy vs p (mean ± std over {len(seeds)} seed(s), mean over clients):")
    print(shown.to_string(index=False))
    print("\nmeasured offload rate q^ at the headline threshold (mean over seeds):")
    print(q.mean().unstack("method").round(4).to_string())
    n_yes = int(table["splitgp_at_or_above_all"].sum())
    print(f"\nSplitGP at or above every baseline at {n_yes}/{len(table)} values of p")
    print(f"wall time: {wall:.1f} s (shared machine)")
    if args.out is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        args.out.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out / "split_accuracy_vs_p.csv", index=False)
        table.to_csv(args.out / "split_accuracy_vs_p_summary.csv", index=False)
        fig, ax = plt.subplots(figsize=(5.5, 4))
        sg.plot_accuracy_vs_p(frame, ax, title=f"{args.arch}, cut {args.cut}, {rounds} rounds, "
                                               f"{len(seeds)} seed(s)")
        fig.tight_layout()
        fig.savefig(args.out / "split_accuracy_vs_p.png", dpi=120)
        print(f"wrote {args.out}/split_accuracy_vs_p.(csv|png)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
