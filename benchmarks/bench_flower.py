"""Wall time per round: Flower's Simulation Engine against the in-house harness.

Run from the repository root (needs the ``train`` and ``flower`` extras)::

    python benchmarks/bench_flower.py                     # N = 20, 100, 1000 clients
    python benchmarks/bench_flower.py --quick             # N = 20, 100; 3 rounds
    python benchmarks/bench_flower.py --sizes 20 --rounds 20 --out flower.csv

Instances are the built-in ``default`` scenario with ``clients.count = N`` (rates, weights
and the digits split redrawn for N; at N = 1000 a client holds one or two training
samples: a scale check, not a learning one). Both engines run the same rounds under the
``equal_split`` rule (a fixed allocation, so the policy costs nothing and the engines are
what is timed): the harness trains every participant at once (``torch.func.vmap``) and
serves every queue in one vectorised pass; Flower sends a message to every node every
round (the serving slot, with the download if any) and one to each participant (training),
and its Ray workers (``--cpus``, default 2) run the nodes' ClientApps one message at a time.

Flower's time per round is the mean interval between consecutive rounds' ends after the
first round, inside a simulation that is already up; its start-up (Ray, the workers, the
node handshake and the first round) is reported apart. The harness's is its run time over
the rounds. Prints a table with the ratio Flower / harness measured in the same run;
asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from jointopt import scenarios


def instance(n: int):
    raw = scenarios.read_scenario("default")
    raw["clients"]["count"] = n
    return scenarios.from_dict(raw)


def time_harness(problem, rounds: int, seed: int) -> float:
    from jointopt.harness.fl import FederatedHarness

    harness = FederatedHarness(problem)
    harness.run("equal_split", rounds=1, seed=seed)            # warm-up (allocations)
    start = time.perf_counter()
    harness.run("equal_split", rounds=rounds, seed=seed)
    return (time.perf_counter() - start) / rounds


def time_flower(problem, rounds: int, seed: int, cpus: int) -> tuple[float, float]:
    """(seconds per round in a warm simulation, start-up seconds)."""
    import torch

    from jointopt.flower import JointStrategy, Simulation, digits_task, flatten, model_arrays
    from jointopt.harness.fl import FederatedHarness

    harness = FederatedHarness(problem)
    model = harness.build_model(seed)
    ends: list[float] = []

    def global_error(arrays) -> float:
        return harness.measure(model, torch.from_numpy(flatten(arrays)))[0]

    strategy = JointStrategy(problem, "equal_split", global_error=global_error, seed=seed,
                             on_round=lambda row: ends.append(time.perf_counter()))
    start = time.perf_counter()
    with Simulation(problem.clients.count, digits_task(problem), cpus=cpus) as sim:
        sim.run(strategy, model_arrays(model, model.flat()), rounds + 1)
    per_round = float(np.diff(ends).mean())
    return per_round, ends[0] - start


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 20, 100; 3 rounds")
    parser.add_argument("--sizes", type=int, nargs="+", help="client counts N")
    parser.add_argument("--rounds", type=int, help="timed rounds per engine (default 10; "
                                                   "3 at N >= 1000 and in quick mode)")
    parser.add_argument("--cpus", type=int, default=2, help="Ray workers (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the table as CSV")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([20, 100] if args.quick else [20, 100, 1000])
    rows = []
    for n in sizes:
        rounds = args.rounds or (3 if args.quick or n >= 1000 else 10)
        problem = instance(n)
        harness_s = time_harness(problem, rounds, args.seed)
        flower_s, startup_s = time_flower(problem, rounds, args.seed, args.cpus)
        rows.append({"N": n, "rounds": rounds, "cpus": args.cpus,
                     "harness_s_per_round": harness_s, "flower_s_per_round": flower_s,
                     "flower/harness": flower_s / harness_s,
                     "flower_startup_s": startup_s})
        print(f"N={n}: harness {harness_s:.3f} s/round, flower {flower_s:.3f} s/round "
              f"({flower_s / harness_s:.0f}x), flower start-up {startup_s:.1f} s", flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.to_string(index=False, float_format="{:.3f}".format))
    print("\nmeasured on this machine as it is (other load included); ratios from the same run")
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return table


if __name__ == "__main__":
    main()
