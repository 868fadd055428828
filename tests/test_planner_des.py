"""The planner's analytic / Monte-Carlo estimates agree with the SimPy discrete-event
simulation of the same plan, within the tolerances stated here.

A check passes if ``|planner - DES| <= max(tol * |DES|, 3 SE)`` with SE from the five
replications. Scenarios are scaled down (few rounds, small C) to keep the suite fast.
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import numpy as np
import pytest
from jointopt.models.planner import clock_days, unique_participants
from jointopt.solvers.planner import des
from jointopt.solvers.planner.estimate import estimate
from jointopt.solvers.planner.problem import DeploymentPlanProblem

from jointopt import scenarios

ROOT = Path(__file__).resolve().parents[1]
_BASE = scenarios.read_scenario("planner_example")
N_REP = 5


def _problem(tp: dict, **conv) -> DeploymentPlanProblem:
    d = copy.deepcopy(_BASE)
    d["training_plan"].update(tp)
    d["convergence"].update(conv)
    return DeploymentPlanProblem.from_dict(d)


def _agree(planner: float, samples, tol: float) -> None:
    s = np.asarray(samples, dtype=float)
    mean = s.mean()
    se = s.std(ddof=1) / np.sqrt(len(s)) if len(s) > 1 else 0.0
    assert abs(planner - mean) <= max(tol * abs(mean), 3 * se), (planner, mean, se)


def test_des_imports_nothing_from_the_planner_math():
    tree = ast.parse((ROOT / "solvers" / "planner" / "des.py").read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and ("models.planner" in m or "planner.estimate" in m
                          or "planner.gates" in m) for m in mods), mods


@pytest.mark.parametrize("windows", [list(range(24)), [0, 1, 2, 3]], ids=["all-hours", "4h"])
def test_sync_round_time_bytes_device_hours_and_days(windows):
    R = 40
    p = _problem({"K": 50, "C": 65, "windows": windows})
    e = estimate(p, n_mc=3000, n_outer=100)
    V, pu = e.values, e.values["per_unit"]
    reps = des.replicate(p, N_REP, rounds=R)
    rts = np.concatenate([r.round_times for r in reps])
    # mean (2 %) and P90 (3 %) effective round time: per-round samples, SE over rounds
    _agree(V["round_time"]["mean"], rts, 0.02)
    assert abs(V["round_time"]["p90"] - np.percentile(rts, 90)) <= 0.03 * np.percentile(rts, 90) \
        + 3 * rts.std() / np.sqrt(len(rts))
    _agree(V["round_failure_prob"], [r.failed_attempts / r.attempts for r in reps], 0.0)
    assert abs(V["round_failure_prob"] - np.mean([r.failed_attempts / r.attempts
                                                  for r in reps])) <= 0.01
    _agree(pu["bytes_down"] + pu["bytes_up"], [(r.bytes_down + r.bytes_up) / R for r in reps],
           0.02)
    _agree(pu["dev_s"], [r.device_s / R for r in reps], 0.03)
    _agree(pu["e_dn"] + pu["e_cmp"] + pu["e_up"], [r.energy_j / R for r in reps], 0.03)
    _agree(pu["tasks"], [r.tasks_started / R for r in reps], 0.03)
    # calendar days: the planner's A/(3600 |H_ok|) for R rounds, against the DES clock.
    n_ok = V["hours_ok_per_day"]
    A = R * V["round_time"]["mean"]
    # the DES clock starts at UTC 0 and trains only in the hours that can host C
    planner_days = float(clock_days(A, e.hourly["ok"]))
    _agree(planner_days, [r.elapsed_days for r in reps], 0.05)
    # unique participants: the planner's formula against the devices the DES drew
    pop = p.population
    e_camp = pop.n_devices * pop.static_eligibility * V["coverage_in_pool"] \
        * pop.campaign_unique_frac
    _agree(unique_participants(pu["tasks"] * R, e_camp),
           [r.unique_participants for r in reps], 0.03)
    if len(windows) == 24:
        _agree(A / (3600 * n_ok), [r.elapsed_days for r in reps], 0.05)


def test_sync_with_dropout_and_failures():
    R = 30
    p = _problem({"K": 50, "C": 55, "windows": list(range(24)), "timeout_s": 40.0})
    e = estimate(p, n_mc=3000, n_outer=100)
    V, pu = e.values, e.values["per_unit"]
    assert 0.05 < V["round_failure_prob"] < 0.95  # retries matter here
    reps = des.replicate(p, N_REP, rounds=R)
    fail = np.mean([r.failed_attempts / r.attempts for r in reps])
    assert abs(V["round_failure_prob"] - fail) <= max(0.01, 3 * np.sqrt(fail * (1 - fail)
                                                                       / sum(r.attempts
                                                                             for r in reps)))
    rts = np.concatenate([r.round_times for r in reps])
    _agree(V["round_time"]["mean"], rts, 0.02)
    _agree(pu["bytes_down"] + pu["bytes_up"], [(r.bytes_down + r.bytes_up) / R for r in reps],
           0.02)


def test_async_rates_staleness_discards_and_bytes():
    U = 1500
    p = _problem({"mode": "async", "K": 20, "C": 40, "windows": list(range(24)),
                  "max_staleness": 1}, target_error=0.5)
    e = estimate(p, n_mc=3000, n_outer=100)
    V, pu = e.values, e.values["per_unit"]
    reps = des.replicate(p, N_REP, updates=U)
    _agree(V["async_rate_per_s"], [r.successes / r.elapsed_s for r in reps], 0.03)
    _agree(V["async_accepted_rate_per_s"], [r.accepted / r.elapsed_s for r in reps], 0.05)
    _agree(V["async_mean_staleness"], [np.mean(r.staleness_all) for r in reps], 0.10)
    disc = np.mean([r.discarded / r.successes for r in reps])
    assert abs(V["async_discard_share"] - disc) <= 0.03
    _agree(pu["bytes_down"] + pu["bytes_up"],
           [(r.bytes_down + r.bytes_up) / r.accepted for r in reps], 0.02)
    _agree(pu["dev_s"], [r.device_s / r.accepted for r in reps], 0.03)
    # time to U accepted updates, all hours open
    from jointopt.models.planner import async_days

    days = async_days(U, e.hourly["accepted_per_hour"])
    _agree(float(days), [r.elapsed_days for r in reps], 0.05)
