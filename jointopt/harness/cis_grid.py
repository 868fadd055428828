"""Grid runs of CIS early-exit training and the serving-rate advantage table.

Documented in ``docs/kinds/cis_early_exit.md`` [project choice]. One tidy row per run
(backend, nodes, data split, device share, pi, rule, seed, config) with the system accuracy,
the served accuracy per tier, the plain accuracy of each exit and the weights used. A CSV path
makes the grid resumable: rows already there are not run again. ``config`` is a fingerprint
of the training configuration (every field) and of the variance-estimation switch, so a row
is reused only for the very settings that produced it (see :func:`config_key`).

:func:`advantage` pairs runs by seed and reports ``Delta = Acc_CIS(serving_rate) -
Acc_CIS(equal)`` per (split, share): mean, standard deviation and 95% t half-width.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from jointopt.models.cis import DEVICE_SHARES

KEYS = ["backend", "nodes", "split", "share", "pi", "rule", "seed", "config"]


def config_key(config, **options) -> str:
    """A short, stable fingerprint of a training configuration (a dataclass: its type and
    every field) and of further ``options`` that change a run's result. Two runs with the
    same grid keys and the same fingerprint give the same numbers (same code), so a cached
    row is reused only under the same fingerprint. Changes to the code itself are not
    fingerprinted: delete the CSV after changing the training code."""
    payload = {"type": type(config).__name__, **dataclasses.asdict(config), **options}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_grid(*, nodes: int = 7, splits: Iterable[str] = ("eq", "2x", "tiny"),
             shares: Iterable[str] = DEVICE_SHARES,
             rules: Iterable[str] = ("serving_rate", "equal"), seeds: Iterable[int] = (0, 1, 2),
             pi: str = "p0", backend: str = "torch", config=None, csv: str | Path | None = None,
             progress: Callable[[dict], None] | None = None,
             estimate_variance: bool = True) -> pd.DataFrame:
    """Train and score every (split, share, rule, seed) on the ``nodes``-node tree.

    ``backend``: ``"torch"`` (:func:`jointopt.harness.early_exit.train`, default config
    :data:`~jointopt.harness.early_exit.FAST`) or ``"surrogate"``
    (:func:`jointopt.harness.cis_surrogate.train`). Runs sharing a data partition reuse it.
    With the torch backend and a variance-based rule (``inverse_variance``, ``balanced``,
    ``convex``, ...), ``sigma2`` is estimated once per data split at seed 0's initial model
    (:func:`~jointopt.harness.early_exit.estimate_sigma2`) unless ``estimate_variance`` is
    false (then the problem's ``sigma2``, default 1).
    """
    from jointopt.harness import early_exit
    from jointopt.solvers.cis import CooperativeInferenceProblem

    if backend == "torch":
        train, cfg = early_exit.train, config or early_exit.FAST
    elif backend == "surrogate":
        from jointopt.harness import cis_surrogate

        train, cfg = cis_surrogate.train, config or cis_surrogate.SurrogateConfig()
    else:
        raise ValueError(f"backend must be 'torch' or 'surrogate', got {backend!r}")
    splits, shares, rules, seeds = list(splits), list(shares), list(rules), list(seeds)
    ckey = config_key(cfg, estimate_variance=bool(estimate_variance))
    done = pd.DataFrame()
    if csv is not None and Path(csv).exists():
        done = pd.read_csv(csv, dtype={"share": str, "split": str, "pi": str, "config": str})
        if "config" not in done.columns:  # written before configs were fingerprinted
            stale = Path(csv).with_suffix(".stale.csv")
            Path(csv).replace(stale)
            print(f"run_grid: {csv} has no config column; its rows cannot be matched to a "
                  f"training configuration, moved to {stale}", file=sys.stderr)
            done = pd.DataFrame()
    have = set(map(tuple, done[KEYS].astype(str).values)) if len(done) else set()
    variance_rules = {"inverse_variance", "inverse_sqrt_variance", "balanced", "convex"}
    rows = []
    for split in splits:
        data = None
        sigma2 = None
        for share in shares:
            problem = CooperativeInferenceProblem.three_tier(nodes, share, split, pi=pi)
            for rule in rules:
                if (rule in variance_rules and backend == "torch" and estimate_variance
                        and not all(tuple(map(str, (backend, nodes, split, share, pi, rule, s,
                                                    ckey))) in have for s in seeds)):
                    if sigma2 is None:
                        data = data or early_exit.partition(problem, cfg.data_seed)
                        sigma2 = early_exit.estimate_sigma2(problem, config=cfg, data=data)
                    problem_r = early_exit.with_training(problem, sigma2=sigma2.tolist())
                else:
                    problem_r = problem
                for seed in seeds:
                    key = (backend, nodes, split, share, pi, rule, seed, ckey)
                    if tuple(map(str, key)) in have:
                        continue
                    if data is None:
                        data = early_exit.partition(problem, cfg.data_seed)
                    start = time.perf_counter()
                    run = train(problem_r, rule, seed=seed, config=cfg, data=data)
                    row = dict(zip(KEYS, key, strict=True)) | run.summary()
                    row["wall_s"] = time.perf_counter() - start
                    rows.append(row)
                    if csv is not None:
                        pd.DataFrame([row]).to_csv(csv, mode="a", index=False,
                                                   header=not Path(csv).exists())
                    if progress is not None:
                        progress(row)
    new = pd.DataFrame(rows)
    out = pd.concat([done, new], ignore_index=True) if len(done) else new
    if not len(out):
        return out
    wanted = {tuple(map(str, (backend, nodes, split, share, pi, rule, seed, ckey)))
              for split in splits for share in shares for rule in rules for seed in seeds}
    keep = [tuple(k) in wanted for k in out[KEYS].astype(str).values]
    out = out[keep].drop_duplicates(KEYS).reset_index(drop=True)
    out["share"] = out["share"].astype(str)
    out["nodes"] = out["nodes"].astype(int)
    out["seed"] = out["seed"].astype(int)
    return out


def advantage(df: pd.DataFrame, rule: str = "serving_rate", baseline: str = "equal",
              metric: str = "acc_cis") -> pd.DataFrame:
    """Seed-paired ``Delta = metric(rule) - metric(baseline)`` per (backend, nodes, split,
    share, pi): mean, std (ddof 1), number of seeds, 95% t half-width, and the two means."""
    from scipy import stats

    keys = ["backend", "nodes", "split", "share", "pi"]
    a = df[df["rule"] == rule].set_index([*keys, "seed"])[metric]
    b = df[df["rule"] == baseline].set_index([*keys, "seed"])[metric]
    both = pd.concat({"a": a, "b": b}, axis=1).dropna()
    both["delta"] = both["a"] - both["b"]
    out = []
    for key, g in both.groupby(level=list(range(len(keys))), sort=False):
        n = len(g)
        sd = float(g["delta"].std(ddof=1)) if n > 1 else float("nan")
        half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
        out.append(dict(zip(keys, key, strict=True)) | {
            f"{rule}": float(g["a"].mean()), f"{baseline}": float(g["b"].mean()),
            "delta_mean": float(g["delta"].mean()), "delta_std": sd, "n_seeds": n,
            "ci95": half})
    res = pd.DataFrame(out)
    if len(res):
        order = {s: i for i, s in enumerate(("eq", "2x", "tiny"))}
        res = res.sort_values(["backend", "nodes", "split", "share"],
                              key=lambda c: c.map(order) if c.name == "split" else c)
    return res.reset_index(drop=True)


def summarize(df: pd.DataFrame, metric: str = "acc_cis") -> pd.DataFrame:
    """Mean and std over seeds per (backend, nodes, split, share, pi, rule)."""
    keys = ["backend", "nodes", "split", "share", "pi", "rule"]
    g = df.groupby(keys, sort=False)[metric]
    return pd.concat({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()},
                     axis=1).reset_index()


def weights_table(nodes: int = 7, splits: Iterable[str] = ("eq", "2x", "tiny"),
                  shares: Iterable[str] = DEVICE_SHARES,
                  rules: Iterable[str] = ("serving_rate", "equal", "flops", "inverse_variance",
                                          "balanced", "convex"),
                  pi: str = "p0", sigma2: dict | None = None, flops=None,
                  rounds: int | None = None) -> pd.DataFrame:
    """The exit weights each rule chooses per (split, share) (no training; ``flops`` at
    round 0 and ``flops_last`` at the last round). ``sigma2[split]``: per-exit gradient
    variances for the variance rules (default: the problem's ``sigma2 = 1``); ``flops``:
    per-exit costs (default: the problem's, DigitsEE); ``rounds``: T of the flops schedule."""
    from jointopt.harness.early_exit import with_training
    from jointopt.solvers.cis import CooperativeInferenceProblem

    rows = []
    for split in splits:
        for share in shares:
            p = CooperativeInferenceProblem.three_tier(nodes, share, split, pi=pi)
            changes = {}
            if sigma2 is not None and split in sigma2:
                changes["sigma2"] = np.asarray(sigma2[split], dtype=float).tolist()
            if flops is not None:
                changes["flops"] = np.asarray(flops, dtype=float).tolist()
            if rounds is not None:
                changes["rounds"] = int(rounds)
            if changes:
                p = with_training(p, **changes)
            for rule in rules:
                variants = [(rule, None)]
                if rule == "flops":
                    variants.append(("flops_last", p.training.rounds - 1))
                for name, t in variants:
                    w = p.exit_weights(rule, t=t) if rule == "flops" else p.exit_weights(rule)
                    rows.append({"nodes": nodes, "split": split, "share": share, "pi": pi,
                                 "rule": name, **{f"w{e}": float(x)
                                                  for e, x in enumerate(w, start=1)}})
    return pd.DataFrame(rows)


def claim_verdicts(adv: pd.DataFrame, high_shares=("0.60", "0.80")) -> pd.DataFrame:
    """Verdicts on the source paper's qualitative claim from an :func:`advantage` table of one
    backend [rules: the source paper's claim; thresholds: project choice].

    One rule for both signs: a difference counts only when its pooled 95% interval excludes
    zero; an interval containing zero is *inconclusive*, whatever the sign of the estimate.

    (i) per split: the advantage grows with the device share. ``diff`` = Delta at the largest
    share minus Delta at the smallest, ``half`` = the pooled 95% half-width
    ``sqrt(ci_a^2 + ci_b^2)``, ``rho`` = the Spearman correlation of share and mean Delta.
    *holds* when ``diff > half`` and ``rho > 0``; *fails* (it shrinks) when ``diff < -half``
    and ``rho < 0``; *inconclusive* otherwise (also with fewer than 2 seeds).
    (ii) the mean Delta over ``high_shares`` is larger on ``2x`` (and on ``tiny``, with
    whatever pi the table holds) than on ``eq``: *holds* when the difference exceeds the
    pooled half-width, *fails* when it is below minus it, *inconclusive* otherwise.
    """
    from scipy import stats

    rows = []
    for (split, pi), g in adv.groupby(["split", "pi"], sort=False):
        g = g.assign(s=g["share"].astype(float)).sort_values("s")
        if len(g) < 2:
            continue
        rho = float(stats.spearmanr(g["s"], g["delta_mean"]).statistic) if len(g) > 2 \
            else float(np.sign(g["delta_mean"].iloc[-1] - g["delta_mean"].iloc[0]))
        diff = float(g["delta_mean"].iloc[-1] - g["delta_mean"].iloc[0])
        half = float(np.hypot(g["ci95"].iloc[-1], g["ci95"].iloc[0]))
        if not np.isfinite(half) or not np.isfinite(rho):
            verdict = "inconclusive"
        elif diff > half and rho > 0:
            verdict = "holds"
        elif diff < -half and rho < 0:
            verdict = "fails"
        else:
            verdict = "inconclusive"
        rows.append({"claim": "(i) grows with device share", "split": split, "pi": pi,
                     "spearman": rho, "delta_high_minus_low": diff, "pooled_ci95": half,
                     "verdict": verdict})
    high = adv[adv["share"].isin(high_shares)]
    means = high.groupby(["split", "pi"])["delta_mean"].mean()
    cis = high.groupby(["split", "pi"])["ci95"].apply(lambda c: float(np.sqrt((c ** 2).mean())))
    base = [k for k in means.index if k[0] == "eq"]
    for key in means.index:
        if key[0] == "eq" or not base:
            continue
        b = base[0]
        diff = float(means[key] - means[b])
        half = float(np.hypot(cis[key], cis[b]))
        verdict = ("inconclusive" if not np.isfinite(half) else
                   "holds" if diff > half else "fails" if diff < -half else "inconclusive")
        rows.append({"claim": f"(ii) eq < {key[0]} at high share", "split": key[0],
                     "pi": key[1], "delta_high_minus_low": diff, "pooled_ci95": half,
                     "verdict": verdict})
    return pd.DataFrame(rows)


__all__ = ["KEYS", "advantage", "claim_verdicts", "config_key", "run_grid", "summarize",
           "weights_table"]
