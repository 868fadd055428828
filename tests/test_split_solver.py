"""solvers/split: P-ACC of ``docs/kinds/split_learning.md`` (closed forms, brute force),
the queue-agnostic baseline, validation, scenario and CLI."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jointopt.models import split as sm
from jointopt.solvers.split import SplitProblem, curves_from_records

import jointopt
from jointopt import report, scenarios
from jointopt.cli import main
from jointopt.errors import InfeasibleError, ValidationError

LN10 = math.log(10)


def make(n=3, seed=0, *, load=1.0, budget=None, cuts=(1, 2, 3), w_grid=40, **clients):
    rng = np.random.default_rng(seed)
    data = {
        "kind": "split_learning", "name": "t", "network": {"cuts": list(cuts)},
        "server": {"f_server": 1e9, "rho_max": 0.95},
        "clients": {"count": n, "f_client": rng.uniform(1e8, 3e8, n).tolist(),
                    "uplink_rate": rng.uniform(5e6, 5e7, n).tolist(),
                    "request_rate": (load * rng.uniform(100, 300, n)).tolist(),
                    "latency_budget": (budget if budget is not None
                                       else rng.uniform(0.008, 0.014, n).tolist()),
                    "ood_ratio": rng.uniform(0, 1, n).tolist(), **clients},
        "entropy": {"client_acc_main": [0.85, 0.92, 0.95][:len(cuts)],
                    "main_a": [2.0, 1.6, 1.3][:len(cuts)]},
        "optimizer": {"w_grid": w_grid},
    }
    return SplitProblem.from_dict(data)


def ideal_curve(aC_main, aC_ood, aS_main, aS_ood, p) -> sm.OffloadCurve:
    """An ideal-detector operating curve written as a three-threshold offload curve."""
    env = sm.ideal_detector_curve(aC_main, aC_ood, aS_main, aS_ood, p)
    return sm.OffloadCurve(e=np.array([-1.0, 1.0, LN10]), q=env.vertices_q[::-1].copy(),
                           acc=env.vertices_acc[::-1].copy())


def exact_check(problem, result):
    """Re-evaluate the returned decisions with the exact M/M/1 wait (oracle 15)."""
    net, link = problem.net, problem.link
    s, q = int(result.diagnostics["split"]), result.decisions["q"]
    mu = float(sm.server_rate(net, s, problem.server.f_server))
    load = sm.offered_load(q, problem.clients.request_rate)
    assert load <= problem.server.rho_max * mu * (1 + 1e-9)
    W = float(sm.server_sojourn(load, mu))
    A = sm.client_time(net, s, link)
    c = net.act_bits(s, link.bits_per_element) / problem.clients.uplink_rate
    T = sm.queued_latency(A, c, q, W)
    np.testing.assert_allclose(T, result.decisions["latency"], rtol=1e-12)
    assert np.all(T <= problem.clients.latency_budget * (1 + 1e-9))
    assert np.all((q >= 0) & (q <= 1))
    return T


# -- scenario, CLI, report -------------------------------------------------------------
def test_builtin_scenario_solves_and_round_trips(tmp_path):
    problem = jointopt.load_scenario("split_default")
    assert problem.kind == "split_learning" and problem.name == "split_default"
    result = jointopt.solve(problem)
    assert result.ok and result.decisions["split"].shape == (problem.n,)
    exact_check(problem, result)
    again = jointopt.load_scenario(jointopt.dump(problem, tmp_path / "s.toml"))
    assert again == problem and jointopt.solve(again).objective == result.objective


def test_cli_json_prints_split_and_thresholds(capsys):
    assert main(["solve", "split_default", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    n = scenarios.load("split_default").n
    assert data["kind"] == "split_learning" and data["status"] == "optimal"
    assert len(set(data["decisions"]["split"])) == 1
    assert data["diagnostics"]["split"] == data["decisions"]["split"][0]
    for key in ("q", "e_th", "latency", "accuracy"):
        assert len(data["decisions"][key]) == n
    assert all(-1 <= e <= LN10 for e in data["decisions"]["e_th"])


def test_text_report_and_outputs(tmp_path):
    problem = jointopt.load_scenario("split_default")
    result = problem.solve()
    text = report.text_report(result)
    assert "split" in text and "e_th" in text and "accuracy" in text
    paths = report.write_outputs(result, problem, tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)


# -- two paths, one answer ------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_and_lp_agree(seed):
    problem = make(3, seed, load=2.0, w_grid=25).replace(
        optimizer={"w_grid": 25, "n_threshold_grid": 65})
    a, b = problem.solve(method="exact"), problem.solve(method="lp")
    assert a.objective == pytest.approx(b.objective, abs=1e-7)
    assert a.diagnostics["split"] == b.diagnostics["split"]
    np.testing.assert_allclose(a.decisions["q"], b.decisions["q"], atol=1e-5)
    exact_check(problem, a)
    exact_check(problem, b)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 5), seed=st.integers(0, 2**31), load=st.floats(0.1, 20.0))
def test_solutions_meet_every_budget_with_the_exact_wait(n, seed, load):
    problem = make(n, seed, load=load, w_grid=20)
    try:
        result = problem.solve()
    except InfeasibleError as exc:
        assert exc.shortfall > 0 and "latency_budget" in exc.field
        return
    assert result.ok
    exact_check(problem, result)
    # the reported accuracy is the envelope value; the deterministic threshold stays within
    d = result.diagnostics
    assert np.all(d["q_det"] <= result.decisions["q"] + 1e-12)
    assert np.all(d["accuracy_det"] <= result.decisions["accuracy"] + 1e-12)


# -- identical clients: closed form (oracle 14) -------------------------------------------------
def _identical(k, nu, budget=0.009):
    return make(k, 0, cuts=(2,), w_grid=200,
                f_client=[1.5e8] * k, uplink_rate=[1e7] * k, request_rate=[nu] * k,
                latency_budget=[budget] * k, ood_ratio=[0.5] * k)


@pytest.mark.parametrize("k, nu, budget, binding", [
    (2, 100.0, 0.009, "accuracy peak"), (4, 1500.0, 0.008, "stability"),
    (6, 800.0, 0.006, "latency"), (3, 200.0, 0.0048, "latency")])
def test_identical_clients_match_the_closed_form(k, nu, budget, binding):
    problem = _identical(k, nu, budget)
    curve = ideal_curve(0.95, 0.0, 0.9, 0.85, 0.5)
    result = problem.solve(curves={2: [curve] * k})
    net, link = problem.net, problem.link
    A = float(sm.client_time(net, 2, link)[0])
    c = float(net.act_bits(2) / 1e7)
    mu = float(sm.server_rate(net, 2, 1e9))
    q_max = sm.identical_q_max(k * nu, mu, c, budget - A, 0.95)
    env = curve.envelope()
    q_opt = min(q_max, env.peak[0])
    cap = 0.95 * mu / (k * nu)
    assert binding == ("accuracy peak" if q_opt == env.peak[0] else
                       "stability" if q_opt == cap else "latency")
    q = result.decisions["q"]
    assert q.sum() == pytest.approx(k * q_opt, rel=1e-6)
    if binding != "stability":  # only the total is unique when the load cap binds alone
        np.testing.assert_allclose(q, q_opt, rtol=1e-6)
    assert result.objective == pytest.approx(float(env(q_opt)), rel=1e-7)
    lp = problem.solve(method="lp", curves={2: [curve] * k}, w_grid=30)
    exact_check(problem, result)
    assert lp.objective == pytest.approx(result.objective, rel=1e-7)


def test_identical_clients_monotone_in_total_load():
    curve = ideal_curve(0.95, 0.0, 0.9, 0.85, 0.5)
    objs, qs = [], []
    for nu in (50.0, 300.0, 600.0, 1000.0, 1500.0):
        r = _identical(4, nu, budget=0.008).solve(curves={2: [curve] * 4})
        objs.append(r.objective)
        qs.append(r.decisions["q"][0])
    assert np.all(np.diff(objs) <= 1e-12) and np.all(np.diff(qs) <= 1e-12)
    assert objs[-1] < objs[0]  # the queue binds at the top of the range


# -- light traffic decouples (oracle 13) ----------------------------------------------------------
def test_light_traffic_decouples_into_per_client_problems():
    problem = make(4, 3, load=1e-6)
    result = problem.solve()
    s = int(result.diagnostics["split"])
    curves = problem.synthetic_curves()[s]
    net, link = problem.net, problem.link
    A = sm.client_time(net, s, link)
    c = net.act_bits(s) / problem.clients.uplink_rate
    S = float(net.flops_server(s) / problem.server.f_server)
    q_bar = (problem.clients.latency_budget - A) / (c + S)
    grid = np.linspace(0, 1, 20001)
    w = problem.clients.request_rate / problem.clients.request_rate.sum()
    best = 0.0
    for k, cv in enumerate(curves):
        env = cv.envelope()
        g = grid[grid <= q_bar[k]]
        best += w[k] * env(g).max()
    assert result.objective == pytest.approx(best, abs=1e-6)
    # and the queue-agnostic baseline is then feasible too
    assert problem.solve(method="decoupled").ok


# -- brute force for small K ----------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 4])
def test_no_grid_point_beats_the_solver(seed):
    problem = make(2, seed, load=8.0, cuts=(2,), w_grid=60)
    result = problem.solve()
    exact_check(problem, result)
    net, link, cl = problem.net, problem.link, problem.clients
    curves = problem.synthetic_curves()[2]
    envs = [cv.envelope() for cv in curves]
    mu = float(sm.server_rate(net, 2, problem.server.f_server))
    A = sm.client_time(net, 2, link)
    c = net.act_bits(2) / cl.uplink_rate
    w = cl.request_rate / cl.request_rate.sum()
    grid = np.linspace(0, 1, 81)
    best = -1.0
    for q in itertools.product(grid, repeat=2):
        q = np.array(q)
        load = sm.offered_load(q, cl.request_rate)
        if load > 0.95 * mu:
            continue
        T = sm.queued_latency(A, c, q, sm.server_sojourn(load, mu))
        if np.all(T <= cl.latency_budget):
            best = max(best, float(sum(wk * e(qk) for wk, e, qk in zip(w, envs, q,
                                                                        strict=True))))
    assert best <= result.objective + 1e-9
    assert result.objective - best < 0.02  # grid resolution 1/80


# -- queue-agnostic baseline -------------------------------------------------------------------
def test_queue_agnostic_baseline_violates_budgets_under_heavy_load():
    problem = make(4, 2, load=12.0, cuts=(2,))
    naive = problem.solve(method="decoupled")
    assert naive.status == "budget_violated" and not naive.ok
    assert np.any(naive.diagnostics["budget_slack"] < 0)
    joint = problem.solve()
    assert joint.ok
    exact_check(problem, joint)


# -- measured curves (harness interface) --------------------------------------------------------
def test_measured_records_plug_in():
    problem = make(2, 5, cuts=(1, 2))
    rng = np.random.default_rng(0)
    records = {s: [problem.entropy_model(s).sample(200, 100, rng) for _ in range(2)]
               for s in (1, 2)}
    curves = curves_from_records(records, problem.clients.ood_ratio, 10)
    result = problem.solve(curves=curves)
    assert result.diagnostics["curves"] == "measured" and result.ok
    exact_check(problem, result)
    # thresholds are measured entropies (or the two extremes)
    s = int(result.diagnostics["split"])
    for k, e in enumerate(result.decisions["e_th"]):
        assert e in set(curves[s][k].e)
    with pytest.raises(ValidationError, match=r"curves\[1\]"):
        problem.solve(curves={1: curves[1][:1]})


# -- validation and infeasibility ------------------------------------------------------------------
def test_errors_name_the_culprit():
    with pytest.raises(ValidationError, match=r"clients\[1\].uplink_rate must be > 0"):
        make(3, 0, uplink_rate=[1e7, -1.0, 1e7])
    with pytest.raises(ValidationError, match=r"network.cuts\[1\] must lie in 1..5"):
        make(2, 0, cuts=(2, 6))
    with pytest.raises(ValidationError, match=r"clients.request_rate must have one entry"):
        make(3, 0, request_rate=[1.0, 2.0])
    with pytest.raises(ValidationError,
                       match=r"entropy.main_a must have one entry per candidate cut"):
        SplitProblem.from_dict({**make(2, 0).to_dict(), "network": {"cuts": [1, 2, 3, 4]}})
    with pytest.raises(ValidationError, match="solved by exact, lp, decoupled"):
        make(2, 0).solve(method="simplex")


def test_infeasible_budget_is_reported_with_shortfall():
    with pytest.raises(InfeasibleError) as info:
        make(3, 0, budget=[0.01, 1e-4, 0.01]).solve()
    assert info.value.field == "clients[1].latency_budget" and info.value.shortfall > 0


# -- inner problem: knapsack = LP on random curves ---------------------------------------------
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 4), cap=st.floats(0, 3))
def test_inner_knapsack_equals_the_lp(seed, n, cap):
    from jointopt.solvers.split import inner_lp
    from jointopt.solvers.split.optimize import _segments, inner_greedy

    rng = np.random.default_rng(seed)
    envs = []
    for _ in range(n):
        m = sm.BetaEntropyModel(*rng.uniform(0.5, 5, 4), *rng.uniform(0, 1, 4))
        envs.append(m.curve(float(rng.uniform(0, 2)), 33).envelope())
    nu = rng.uniform(0.5, 2, n)
    w = nu / nu.sum()
    u = rng.uniform(0, 1, n)
    base = float(sum(wk * e(0.0) for wk, e in zip(w, envs, strict=True)))
    qg, vg = inner_greedy(_segments(envs, w, nu), base, w, nu, u, cap)
    ql, vl = inner_lp(envs, w, nu, u, cap)
    assert vg == pytest.approx(vl, abs=1e-8)
    assert np.all(qg <= u + 1e-12) and nu @ qg <= cap + 1e-9
    assert vg == pytest.approx(float(sum(wk * e(qk) for wk, e, qk in zip(w, envs, qg,
                                                                          strict=True))))


# -- P-LAT (oracle 16) ----------------------------------------------------------------------------
def test_min_latency_is_dcp_meets_floors_and_matches_the_closed_form():
    from jointopt.solvers.split.optimize import cut_data, floor_interval, latency_problem

    problem = make(3, 1, cuts=(2, 3), accuracy_floor=[0.88, 0.9, 0.86])
    result = problem.solve(method="min_latency")
    assert result.ok and result.solver == "split-min_latency"
    s = int(result.diagnostics["split"])
    cd = cut_data(problem, s, problem.synthetic_curves()[s])
    prob, _ = latency_problem(cd, problem.clients.request_rate, problem.clients.accuracy_floor,
                              0.95)
    assert prob.is_dcp()
    assert np.all(result.decisions["accuracy"] >= problem.clients.accuracy_floor - 1e-9)
    # latency grows with q, so the least rate meeting each floor is optimal
    lo, _ = floor_interval(cd.envs, problem.clients.accuracy_floor)
    np.testing.assert_allclose(result.decisions["q"], lo, atol=1e-6)
    nu = problem.clients.request_rate
    assert result.objective == pytest.approx(float(nu @ result.decisions["latency"] / nu.sum()))


def test_min_latency_never_worse_than_a_feasible_grid_point():
    problem = make(2, 7, load=6.0, cuts=(2,), accuracy_floor=[0.85, 0.87])
    result = problem.solve(method="min_latency")
    net, link, cl = problem.net, problem.link, problem.clients
    envs = [cv.envelope() for cv in problem.synthetic_curves()[2]]
    mu = float(sm.server_rate(net, 2, problem.server.f_server))
    A, c = sm.client_time(net, 2, link), net.act_bits(2) / cl.uplink_rate
    best = math.inf
    for q in itertools.product(np.linspace(0, 1, 101), repeat=2):
        q = np.array(q)
        load = sm.offered_load(q, cl.request_rate)
        if load > 0.95 * mu or any(e(qk) < f for e, qk, f in zip(envs, q, cl.accuracy_floor,
                                                                   strict=True)):
            continue
        T = sm.queued_latency(A, c, q, sm.server_sojourn(load, mu))
        best = min(best, float(cl.request_rate @ T / cl.request_rate.sum()))
    assert math.isfinite(best) and result.objective <= best + 1e-9


def test_min_latency_reports_impossible_floors():
    with pytest.raises(InfeasibleError) as info:
        make(3, 1, accuracy_floor=[0.5, 0.999, 0.5]).solve(method="min_latency")
    assert info.value.field == "clients[1].accuracy_floor" and info.value.shortfall > 0


# -- SimPy check of the shared-server wait --------------------------------------------------
def test_simulated_shared_server_matches_mm1_sojourn():
    import simpy

    rng = np.random.default_rng(0)
    nu, q, mu = np.array([30.0, 50.0, 20.0]), np.array([0.5, 0.8, 0.3]), 100.0
    env, server, times = simpy.Environment(), None, []
    server = simpy.Resource(env, capacity=1)

    def job():
        start = env.now
        with server.request() as req:
            yield req
            yield env.timeout(rng.exponential(1 / mu))
        times.append(env.now - start)

    def client(rate, prob):
        while True:
            yield env.timeout(rng.exponential(1 / rate))
            if rng.random() < prob:  # thinning: offload with probability q_k
                env.process(job())

    for rate, prob in zip(nu, q, strict=True):
        env.process(client(rate, prob))
    env.run(until=400.0)
    t = np.asarray(times[len(times) // 10:])
    batches = t[: len(t) // 20 * 20].reshape(20, -1).mean(axis=1)  # batch means
    half = 2.1 * batches.std(ddof=1) / math.sqrt(20)
    W = float(sm.server_sojourn(sm.offered_load(q, nu), mu))
    assert abs(t.mean() - W) < half + 0.02 * W


# -- per-client cuts (extension) --------------------------------------------------------------
def _check_pk(problem, result):
    net, link, cl = problem.net, problem.link, problem.clients
    s = result.decisions["split"]
    q = result.decisions["q"]
    S = net.flops_server(s) / problem.server.f_server
    A = sm.client_time(net, s, link)
    c = net.act_bits(s) / cl.uplink_rate
    assert np.sum(cl.request_rate * q * S) <= problem.server.rho_max + 1e-9
    T = sm.queued_latency(A, c, q, sm.pk_sojourn(q, cl.request_rate, S))
    assert np.all(T <= cl.latency_budget * (1 + 1e-9))
    np.testing.assert_allclose(T, result.decisions["latency"])


def test_per_client_cuts_reduce_to_the_common_cut_and_search_agrees():
    one = make(3, 2, load=3.0, cuts=(2,), w_grid=60)
    assert one.solve(method="per_client").objective == pytest.approx(one.solve().objective,
                                                                      abs=1e-9)
    problem = make(3, 2, load=3.0, w_grid=60)
    enum = problem.solve(method="per_client", search="enumerate")
    br = problem.solve(method="per_client", search="best_response")
    common = problem.solve()
    assert enum.ok and br.ok
    _check_pk(problem, enum)
    _check_pk(problem, br)
    assert enum.objective >= br.objective - 1e-12 >= common.objective - 2e-12
    assert enum.diagnostics["common_cut_objective"] == pytest.approx(common.objective, abs=1e-9)


# -- on-time accuracy (method timely) -----------------------------------------------------
def on_time_value(problem, q, curves) -> float:
    """The request-weighted on-time accuracy of offload rates ``q`` at one cut: each
    client's best mix of thresholds for ``kept + pi (acc - kept)`` at offload rate q_k, pi
    its offloaded requests' chance of an M/M/1 sojourn within the slack (0 if unstable)."""
    from jointopt.models.queueing import on_time_fraction
    from jointopt.solvers.split.optimize import cut_data

    s = next(iter(curves))
    cd = cut_data(problem, s, curves[s])
    nu, T = problem.clients.request_rate, problem.clients.latency_budget
    load = float(nu @ q)
    if load > problem.server.load_cap(cd.mu) * (1 + 1e-12):
        return -math.inf
    pi = on_time_fraction(load, cd.mu, np.maximum(T - cd.A - cd.c, 0.0))
    envs = sm.on_time_envelopes(curves[s], pi)
    return float(sum(n * float(env(qk)) for n, env, qk in zip(nu, envs, q, strict=True))
                 / nu.sum())


@pytest.mark.parametrize("seed", [0, 1])
def test_timely_beats_every_threshold_pair_and_the_latency_budgeted_optimum(seed):
    """Two clients at one cut, brute force over every pair of thresholds: none has a higher
    on-time accuracy than method timely's decisions (up to 1e-7, the resolution of its scan
    over the sojourn cap), nor has P-ACC's solution; the reported objective is the on-time
    accuracy of its decisions."""
    from jointopt.models.queueing import on_time_fraction
    from jointopt.solvers.split.optimize import cut_data

    p = make(2, seed, cuts=(2,), load=0.6).replace(
        server={"f_server": 3e8, "rho_max": 0.95, "tau0": 0.001},
        optimizer={"w_grid": 60, "n_threshold_grid": 33})
    curves = p.synthetic_curves()
    res = p.solve(method="timely")
    q = np.asarray(res.decisions["q"])
    value = on_time_value(p, q, curves)
    assert res.status == "optimal"
    assert res.objective == pytest.approx(value, abs=1e-9)
    nu = p.clients.request_rate
    np.testing.assert_allclose(res.decisions["accuracy"] @ nu / nu.sum(), res.objective,
                               rtol=1e-12)
    cd = cut_data(p, 2, curves[2])
    slack = np.maximum(p.clients.latency_budget - cd.A - cd.c, 0.0)
    (c1, c2) = curves[2]
    q1, q2 = np.meshgrid(c1.q, c2.q, indexing="ij")
    load = nu[0] * q1 + nu[1] * q2
    ok = load <= p.server.load_cap(cd.mu)
    pi1 = on_time_fraction(load, cd.mu, slack[0])
    pi2 = on_time_fraction(load, cd.mu, slack[1])
    pairs = (nu[0] * (c1.kept[:, None] + pi1 * (c1.acc - c1.kept)[:, None])
             + nu[1] * (c2.kept[None, :] + pi2 * (c2.acc - c2.kept)[None, :])) / nu.sum()
    assert value >= pairs[ok].max() - 1e-7  # up to the resolution of the W-bar scan
    exact = p.solve(method="exact")
    assert value >= on_time_value(p, np.asarray(exact.decisions["q"]), curves) - 1e-9
    on_time = np.asarray(res.diagnostics["on_time"])
    assert ((on_time >= 0) & (on_time <= 1)).all()


def test_timely_respects_the_admission_cap_and_needs_the_kept_part():
    p = make(4, 3, cuts=(2, 3), load=1.5)
    capped = p.replace(server={**p.server.model_dump(), "max_load": 50.0})
    res = capped.solve(method="timely")
    assert res.diagnostics["load"] <= 50.0 * (1 + 1e-9)
    curves = {s: [sm.OffloadCurve(e=c.e, q=c.q, acc=c.acc) for c in rows]
              for s, rows in p.synthetic_curves().items()}
    with pytest.raises(ValidationError, match=r"curves\[0\]\.kept"):
        p.solve(method="timely", curves=curves)
