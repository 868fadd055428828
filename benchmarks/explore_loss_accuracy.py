"""Does the training loss tell a model's accuracy? Real training at several participation
levels, round by round.

The surrogate of the joint training-inference kind reads every model version's accuracy off
one number, its error proxy (the training loss ``K``), through the accuracy map. This script
measures where that holds in real training (:mod:`jointopt.harness.fl`)::

    python benchmarks/explore_loss_accuracy.py analytic          # 16 seeds, 20 rounds
    python benchmarks/explore_loss_accuracy.py default --levels 1,0.5,0.2 --rounds 40
    python benchmarks/explore_loss_accuracy.py --quick            # smoke run

For every participation level ``q`` and run seed, the calibration's pilot policy at that level
(every client trains with probability ``q``; downloads and service at their maximum) trains
``--rounds`` rounds. Every level runs the same run seeds, so a seed's runs share the initial
model, the data and the batches' generator, and differ in who takes part. Printed per round:

* each level's mean training loss ``K`` and the accuracy of the round's global model on the
  request mix;
* the paired difference between the highest and the lowest level, in accuracy and in loss,
  with 95% intervals (t over seeds);
* ``at equal loss``: the highest level's accuracy at the loss the lowest level has that round
  (interpolated along the same seed's run at the highest level), minus the lowest level's
  accuracy, with its 95% interval. A map reads one accuracy off one loss; where this gap is
  outside its interval, no map of the loss, of any shape, gives both levels their accuracy.

``--switch R``: the lowest level's runs train at the highest level from round ``R`` on. How
fast the gap at equal loss closes then says whether it belongs to the round that aggregated
the version or to the run's history (on ``analytic``, switching 0.2 to 1 at round 5: 0.19 at
round 5, 0.015 at round 6, under 0.01 from round 7).

``--out`` writes every (level, seed, round) row as CSV, ``--plot`` a figure of accuracy against
loss per level. Numbers are measured, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def paired(diff: np.ndarray) -> tuple[float, float]:
    """Mean of ``diff`` over seeds and the half-width of its 95% t interval
    (:func:`~jointopt.harness.validate.paired_interval`)."""
    from jointopt.harness.validate import paired_interval

    mean, _, hi = paired_interval(diff)
    return mean, hi - mean


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default="analytic", help="built-in name or TOML path")
    ap.add_argument("--quick", action="store_true", help="2 seeds, 4 rounds, levels 1 and 0.2")
    ap.add_argument("--levels", default="1,0.5,0.2", help="comma list of participation levels")
    ap.add_argument("--seeds", type=int, default=16, help="run seeds 0 .. N-1 (at least 2)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--switch", type=int, default=None, metavar="R",
                    help="the lowest level trains at the highest from round R on")
    ap.add_argument("--out", type=Path, default=None, help="CSV of every (level, seed, round)")
    ap.add_argument("--plot", type=Path, default=None, help="PNG: accuracy against loss")
    args = ap.parse_args(argv)

    from jointopt.errors import JointoptError
    from jointopt.harness.calibrate import pilot_policy
    from jointopt.harness.validate import make_harness
    from jointopt.scenarios import load

    try:
        levels = [1.0, 0.2] if args.quick else [float(v) for v in args.levels.split(",")]
    except ValueError:
        ap.error(f"--levels must be a comma list of numbers, got {args.levels!r}")
    levels = sorted(set(levels), reverse=True)
    seeds = 2 if args.quick else args.seeds
    rounds = 4 if args.quick else args.rounds
    if len(levels) < 2 or any(not 0.0 < q <= 1.0 for q in levels):
        ap.error("--levels needs at least two distinct levels in (0, 1]")
    if seeds < 2 or rounds < 1:
        ap.error("--seeds must be at least 2 and --rounds at least 1")
    if args.switch is not None and not 0 < args.switch <= rounds:
        ap.error(f"--switch must be a round in 1 .. {rounds}, got {args.switch}")
    try:
        problem = load(args.scenario)
    except JointoptError as exc:
        ap.error(str(exc))
    if problem.kind != "joint_training_inference":
        ap.error(f"{args.scenario} is a {problem.kind} scenario; this script trains the "
                 "joint_training_inference kind")

    rows = []
    start = time.perf_counter()
    with make_harness(problem) as harness:
        for q in levels:
            policy = pilot_policy(problem, q)
            if args.switch is not None and q == levels[-1]:
                policy = Switch(policy, pilot_policy(problem, levels[0]), args.switch)
            for s in range(seeds):
                run = harness.run(policy, rounds=rounds, seed=s, serving_draws=1)
                rows += [{"level": q, "seed": s, "round": t, "K": float(run.K[t]),
                          "accuracy": float(run.version_accuracy[t])}
                         for t in range(rounds + 1)]
            print(f"level {q:g}: {seeds} runs of {rounds} rounds "
                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    frame = pd.DataFrame(rows)
    hi, lo = levels[0], levels[-1]
    wide = {key: frame.pivot_table(index="round", columns=["level", "seed"], values=key)
            for key in ("K", "accuracy")}
    equal = equal_loss_gap(wide["K"][hi].to_numpy(), wide["accuracy"][hi].to_numpy(),
                           wide["K"][lo].to_numpy(), wide["accuracy"][lo].to_numpy())
    switch = ("" if args.switch is None else
              f" (level {lo:g} trains at {hi:g} from round {args.switch} on)")
    print(f"\n{problem.name}: {seeds} run seeds, participation "
          f"{', '.join(f'{q:g}' for q in levels)}{switch}; gaps are level {hi:g} minus "
          f"level {lo:g}\n")
    head = " ".join(f"{'K q=' + format(q, 'g'):>9} {'acc':>6}" for q in levels)
    print(f"{'round':>5} {head}  {'accuracy gap':>16} {'loss gap':>16} {'at equal loss':>16}")
    beyond = []
    for t in range(rounds + 1):
        cells = " ".join(f"{wide['K'].loc[t, q].mean():9.3f} "
                         f"{wide['accuracy'].loc[t, q].mean():6.3f}" for q in levels)
        acc_gap = paired(wide["accuracy"].loc[t, hi].to_numpy()
                         - wide["accuracy"].loc[t, lo].to_numpy())
        loss_gap = paired(wide["K"].loc[t, hi].to_numpy() - wide["K"].loc[t, lo].to_numpy())
        same = equal[t][~np.isnan(equal[t])]
        at_equal = paired(same) if len(same) else (float("nan"), float("nan"))
        if len(same) >= 2 and abs(at_equal[0]) > at_equal[1]:
            beyond.append(t)
        print(f"{t:5d} {cells}  {acc_gap[0]:+7.3f} ±{acc_gap[1]:6.3f}  {loss_gap[0]:+7.3f} "
              f"±{loss_gap[1]:6.3f}  {at_equal[0]:+7.3f} ±{at_equal[1]:6.3f}")
    print(f"\nrounds whose accuracy differs at equal loss (outside the 95% interval): "
          f"{', '.join(map(str, beyond)) if beyond else 'none'}")
    print(f"wall time {time.perf_counter() - start:.0f} s")
    if args.out is not None:
        frame.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    if args.plot is not None:
        plot(frame, levels, args.plot, problem.name)
        print(f"wrote {args.plot}")
    return 0


class Switch:
    """A pilot that follows ``before`` until round ``at``, then ``after``."""

    def __init__(self, before, after, at: int):
        self.before, self.after, self.at = before, after, at
        self.name, self.backlog = f"{before.name}_then_{after.name}", 0.0

    def reset(self, problem):
        self.before.reset(problem)
        self.after.reset(problem)

    def decide(self, obs):
        return (self.before if obs.t < self.at else self.after).decide(obs)


def equal_loss_gap(K_hi, acc_hi, K_lo, acc_lo) -> np.ndarray:
    """``(rounds, seeds)``: the high level's accuracy at the low level's loss (interpolated
    along the same seed's high-level run, sorted by loss), minus the low level's accuracy;
    NaN where that loss is outside the high-level run's range."""
    out = np.full(K_lo.shape, np.nan)
    for s in range(K_lo.shape[1]):
        order = np.argsort(K_hi[:, s])
        k, a = K_hi[order, s], acc_hi[order, s]
        inside = (K_lo[:, s] >= k[0]) & (K_lo[:, s] <= k[-1])
        out[inside, s] = np.interp(K_lo[inside, s], k, a) - acc_lo[inside, s]
    return out


def plot(frame: pd.DataFrame, levels, path: Path, name: str) -> None:
    """Mean accuracy against mean loss per level, one point a round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for q in levels:
        mean = frame[frame["level"] == q].groupby("round")[["K", "accuracy"]].mean()
        ax.plot(mean["K"], mean["accuracy"], marker="o", ms=3, label=f"q = {q:g}")
    ax.set_xlabel("training loss K (mean over seeds)")
    ax.set_ylabel("accuracy of the global model")
    ax.set_title(f"{name}: accuracy against loss, round by round")
    ax.invert_xaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
