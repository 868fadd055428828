"""Is Flower's serving the harness's serving? Replays Flower runs' requests offline.

Run from the repository root (needs the ``train`` and ``flower`` extras)::

    python benchmarks/bench_flower_serving.py                        # inference_first,
                                                                     # seeds 0-2, 30 draws
    python benchmarks/bench_flower_serving.py --policy static --seeds 0,1 --draws 10

For each seed, one Flower run (default scenario, 100 rounds) gives a trajectory: the
version each node holds and its service rate ``mu`` in each round. On that trajectory the
serving step is then replayed offline with the harness's primitives
(:func:`~jointopt.harness.fl.serve_fifo`, :func:`~jointopt.harness.data.sample_requests`,
the held version's predictions on the test set):

1. with the nodes' own draws (``_rng(seed, client, t, 1)``, the queue carried across
   rounds): the replay must give Flower's per-node records (requests, on time, correct)
   exactly, which shows that a node serves the copy it reports, keeps its queue, and draws
   its requests from its client's label mix as the harness does;
2. with the harness's draws of the same seed (one stream for every client): the timely
   accuracy the harness's serving noise gives on Flower's trajectory;
3. with ``--draws`` further serving draws of each kind (node streams, one stream): the
   mean and spread of measured minus expected timely accuracy, on-time fraction and
   accuracy of the on-time answers. Equal means say the two ways of drawing are the same
   distribution; the spread is one run's serving noise.

The expected timely accuracy is the served copies' accuracy on each client's mix times the
M/M/1 on-time law, per round (as in :class:`~jointopt.flower.FlowerHarness`). Numbers are
measured, never asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch
from jointopt.models.queueing import on_time_fraction

from jointopt import load_scenario
from jointopt.harness.data import sample_requests
from jointopt.harness.fl import serve_fifo


def node_draws(h, seed, held, mu, preds):
    """Per-node serving: client i's own generator per round, its queue carried over."""
    from jointopt.flower import _rng

    c, slot, y = h.problem.clients, h.problem.simulation.slot, h.data.y_test
    T, n = held.shape
    out = np.zeros((3, T, n))
    for i in range(n):
        free = np.zeros(1)
        for t in range(T):
            rng = _rng(seed, i, t, 1)
            a, _, ok, free = serve_fifo(rng, c.arrival_rate[[i]], mu[t, [i]], c.deadline[[i]],
                                        slot, t, free)
            smp = sample_requests(y, h.dist, np.full(a[0], i), rng)
            right = preds[held[t, i]][smp] == y[smp]
            out[:, t, i] = a[0], ok.sum(), (ok & right).sum()
    return out


def one_stream(h, seed, held, mu, preds):
    """The harness's serving: one generator for every client (its third seeded stream)."""
    c, slot, y = h.problem.clients, h.problem.simulation.slot, h.data.y_test
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
    T, n = held.shape
    out, free = np.zeros((3, T, n)), np.zeros(n)
    for t in range(T):
        a, who, ok, free = serve_fifo(rng, c.arrival_rate, mu[t], c.deadline, slot, t, free)
        smp = sample_requests(y, h.dist, who, rng)
        right = preds[held[t, who], smp] == y[smp]
        out[0, t] = a
        out[1, t] = np.bincount(who, weights=ok, minlength=n)
        out[2, t] = np.bincount(who, weights=ok & right, minlength=n)
    return out


def flower_trajectory(fh, problem, policy, seed, rounds):
    """One Flower run: per-node records, held versions, mu and every version's predictions."""
    from jointopt.flower import JointStrategy, flatten, model_arrays

    model = fh.build_model(seed)
    preds, per_class = [], []

    def global_error(arrays):
        K, pred, cls = fh.measure(model, torch.from_numpy(flatten(arrays)))
        preds.append(pred)
        per_class.append(cls)
        return K

    strategy = JointStrategy(problem, policy, global_error=global_error, seed=seed,
                             server_lr=fh.config.server_lr, queues=fh.queues)
    fh.simulation.run(strategy, model_arrays(model, model.flat()), rounds)
    per = strategy.clients_frame()
    n = problem.clients.count
    shape = (rounds, n)
    return {"records": np.stack([per[k].to_numpy().reshape(shape)
                                 for k in ("requests", "on_time", "correct")]),
            "held": per["held_version"].to_numpy().reshape(shape).astype(np.int64),
            "mu": per["mu"].to_numpy().reshape(shape), "preds": np.stack(preds),
            "per_class": np.stack(per_class)}


def main(argv=None) -> int:
    from jointopt.flower import FlowerHarness

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--policy", default="inference_first")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--draws", type=int, default=30,
                    help="further serving draws per seed and kind")
    ap.add_argument("--out", metavar="CSV", help="write the draws' table")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    problem = load_scenario(args.scenario)
    fh = FlowerHarness(problem)
    c = problem.clients
    n = c.count
    runs = {}
    with fh:
        for seed in seeds:
            t0 = time.perf_counter()
            runs[seed] = flower_trajectory(fh, problem, args.policy, seed, args.rounds)
            print(f"seed {seed}: Flower run {time.perf_counter() - t0:.0f} s", flush=True)
    rows, own = [], []
    for seed, run in runs.items():
        held, mu, preds = run["held"], run["mu"], run["preds"]
        P = on_time_fraction(c.arrival_rate[None, :], mu, c.deadline[None, :])
        acc = (run["per_class"] @ fh.dist.T)[held, np.arange(n)[None, :]]
        expected = float(((c.arrival_rate * P * acc).sum(1) / c.arrival_rate.sum()).mean())
        replay = node_draws(fh, seed, held, mu, preds)
        harness = one_stream(fh, seed, held, mu, preds)
        rec = run["records"]
        own.append({"seed": seed, "replay_exact": bool(np.array_equal(replay, rec)),
                    "expected": expected,
                    "flower (node draws)": rec[2].sum() / rec[0].sum(),
                    "harness draws": harness[2].sum() / harness[0].sum()})
        for kind, draw in (("node streams", node_draws), ("one stream", one_stream)):
            for k in range(args.draws):
                R, O, C = (x.sum() for x in draw(fh, 10_000 * (seed + 1) + k, held, mu, preds))
                rows.append({"seed": seed, "draws": kind, "requests_per_round": R / len(held),
                             "on_time_fraction": O / R, "correct_given_on_time": C / O,
                             "measured_minus_expected": C / R - expected})
    fmt = "{:.4f}".format
    print(f"\n{args.policy}, {args.scenario}, {args.rounds} rounds: Flower's records replayed "
          "with the nodes' draws, and the timely accuracy with the harness's draws of the "
          "same seed, on Flower's trajectory")
    print(pd.DataFrame(own).to_string(index=False, float_format=fmt))
    table = pd.DataFrame(rows)
    cols = ["requests_per_round", "on_time_fraction", "correct_given_on_time",
            "measured_minus_expected"]
    print(f"\n{args.draws} further serving draws per seed and kind: mean (standard error) over "
          "all seeds' draws, and the per-run sd of measured minus expected")
    summary = table.groupby("draws")[cols].agg(["mean", "sem"])
    summary[("measured_minus_expected", "sd per run")] = (
        table.groupby(["draws", "seed"])["measured_minus_expected"].std().groupby("draws")
        .mean())
    print(summary.to_string(float_format=fmt))
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
