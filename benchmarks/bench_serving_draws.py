"""What serving draws cost: one real run's wall time with 1 and with R request streams.

Run from the repository root (needs the ``train`` extra: torch, scikit-learn)::

    python benchmarks/bench_serving_draws.py                  # default, training_first and
                                                              # online, seed 0, 100 rounds,
                                                              # 1 and 10 draws
    python benchmarks/bench_serving_draws.py --scenario drift --draws 1,10,30 --repeats 3

With ``HarnessConfig.serving_draws = R`` the trained models answer ``R`` request streams per
round (:mod:`jointopt.harness.fl`); the training is the same. For each policy and draw count
the script times ``--repeats`` runs (the fastest is kept) and prints the wall time, its
ratio to the single-draw run, the extra seconds per further draw, the pooled request count
and the measured average timely accuracy; with ``R > 1`` also each stream's own average
timely accuracy over the run: their standard deviation is one stream's serving noise on
that training trajectory (the pooled value's is that over ``sqrt(R)``). Times depend on the
machine's load; numbers are measured, never asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from jointopt import load_scenario
from jointopt.harness.fl import FederatedHarness, HarnessConfig


class Recording(FederatedHarness):
    """A harness that keeps each stream's requests and correct answers, round by round
    (:meth:`serve` is called for streams 0..R-1 in order every round)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def serve(self, *args, **kwargs):
        out = super().serve(*args, **kwargs)
        self.calls.append((out[0].sum(), out[2].sum()))
        return out

    def per_stream(self, draws: int) -> np.ndarray:
        """Each stream's average timely accuracy over the run."""
        counts = np.asarray(self.calls, dtype=float).reshape(-1, draws, 2).sum(axis=0)
        return counts[:, 1] / np.maximum(counts[:, 0], 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--policies", default="training_first,online")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--draws", default="1,10", help="draw counts, the first is the baseline")
    ap.add_argument("--repeats", type=int, default=1, help="runs per cell (fastest kept)")
    args = ap.parse_args(argv)
    problem = load_scenario(args.scenario)
    draws = [int(d) for d in args.draws.split(",")]
    rows = []
    FederatedHarness(problem).run("static", rounds=2, seed=args.seed)   # warm-up, not timed
    for policy in args.policies.split(","):
        base = None
        for r in draws:
            h = Recording(problem, HarnessConfig(serving_draws=r))
            walls = []
            for _ in range(args.repeats):
                h.calls = []
                t0 = time.perf_counter()
                res = h.run(policy, rounds=args.rounds, seed=args.seed)
                walls.append(time.perf_counter() - t0)
            streams = h.per_stream(r)
            wall = min(walls)
            base = wall if base is None else base
            rows.append({"policy": policy, "draws": r, "wall_s": wall,
                         "ratio": wall / base,
                         "s_per_extra_draw": ((wall - base) / (r - draws[0])
                                              if r != draws[0] else float("nan")),
                         "requests": int(res.table["requests"].sum()),
                         "avg_timely_accuracy": res.summary["avg_timely_accuracy"],
                         "stream0": streams[0],
                         "sd_per_stream": streams.std(ddof=1) if r > 1 else float("nan")})
            print(f"{policy:>15} draws {r:>3}: {wall:6.2f} s", flush=True)
    print(f"\n{args.scenario}, seed {args.seed}, {args.rounds} rounds, "
          f"{problem.clients.count} clients: one run per cell (fastest of {args.repeats})")
    print(pd.DataFrame(rows).to_string(index=False, float_format="{:.4f}".format))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
