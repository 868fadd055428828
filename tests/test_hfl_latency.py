"""Latency-aware HFLOP against brute force and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jointopt.models import hfl as hm
from jointopt.models.queueing import mean_sojourn
from jointopt.solvers.hfl.brute import brute_force
from jointopt.solvers.hfl.milp import exact_objective
from jointopt.solvers.hfl.problem import HFLProblem

from jointopt.errors import InfeasibleError

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def tiny_latency(draw):
    n = draw(st.integers(1, 4))
    m = draw(st.integers(1, 3))
    return HFLProblem.from_dict({
        "workload": draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)),
        "capacities": draw(st.lists(st.integers(0, 14), min_size=m, max_size=m)),
        "device_costs": [[draw(st.integers(0, 3)) for _ in range(m)] for _ in range(n)],
        "edge_costs": [draw(st.integers(0, 3)) for _ in range(m)],
        "local_to_global_ratio": 2.0,
        "participation_ratio": draw(st.sampled_from([0.0, 0.5, 1.0])),
        "latency": {"beta": draw(st.sampled_from([0.0, 1.0, 10.0, 100.0])),
                    "delay": [[draw(st.floats(0.0, 0.05)) for _ in range(m)] for _ in range(n)],
                    "cloud_delay": draw(st.sampled_from([0.02, 0.075, 0.5]))},
    })


# -- T9 (a): the cut loop reaches the enumerated optimum of the exact objective ----------
@settings(max_examples=60, **SETTINGS)
@given(prob=tiny_latency())
def test_cut_loop_matches_brute_force_with_exact_objective(prob):
    best, _ = brute_force(prob, latency=True)
    try:
        r = prob.solve()
    except InfeasibleError:
        assert math.isinf(best)
        return
    assert r.objective == pytest.approx(best, rel=1e-6, abs=1e-9)
    a = np.asarray(r.decisions["association"])
    assert exact_objective(prob, a) == pytest.approx(r.objective)
    for step in r.diagnostics["history"]:   # LB <= optimum <= UB at every iteration
        assert step["LB"] <= best + 1e-6 * max(1, abs(best))
        assert step["UB"] >= best - 1e-6 * max(1, abs(best))


@settings(max_examples=10, **SETTINGS)
@given(prob=tiny_latency())
def test_cut_loop_on_the_pyomo_path(prob):
    best, _ = brute_force(prob, latency=True)
    try:
        r = prob.solve(method="pyomo")
    except InfeasibleError:
        assert math.isinf(best)
        return
    assert r.objective == pytest.approx(best, rel=1e-6, abs=1e-9)


# -- T9 (b): beta = 0 is HFLOP -------------------------------------------------------------
def test_beta_zero_gives_hflop_value():
    base = HFLProblem.from_dict({"workload": [2, 3, 5, 1, 4], "capacities": [8, 9, 6],
                                 "device_costs": [[0, 1, 2], [1, 0, 2], [2, 2, 0], [0, 0, 1],
                                                  [1, 2, 1]],
                                 "edge_costs": [1, 2, 1], "participation_ratio": 0.8})
    lat = base.replace(latency={"beta": 0.0})
    assert lat.solve().objective == pytest.approx(base.solve().objective)


# -- T9 (c): the grid bound of the tangent cuts -------------------------------------------
@pytest.mark.parametrize("mu, cap, k", [(10.0, 9.0, 12), (100.0, 99.0, 12), (5.0, 2.0, 3),
                                        (50.0, 45.0, 6)])
def test_tangent_grid_error_bound_holds(mu, cap, k):
    grid = hm.tangent_grid(mu, cap, k)
    assert grid[0] == 0.0 and grid[-1] == pytest.approx(cap)
    lam = np.linspace(0.0, cap, 4001)
    slope, icpt = hm.tangent(grid[:, None], mu)
    cuts = np.max(slope * lam[None, :] + icpt, axis=0)
    ratio = (1 + hm.phi(lam, mu)) / (1 + cuts)
    assert (ratio >= 1 - 1e-12).all()
    assert ratio.max() <= hm.grid_bound(mu, cap, k) * (1 + 1e-9)
    assert ratio.max() >= hm.grid_bound(mu, cap, k) * 0.98  # the bound is nearly tight


# -- T9 (d): Pareto monotonicity over beta ------------------------------------------------
def test_pareto_monotone_in_beta():
    rng = np.random.default_rng(4)
    base = HFLProblem.from_dict({
        "workload": rng.integers(1, 5, 8).tolist(), "capacities": [14, 14, 14],
        "device_costs": rng.integers(0, 3, (8, 3)).tolist(), "edge_costs": [1, 2, 3],
        "participation_ratio": 1.0, "local_to_global_ratio": 1.0})
    costs, lats = [], []
    for beta in (0.0, 1.0, 10.0, 100.0, 1000.0):
        r = base.replace(latency={"beta": beta}).solve()
        costs.append(r.diagnostics["per_round_cost"])
        lats.append(r.diagnostics["mean_latency_s"])
    assert all(b >= a - 1e-9 for a, b in zip(costs, costs[1:], strict=False))
    assert all(b <= a + 1e-9 for a, b in zip(lats, lats[1:], strict=False))


# -- T9 (e): balance closed form ----------------------------------------------------------
def test_balanced_loads_closed_form():
    n, m, mu = 12, 3, 10.0
    prob = HFLProblem.from_dict({
        "workload": 1.0, "devices": n, "capacities": 100.0, "hosts": m, "device_costs": 0.0,
        "edge_costs": 0.0, "participation_ratio": 1.0,
        "latency": {"beta": 5.0, "service_rate": mu, "delay": 0.0, "u_max": 0.95}})
    r = prob.solve()
    assert np.allclose(r.diagnostics["load"], n / m)
    assert r.diagnostics["mean_latency_s"] == pytest.approx(1 / (mu - n / m), rel=1e-6)


# -- T9 (f): opening threshold ------------------------------------------------------------
@pytest.mark.parametrize("side", [0.8, 1.25])
def test_opening_threshold(side):
    n, mu = 6, 10.0
    thr = 1.0 / (1.0 / (mu - n) - 1.0 / (mu - n / 2))
    prob = HFLProblem.from_dict({
        "workload": 1.0, "devices": n, "capacities": 100.0, "hosts": 2, "device_costs": 0.0,
        "edge_costs": 1.0, "participation_ratio": 1.0,
        "latency": {"beta": side * thr, "service_rate": mu, "delay": 0.0, "u_max": 0.95}})
    r = prob.solve()
    assert r.diagnostics["used_hosts"] == (1 if side < 1 else 2)


# -- T9 (g): SimPy M/M/1 cross-check of 1/(mu - lambda) ---------------------------------
def test_simpy_mm1_mean_sojourn():
    lam, mu, n = 6.0, 10.0, 20000
    rng = np.random.default_rng(1)
    env = simpy.Environment()
    server = simpy.Resource(env, capacity=1)
    times = []

    def customer(env):
        t0 = env.now
        with server.request() as req:
            yield req
            yield env.timeout(rng.exponential(1 / mu))
        times.append(env.now - t0)

    def source(env):
        for _ in range(n):
            yield env.timeout(rng.exponential(1 / lam))
            env.process(customer(env))

    env.process(source(env))
    env.run()
    t = np.asarray(times)[n // 10:]
    batches = t[: len(t) // 20 * 20].reshape(20, -1).mean(1)   # batch means for the CI
    half = 2.093 * batches.std(ddof=1) / np.sqrt(20)
    assert abs(batches.mean() - float(mean_sojourn(lam, mu))) <= half * 1.5


# -- T9 (h): no single move improves the exact objective ---------------------------------
def test_one_opt_at_the_returned_solution():
    rng = np.random.default_rng(7)
    prob = HFLProblem.from_dict({
        "workload": rng.integers(1, 6, 9).tolist(), "capacities": [15, 12, 20],
        "device_costs": rng.integers(0, 3, (9, 3)).tolist(), "edge_costs": [2, 1, 3],
        "participation_ratio": 0.7,
        "latency": {"beta": 20.0, "delay": rng.uniform(0, 0.02, (9, 3)).tolist()}})
    r = prob.solve()
    a = np.asarray(r.decisions["association"])
    f = exact_objective(prob, a)
    for i in range(prob.N):
        for j in range(-1, prob.M):
            b = a.copy()
            b[i] = j
            if (b >= 0).sum() < prob.T:
                continue
            assert exact_objective(prob, b) >= f - 1e-6 * max(1, abs(f))


def test_max_latency_constraint_and_infeasible_latency():
    base = HFLProblem.from_dict({"workload": [2, 3, 1], "capacities": [10, 10],
                                 "device_costs": [[0, 1], [1, 0], [0, 0]], "edge_costs": [1, 1],
                                 "latency": {"beta": 0.0, "max_latency": 1.0}})
    r = base.solve()
    assert r.diagnostics["mean_latency_s"] <= 1.0 + 1e-9
    tight = base.replace(latency={"max_latency": 1e-6})
    with pytest.raises(InfeasibleError) as exc:
        tight.solve()
    assert exc.value.constraint == "latency"
