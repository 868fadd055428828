"""Torch-free surrogate of federated training and serving, vectorised over clients.

Provenance: **project choice** (``docs/kinds/joint_training_inference.md``). Each round:

1. the policy sees ``(K_t, held errors, ages)`` and returns ``(q, d, mu)``;
2. participation ``B_n ~ Bernoulli(q_n)`` and downloads ``D_n ~ Bernoulli(d_n)`` are drawn;
3. the global error follows the recursion with the *sampled* variance of unbiased
   aggregation, ``K_{t+1} = a K_t + (b + b_rel K_t) sum_n p_n^2 (B_n/q_n - 1)^2 + c`` (its
   expectation is the model's ``b sum p^2 (1-q)/q`` when ``b_rel = 0``);
4. a refreshed client (``D_n``, or ``B_n or D_n`` in mode ``download_or_train``) now holds
   the newest model (error ``K_{t+1}``, age 0); the others keep theirs (age + 1);
5. requests arrive ``Poisson(lambda_n * slot)``, each finishes on time independently with
   the M/M/1 probability ``1 - exp(-(mu_n - lambda_n) tau_n)`` (the stationary sojourn law;
   correlation between consecutive sojourns is ignored; with ``simulation.queue = "fifo"``
   each client's FIFO queue is simulated instead, request by request and carried over
   between rounds: :func:`~jointopt.models.queueing.fifo_round`) and is answered correctly
   with probability ``acc(error of the copy it is served by)`` (plus, where the scenario
   sets ``accuracy.aggregation_noise``, the deficit of the round that aggregated that copy:
   :func:`~jointopt.models.accuracy.aggregation_deficit`; read, never observed);
6. under drift (the problem's ``[drift]`` section, :class:`~jointopt.models.drift.DriftModel`)
   the data then moves: the global model and every held copy gain the next round's shock
   ``growth + jump_error * [t + 1 in jumps]``, a copy of age ``k`` also ``ageing (2k + 1)``
   (so that it has gained ``ageing k^2`` by age ``k``).

After each round the policy's next observation carries the round's feedback
(:class:`~jointopt.closed_loop.Feedback`: the sampled spread, the error of the copies that
served, requests on time and right per client), which a closed-loop online policy learns
from; its estimates each round are columns ``est_*`` of the result's table.

The same scenario, policy and seed give the same numbers.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from jointopt.closed_loop import Feedback
from jointopt.errors import ValidationError
from jointopt.models.accuracy import aggregation_deficit
from jointopt.models.queueing import fifo_round, on_time_fraction
from jointopt.policies import POLICIES, Observation, Policy, make_policy
from jointopt.solvers.base import check_seed, check_size
from jointopt.solvers.jti import JointTrainingInferenceProblem

AOM_BINS = 201  # ages 0..199 and one bin for 200 or more


@dataclass
class SimulationResult:
    """A run: per-round tidy ``table``, ``summary`` numbers and the AoM histogram."""

    scenario: str
    policy: str
    seed: int
    table: pd.DataFrame
    summary: dict
    aom_hist: np.ndarray = field(repr=False)

    def aom_pmf(self) -> np.ndarray:
        """Empirical distribution of the age of model over clients and rounds."""
        return self.aom_hist / self.aom_hist.sum()


def simulate(problem: JointTrainingInferenceProblem, policy: Policy | str = "online", *,
             rounds: int | None = None, seed: int = 0, progress: bool = False
             ) -> SimulationResult:
    """Run ``policy`` for ``rounds`` rounds (default ``problem.simulation.rounds``)."""
    if isinstance(policy, str):
        policy = make_policy(policy)
    T = problem.simulation.rounds if rounds is None else int(rounds)
    if T < 1:
        raise ValidationError("rounds", f"must be >= 1, got {T}")
    check_size("rounds", T, "rounds")
    rng = np.random.default_rng(check_seed("seed", seed))
    c = problem.clients
    n, p2, lam = c.count, c.p * c.p, c.arrival_rate
    conv, acc, mode = problem.convergence_model, problem.accuracy_map, problem.controller.refresh
    slot = problem.simulation.slot
    finite_budget = np.isfinite(c.budget)
    budget = float(c.budget[finite_budget].mean()) if finite_budget.any() else float("nan")
    cost = (c.cost_train, c.cost_download, c.cost_service)

    drift = problem.drift.model
    fifo = problem.simulation.queue == "fifo"
    free = np.zeros(n)  # fifo: when each client's server is next idle
    policy.reset(problem)
    feedback = None
    estimates = []
    K = problem.K
    held = problem.ebar.copy()
    noise = problem.accuracy.aggregation_noise
    deficit = np.zeros(n)  # each held version's aggregation deficit (read, never observed)
    age = np.zeros(n, dtype=np.int64)
    hist = np.zeros(AOM_BINS, dtype=np.int64)
    cols = {k: np.empty(T) for k in (
        "K", "mean_aom", "requests", "on_time", "correct", "timely_accuracy",
        "expected_timely_accuracy", "resource_use", "backlog", "mean_q", "mean_d", "mean_mu",
        "cap_violation", "range_violation")}
    total_rate = float(lam.sum())

    steps = range(T)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc=f"{policy.name}", unit="round", file=sys.stderr, leave=False)
    for t in steps:
        x = policy.decide(Observation(t, K, held.copy(), age.copy(), feedback))
        trained = rng.random(n) < x.q
        downloaded = rng.random(n) < x.d
        with np.errstate(divide="ignore", invalid="ignore"):
            spread = np.where(trained, 1.0 / x.q - 1.0, -1.0)
        sampled_spread = float(np.sum(p2 * spread * spread))
        K_next = conv.next(K, sampled_spread)
        refreshed = downloaded | (trained if mode == "download_or_train" else False)
        held = np.where(refreshed, K_next, held)
        if noise:
            deficit = np.where(refreshed, aggregation_deficit(noise, K, sampled_spread),
                               deficit)
        age = np.where(refreshed, 0, age + 1)
        hist += np.bincount(np.minimum(age, AOM_BINS - 1), minlength=AOM_BINS)

        P = on_time_fraction(lam, x.mu, c.deadline)
        a_now = acc(held + deficit)
        arrivals = rng.poisson(lam * slot)
        if fifo:
            ok, _, free = fifo_round(arrivals, x.mu, c.deadline, free, t * slot, slot, rng)
            on_time = ok.sum(axis=1)
        else:
            on_time = rng.binomial(arrivals, P)
        correct = rng.binomial(on_time, a_now)
        use = cost[0] * x.q + cost[1] * x.d + cost[2] * x.mu
        feedback = Feedback(sampled_spread, held.copy(), on_time, correct)
        est = getattr(policy, "estimates", None)  # pilots need not have it
        if est:
            estimates.append(est)

        cols["K"][t] = K_next
        cols["mean_aom"][t] = age.mean()
        cols["requests"][t] = arrivals.sum()
        cols["on_time"][t] = on_time.sum()
        cols["correct"][t] = correct.sum()
        cols["timely_accuracy"][t] = correct.sum() / max(arrivals.sum(), 1)
        cols["expected_timely_accuracy"][t] = (float(np.sum(lam * P * a_now)) / total_rate
                                              if total_rate > 0 else np.nan)
        cols["resource_use"][t] = use.mean()
        cols["backlog"][t] = policy.backlog
        cols["mean_q"][t], cols["mean_d"][t] = x.q.mean(), x.d.mean()
        cols["mean_mu"][t] = x.mu.mean()
        with np.errstate(invalid="ignore"):
            cols["cap_violation"][t] = float(np.max(use - c.cap))
        cols["range_violation"][t] = max(
            float(np.max(c.q_min - x.q)), float(np.max(x.q - 1)), float(np.max(-x.d)),
            float(np.max(x.d - 1)), float(np.max(problem.mu_lo - x.mu)),
            float(np.max(x.mu - c.mu_max)))
        K = K_next
        if drift.active:
            K, held = K + drift.shock(t + 1), held + drift.copy_shock(t + 1, age)

    table = pd.DataFrame({"round": np.arange(T), **cols})
    if estimates:  # a closed-loop policy: the estimates it planned each round with
        table = table.join(pd.DataFrame(estimates).drop(columns="round", errors="ignore"))
    table.insert(0, "policy", policy.name)
    table.insert(0, "scenario", problem.name)
    table["budget"] = budget
    summary = {
        "avg_timely_accuracy": float(table["correct"].sum() / max(table["requests"].sum(), 1)),
        "expected_timely_accuracy": float(table["expected_timely_accuracy"].mean()),
        "mean_aom": float(table["mean_aom"].mean()),
        "avg_resource_use": float(table["resource_use"].mean()),
        "budget": budget,
        "budget_ratio": float(table["resource_use"].mean() / budget) if finite_budget.any()
        else None,
        "mean_backlog": float(table["backlog"].mean()),
        "final_backlog": float(policy.backlog),
        "final_K": float(K),
        "mean_K": float(table["K"].mean()),
        "max_cap_violation": float(table["cap_violation"].max()),
        "max_range_violation": float(table["range_violation"].max()),
        "rounds": T,
        "seed": seed,
    }
    return SimulationResult(problem.name, policy.name, seed, table, summary, hist)


def compare(problem: JointTrainingInferenceProblem, policies=None, *, rounds=None,
            seed: int = 0, progress: bool = False) -> list[SimulationResult]:
    """Every policy (default: all of them) on the same scenario and seed."""
    names = list(POLICIES) if policies is None else list(policies)
    return [simulate(problem, name, rounds=rounds, seed=seed, progress=progress)
            for name in names]


def summary_frame(results: list[SimulationResult]) -> pd.DataFrame:
    """One row per (scenario, policy, seed) with the summary numbers."""
    return pd.DataFrame([{"scenario": r.scenario, "policy": r.policy, **r.summary}
                         for r in results])


def simulate_command(problem: JointTrainingInferenceProblem, args) -> tuple[dict, str]:
    """``jointopt simulate`` for this kind: the policies (``--policy``, default ``online``)
    in the surrogate on one seed; ``(JSON object, text table)``."""
    import sys

    from jointopt import report
    from jointopt.errors import ValidationError
    from jointopt.solvers.base import finite_or_none

    policy = args.policy or "online"
    if policy != "all" and policy not in POLICIES:
        raise ValidationError("--policy", f"unknown policy {policy!r}; choose from "
                                          f"{', '.join(POLICIES)} or all")
    names = list(POLICIES) if policy == "all" else [policy]
    if args.rounds is not None and args.rounds < 1:
        raise ValidationError("--rounds", f"must be >= 1, got {args.rounds}")
    progress = sys.stderr.isatty() and not args.no_progress
    results = compare(problem, names, rounds=args.rounds, seed=args.seed, progress=progress)
    written = report.write_simulation(results, args.out) if args.out else []
    doc = {"scenario": problem.name, "rounds": results[0].summary["rounds"], "seed": args.seed,
           "summary": {r.policy: finite_or_none(r.summary) for r in results}}
    cols = ["policy", "avg_timely_accuracy", "mean_aom", "avg_resource_use", "budget",
            "mean_backlog", "mean_K"]
    lines = [summary_frame(results)[cols].to_string(index=False, float_format="{:.4f}".format)]
    lines += [f"wrote {path}" for path in written]
    return doc, "\n".join(lines)
