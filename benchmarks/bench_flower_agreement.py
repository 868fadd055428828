"""Do Flower's Simulation Engine and the in-house harness measure the same thing?

Run from the repository root (needs the ``train`` and ``flower`` extras)::

    python benchmarks/bench_flower_agreement.py                # default, 20 clients,
                                                               # 100 rounds, seeds 0-4
    python benchmarks/bench_flower_agreement.py --quick        # 5 clients, 10 rounds, 2 seeds
    python benchmarks/bench_flower_agreement.py --out results/agreement

By default every policy runs on the scenario itself on both engines, paired by seed and
policy (``policy -> seed -> harness, flower``; one Flower simulation serves every run;
``--budget-s`` starts no new policy past that time, so a cut study still pairs every seed
of the policies it ran):
per policy, the measured average timely accuracy on Flower minus on the harness, its mean
over seeds and the 95% interval of that mean (Student t), beside the seed-to-seed
standard deviation of each engine's measurement. ``--calibrate`` instead runs the whole
:func:`jointopt.harness.validate.validate` per seed and engine (calibration pilots on that
engine, then every policy on the calibrated scenario: the validation's own comparison,
about 1.7 times the training). Within a seed every policy sees the same requests and
service times on an engine (common random numbers), but the two engines draw them from
different streams (the harness one stream for all clients, a Flower node its own per
round), so one seed's differences move together across policies. The same pairing of the
expected timely accuracy (served copies' accuracy times the M/M/1 on-time law) shows the
training and download side without the serving noise. The engines agree on a policy when
the interval holds 0 and the mean difference is within the seed-to-seed spread. Each
finished run is appended to ``--out``/``agreement_runs.csv`` (a re-run skips finished
runs), so a long run can be stopped and resumed. Numbers are measured, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from jointopt import load_scenario
from jointopt.harness.validate import DEFAULT_POLICIES, resize, validate


def paired(table: pd.DataFrame, metric: str = "measured") -> pd.DataFrame:
    """Per policy: Flower minus harness on ``metric``, paired by seed, with the 95% t
    interval of the mean difference and each engine's seed-to-seed standard deviation."""
    wide = table.pivot_table(index=["policy", "seed"], columns="engine", values=metric)
    wide = wide.dropna()
    rows = []
    for policy, part in wide.groupby(level="policy", sort=False):
        diff = part["flower"] - part["harness"]
        k = len(diff)
        mean = float(diff.mean())
        half = (float(stats.t.ppf(0.975, k - 1) * diff.std(ddof=1) / np.sqrt(k))
                if k > 1 else float("nan"))
        sd_h = float(part["harness"].std(ddof=1)) if k > 1 else float("nan")
        sd_f = float(part["flower"].std(ddof=1)) if k > 1 else float("nan")
        rows.append({"policy": policy, "seeds": k, "harness": float(part["harness"].mean()),
                     "flower": float(part["flower"].mean()), "mean_diff": mean,
                     "ci_low": mean - half, "ci_high": mean + half,
                     "sd_seed_harness": sd_h, "sd_seed_flower": sd_f,
                     "agree": bool(mean - half <= 0.0 <= mean + half
                                   and abs(mean) <= max(sd_h, sd_f))})
    return pd.DataFrame(rows)


def _save(tables: list, runs_csv) -> None:
    if runs_csv:
        runs_csv.parent.mkdir(parents=True, exist_ok=True)
        pd.concat(tables, ignore_index=True).to_csv(runs_csv, index=False)


def _done(done: pd.DataFrame, rounds: int, **keys) -> bool:
    if not len(done) or any(k not in done for k in keys):
        return False
    mask = done["rounds"] == rounds
    for key, value in keys.items():
        mask &= done[key] == value
    return bool(mask.any())


def direct(problem, policies, seeds, rounds, surrogate_seeds, done, tables, runs_csv,
           budget_s=None):
    """Every policy on ``problem`` itself, on both engines, seed by seed."""
    from jointopt.flower import FlowerHarness
    from jointopt.harness.fl import FederatedHarness

    todo = [(policy, seed, name) for policy in policies for seed in seeds
            for name in ("harness", "flower")
            if not _done(done, rounds, seed=seed, engine=name, policy=policy)]
    if not todo:
        return tables
    engines = {"harness": FederatedHarness(problem), "flower": FlowerHarness(problem)}
    start = time.perf_counter()
    with engines["flower"]:
        for policy in dict.fromkeys(p for p, _, _ in todo):
            if budget_s is not None and policy != todo[0][0] \
                    and time.perf_counter() - start > budget_s:
                print(f"budget of {budget_s:g} s spent: policies from {policy} on not run",
                      file=sys.stderr, flush=True)
                break
            for _, seed, name in (job for job in todo if job[0] == policy):
                harness = engines[name]
                t0 = time.perf_counter()
                s = harness.run(policy, rounds=rounds, seed=seed).summary
                wall = time.perf_counter() - t0
                tables.append(pd.DataFrame([{
                    "scenario": problem.name, "policy": policy, "seed": seed,
                    "rounds": rounds, "engine": name,
                    "measured": s["avg_timely_accuracy"],
                    "measured_expected": s["expected_timely_accuracy"],
                    "measured_mean_aom": s["mean_aom"], "measured_mean_K": s["mean_K"],
                    "wall_s": wall}]))
                print(f"seed {seed} {policy:>15} {name:>7}: {wall:6.1f} s, timely "
                      f"accuracy {s['avg_timely_accuracy']:.4f}", flush=True)
                _save(tables, runs_csv)
    return tables


def validated(problem, policies, seeds, rounds, surrogate_seeds, done, tables, runs_csv,
              budget_s=None):
    """The whole validation (pilots and calibrated policies) per seed and engine."""
    for seed in seeds:
        for engine in ("harness", "flower"):
            if _done(done, rounds, seed=seed, engine=engine):
                continue
            t0 = time.perf_counter()
            # one request stream on both engines (Flower's nodes serve one)
            res = validate(problem, policies, rounds=rounds, seed=seed,
                           surrogate_seeds=surrogate_seeds, engine=engine, serving_draws=1)
            wall = time.perf_counter() - t0
            table = res.table.assign(wall_s=wall)
            print(f"seed {seed} {engine}: {wall:.0f} s, spearman {res.spearman:.3f}, "
                  f"mae {res.mae:.4f}", flush=True)
            print(table[["policy", "predicted", "measured"]]
                  .to_string(index=False, float_format="{:.4f}".format), flush=True)
            tables.append(table)
            _save(tables, runs_csv)
    return tables


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--policies", default=",".join(DEFAULT_POLICIES))
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--clients", type=int)
    ap.add_argument("--surrogate-seeds", type=int, default=20)
    ap.add_argument("--calibrate", action="store_true",
                    help="run the whole validation (calibration pilots, calibrated scenario) "
                         "per seed and engine")
    ap.add_argument("--budget-s", type=float, help="start no new policy after this many "
                                                   "seconds (default mode)")
    ap.add_argument("--quick", action="store_true",
                    help="3 policies, 5 clients, 10 rounds, seeds 0 and 1")
    ap.add_argument("--out", metavar="DIR", help="write agreement_runs.csv and agreement.csv "
                                                 "(and resume from agreement_runs.csv)")
    args = ap.parse_args(argv)
    policies = args.policies.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    rounds, clients, surrogate_seeds = args.rounds, args.clients, args.surrogate_seeds
    if args.quick:
        policies, seeds, rounds, clients, surrogate_seeds = (
            ["online", "training_first", "equal_split"], [0, 1], 10, 5, 3)
    problem = load_scenario(args.scenario)
    if clients:
        problem = resize(problem, clients)
    out = Path(args.out) if args.out else None
    runs_csv = out / "agreement_runs.csv" if out else None
    done = pd.read_csv(runs_csv) if runs_csv and runs_csv.exists() else pd.DataFrame()
    tables = [done] if len(done) else []
    print(f"scenario {problem.name}: {problem.clients.count} clients, {rounds} rounds, "
          f"seeds {seeds}, policies {', '.join(policies)}", flush=True)
    run = validated if args.calibrate else direct
    tables = run(problem, policies, seeds, rounds, surrogate_seeds, done, tables, runs_csv,
                 args.budget_s)
    table = pd.concat(tables, ignore_index=True)
    table = table[table["seed"].isin(seeds) & (table["rounds"] == rounds)]
    result = paired(table)
    print("\nmeasured average timely accuracy, Flower minus harness, paired by seed")
    print(result.to_string(index=False, float_format="{:.4f}".format))
    expected = paired(table, "measured_expected")
    print("\nexpected timely accuracy of the same runs (the served copies' accuracy on each "
          "client's mix times the M/M/1 on-time law, per round): training and downloads "
          "without the request and service noise")
    print(expected.to_string(index=False, float_format="{:.4f}".format))
    table = table.assign(serving=table["measured"] - table["measured_expected"])
    serving = paired(table, "serving")
    print("\nmeasured minus expected timely accuracy of the same runs: the serving draws alone "
          "(requests, service times, which test samples); its seed-to-seed sd is one run's "
          "serving noise (benchmarks/bench_flower_serving.py replays it)")
    print(serving.to_string(index=False, float_format="{:.4f}".format))
    aom = paired(table, "measured_mean_aom")
    print("\nmean age of model of the same runs (rounds)")
    print(aom.to_string(index=False, float_format="{:.4f}".format))
    if args.calibrate:
        err = paired(table, "abs_error")
        print("\nvalidation error |predicted - measured|, mean per engine")
        print(err[["policy", "harness", "flower", "mean_diff", "ci_low", "ci_high"]]
              .to_string(index=False, float_format="{:.4f}".format))
    walls = table.groupby("engine")["wall_s"].mean()
    what = "one validation (calibration + all policies)" if args.calibrate else "one run"
    print(f"\nmean wall time of {what}, measured on this machine as it is: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in walls.items()))
    if out:
        result.to_csv(out / "agreement.csv", index=False)
        print(f"wrote {runs_csv} and {out / 'agreement.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
