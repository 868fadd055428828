"""The staged bounds and the reduced model of the HFLOP matrix path (solvers/hfl/cover.py)
against brute force, and the result contract of the heuristic method and the baselines."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from instances import tiny_hfl
from jointopt.solvers.hfl import cover
from jointopt.solvers.hfl import generators as gen
from jointopt.solvers.hfl.brute import all_assignments, brute_force
from jointopt.solvers.hfl.problem import HFLProblem

from jointopt.errors import InfeasibleError, ValidationError

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


tiny = tiny_hfl


def feasible_plans(prob):
    """Every feasible assignment with its (O)."""
    A = all_assignments(prob.N, prob.M)
    ev = [prob.evaluate(a) for a in A]
    keep = np.array([e.feasible for e in ev])
    return A[keep], np.array([e.objective for e in ev])[keep]


def arrays(prob):
    return prob.workload, prob.capacities, prob.l * prob.cd, prob.ce, prob.T


@settings(max_examples=40, **SETTINGS)
@given(prob=tiny(), extra=st.sampled_from([0.0, 1.0, 3.0]))
def test_cover_lp_is_a_bound_and_its_fixing_keeps_every_plan_within_the_cutoff(prob, extra):
    D, R, C, ce, T = arrays(prob)
    plans, values = feasible_plans(prob)
    if not plans.size:
        return
    opt = values.min()
    allowed = np.ones((prob.N, prob.M), bool)
    k, lb1, demand = cover.host_count_bound(D, R, ce, T)
    assert lb1 <= opt + 1e-9
    cl = cover.cover_lp(D, R, C, ce, T, allowed, np.zeros(prob.M), np.ones(prob.M),
                        count_cut=(k, demand))
    assert cl.status == "optimal" and cl.bound <= opt + 1e-7
    cutoff = opt + extra          # every plan of value <= cutoff must survive the fixing
    left, y_lb, y_ub = cl.fix(allowed, np.zeros(prob.M), np.ones(prob.M), cutoff)
    for a, v in zip(plans, values, strict=True):
        if v > cutoff + 1e-9:
            continue
        on = np.flatnonzero(a >= 0)
        used = np.bincount(a[on], minlength=prob.M) > 0
        assert left[on, a[on]].all(), (a, v)
        assert (y_ub[used] > 0.5).all() and (used[y_lb > 0.5]).all()


@settings(max_examples=60, **SETTINGS)
@given(prob=tiny())
def test_reduced_models_match_brute_force(prob):
    D, R, C, ce, T = arrays(prob)
    allowed = np.ones((prob.N, prob.M), bool)
    lb, ub = np.zeros(prob.M), np.ones(prob.M)
    best, _ = brute_force(prob)
    exact = cover.solve_reduced(D, R, C, ce, T, allowed, lb, ub, capacity=True)
    if math.isinf(best):
        assert exact.status == "infeasible"
    else:
        assert exact.status == "optimal" and exact.objective == pytest.approx(best)
        ev = prob.evaluate(exact.assignment)   # the merged solution maps back to a plan
        assert ev.feasible and ev.objective == pytest.approx(best)
    relaxed = cover.solve_reduced(D, R, C, ce, T, allowed, lb, ub, capacity=False)
    unc, _ = brute_force(prob, uncapacitated=True)
    assert relaxed.status == "optimal" and relaxed.objective == pytest.approx(unc)
    try:   # the staged path without an incumbent: no cutoff, no fixing
        r = prob.solve(heuristics=False)
        assert r.status == "optimal" and r.objective == pytest.approx(best)
    except InfeasibleError:
        assert math.isinf(best)
    if math.isfinite(best) and prob.integral_costs():   # with the cutoff row: nothing better
        cut = cover.solve_reduced(D, R, C, ce, T, allowed, lb, ub, cutoff=best - 1,
                                  integral=True)
        assert cut.status == "infeasible"


def test_host_count_bound():
    # the 3 smallest workloads (1 + 2 + 3 = 6) need the two largest hosts (4 + 3)
    k, lb, demand = cover.host_count_bound([1, 2, 3, 9], [4, 3, 1], [5, 1, 0], 3)
    assert (k, demand) == (2, 6.0) and lb == 1.0   # the two cheapest opening costs
    assert cover.host_count_bound([1, 2], [1, 1], [1, 1], 2)[1] == math.inf


def test_staged_path_reports_its_bounds_and_agrees_with_the_full_model():
    prob = gen.runtime_instance(150, 10, 4)
    r = prob.solve()
    full = prob.solve(reductions=False)
    assert r.status == full.status == "optimal"
    assert r.objective == pytest.approx(full.objective)
    d = r.diagnostics
    assert d["proved_by"] and set(d["bounds"]) >= {"host count", "cover LP"}
    assert all(b <= r.objective + 1e-6 for b in d["bounds"].values())


def test_time_limit_covers_every_stage():
    prob = gen.runtime_instance(4000, 50, 1)
    t0 = time.perf_counter()
    r = prob.solve(time_limit=0.5)
    assert time.perf_counter() - t0 < 0.5 + 3.0   # without the cap: the cover LP alone
    assert r.status in ("optimal", "time_limit")
    assert prob.evaluate(np.asarray(r.decisions["association"])).feasible


# -- heuristic method -------------------------------------------------------------------
def test_heuristic_refuses_the_latency_objective():
    prob = gen.testbed().replace(latency={"beta": 100.0})
    with pytest.raises(ValidationError, match="latency"):
        prob.solve(method="heuristic")


def test_infeasible_heuristic_result_reports_no_plan_figures():
    # passes the necessary checks, yet no 2 devices fit: the cover LP proves it
    prob = HFLProblem.from_dict({"workload": [3, 3], "capacities": [5, 1], "device_costs": 1.0})
    r = prob.solve(method="heuristic")
    d = r.diagnostics
    assert r.status == "infeasible" and not r.ok and math.isnan(r.objective)
    for key in ("saving_pct", "hfl_total_mb", "edge_cloud_mb", "lower_bound", "mip_gap",
                "per_round_cost"):
        assert key not in d
    assert d["infeasibility"].startswith("proved") and d["participants"] < d["required"]
    assert r.to_dict()["objective"] is None


def test_heuristic_bound_is_valid_and_proves_small_cells():
    prob = gen.runtime_instance(1000, 100, 1)
    h = prob.solve(method="heuristic")
    opt = prob.solve()
    assert h.diagnostics["lower_bound"] <= opt.objective + 1e-9 <= h.objective + 1e-9
    assert h.status == "optimal" and h.diagnostics["mip_gap"] == 0.0


# -- baselines as methods ----------------------------------------------------------------
def test_proximity_and_uncapacitated_methods():
    tb = gen.testbed()
    prox = tb.solve(method="proximity")
    d = prox.diagnostics
    assert prox.status == "overloaded" and not prox.ok
    assert np.asarray(d["overload"]) == pytest.approx(np.asarray(d["proximity_overload"]))
    assert d["saving_pct"] == 90.0          # no float noise (was 90.00000000000001)
    unc = tb.solve(method="uncapacitated")
    assert unc.status == "optimal"
    assert unc.objective == pytest.approx(tb.solve(uncapacitated=True).objective)
    assert unc.objective <= tb.solve().objective
    with pytest.raises(ValidationError):
        tb.replace(latency={"beta": 1.0}).solve(method="proximity")
