"""How well the calibrated surrogate tracks real federated training, and what the online
controller gains there (closing-note numbers).

Run from the repository root (needs the ``train`` extra: torch, scikit-learn)::

    python benchmarks/bench_validation.py                  # default scenario, 6 policies,
                                                           # seeds 0 1 2, 100 rounds
    python benchmarks/bench_validation.py --quick          # 3 policies, 10 clients, 1 seed
    python benchmarks/bench_validation.py --scenarios default,analytic,drift \\
        --seeds 0,1,2,3,4 --rounds 100 --out results/val

For every scenario and seed :func:`jointopt.harness.validate.validate` calibrates the
surrogate on pilot runs and runs every policy in the calibrated surrogate and in real
FedAvg on the digits (:func:`~jointopt.harness.validate.validate_seeds`). The script prints,
per seed, the Spearman rank correlation between predicted and measured average timely
accuracy across policies and the mean absolute error, and per scenario the online
controller's timely accuracy minus every baseline's, paired by seed, with 95% intervals, in
real training and as the surrogate predicted it (``--closed-loop``: the online policy
re-estimates its model during the run; ``--replicates R``: R real runs per policy,
averaged, and the MAE their run-to-run noise alone would give; ``--pilot-runs N``: N runs of
each calibration pilot). With ``--out`` it writes, per scenario, the tidy
tables and figures of :func:`~jointopt.harness.validate.write_paired`. Wall times are
printed (they depend on the machine's load). Numbers are measured, never asserted.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from jointopt import load_scenario
from jointopt.harness.validate import (
    DEFAULT_POLICIES,
    describe_calibration,
    resize,
    validate_seeds,
    write_paired,
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", "--scenario", default="default",
                    help="comma-separated scenarios (default: %(default)s)")
    ap.add_argument("--policies", default=",".join(DEFAULT_POLICIES))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--clients", type=int)
    ap.add_argument("--surrogate-seeds", type=int, default=20)
    ap.add_argument("--serving-draws", type=int,
                    help="request streams each real run's models answer per round "
                         "(default: validate's, 10)")
    ap.add_argument("--replicates", type=int, default=1,
                    help="real training runs averaged per policy (default: %(default)s)")
    ap.add_argument("--pilot-runs", type=int, default=1,
                    help="runs of each calibration pilot (default: %(default)s)")
    ap.add_argument("--closed-loop", action="store_true",
                    help="the online policy re-estimates its model during the run")
    ap.add_argument("--quick", action="store_true",
                    help="3 policies, 10 clients, 30 rounds, one seed (no interval)")
    ap.add_argument("--out", metavar="DIR")
    args = ap.parse_args(argv)
    policies = args.policies.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    rounds, clients = args.rounds, args.clients
    if args.quick:
        policies, seeds, rounds, clients = ["online", "training_first", "equal_split"], [0], 30, 10
    summary = []
    for name in args.scenarios.split(","):
        problem = load_scenario(name)
        if clients:
            problem = resize(problem, min(clients, problem.clients.count))
        print(f"\nscenario {problem.name}: {problem.clients.count} clients, {rounds} rounds, "
              f"seeds {seeds}, policies {', '.join(policies)}, "
              f"{args.serving_draws or 'default'} serving draws, {args.replicates} real "
              f"run(s) per policy, {args.pilot_runs} run(s) per pilot"
              f"{', closed loop' if args.closed_loop else ''}", flush=True)
        t0 = time.perf_counter()
        paired = validate_seeds(problem, policies, seeds=seeds, rounds=rounds,
                                surrogate_seeds=args.surrogate_seeds,
                                closed_loop=True if args.closed_loop else None,
                                serving_draws=args.serving_draws,
                                replicates=args.replicates, pilot_runs=args.pilot_runs)
        for res in paired.results:
            print(f"\nseed {res.seed} ({res.elapsed_s:.0f} s): calibration "
                  + describe_calibration(res.calibration,
                                         problem.calibration.aggregation_noise))
            print(res.table[["policy", "predicted", "measured", "abs_error"]]
                  .to_string(index=False, float_format="{:.4f}".format))
            print(f"spearman {res.spearman:.3f}  mae {res.mae:.4f}{res.noise_note()}")
        per_seed = paired.per_seed()
        print(f"\n{problem.name}: per-seed spearman min {per_seed['spearman'].min():.3f} "
              f"mean {per_seed['spearman'].mean():.3f}; per-seed mae max "
              f"{per_seed['mae'].max():.4f} mean {per_seed['mae'].mean():.4f}")
        gains = paired.gains()
        print(f"online minus each baseline, paired over {len(seeds)} seeds (95% interval):")
        print(gains.to_string(index=False, float_format="{:+.4f}".format))
        best = paired.best_gain()
        wall = time.perf_counter() - t0
        summary.append((problem.name, best, per_seed, wall))
        if args.out:
            for path in write_paired(paired, Path(args.out) / problem.name):
                print(f"wrote {path}")
    print("\nsummary: online - best baseline, paired, 95% interval (real | surrogate); "
          "per-seed spearman min, mae max; wall time")
    for name, best, per_seed, wall in summary:
        print(f"{name:10s} vs {best['baseline']:16s} real {best['measured_gain']:+.4f} "
              f"[{best['measured_lo']:+.4f}, {best['measured_hi']:+.4f}] | surrogate "
              f"{best['predicted_gain']:+.4f} [{best['predicted_lo']:+.4f}, "
              f"{best['predicted_hi']:+.4f}]; spearman >= {per_seed['spearman'].min():.3f}, "
              f"mae <= {per_seed['mae'].max():.4f}; {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
