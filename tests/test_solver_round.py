"""Per-round solver: ranges and caps, closed forms against brute force, fast against
CVXPY, zero prices, plus the ascent's own invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from instances import random_problem, with_aggregation_noise
from jointopt.models.errors import ValidationError
from jointopt.models.queueing import on_time_fraction
from jointopt.solvers.jti import Allocation, JointTrainingInferenceProblem, RoundSolver, RoundState
from jointopt.solvers.jti.round import FastBlocks, _Data

seeds = st.integers(0, 2**31 - 1)


def _in_range(problem, res, atol=1e-9):
    c = problem.clients
    q, d, mu = (res.decisions[k] for k in ("q", "d", "mu"))
    assert np.all(q >= c.q_min - atol) and np.all(q <= 1 + atol)
    assert np.all(d >= -atol) and np.all(d <= 1 + atol)
    assert np.all(mu >= problem.mu_lo - atol) and np.all(mu <= c.mu_max + atol)
    assert np.all(mu > c.arrival_rate) or np.all(c.arrival_rate[mu <= c.arrival_rate] == 0)
    use = c.cost_train * q + c.cost_download * d + c.cost_service * mu
    assert np.all(use <= c.cap + 1e-9), "hard cap violated"


# -- oracle 1: ranges and hard caps --------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 40), seed=seeds, deadlines=st.booleans(), caps=st.booleans())
def test_fast_path_decisions_in_range_and_under_cap(n, seed, deadlines, caps):
    problem = random_problem(n, seed, deadlines=deadlines, caps=caps)
    res = RoundSolver(problem).solve()
    assert res.status == "converged"
    _in_range(problem, res)


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 12), seed=seeds)
def test_cvxpy_path_decisions_in_range_and_under_cap(n, seed):
    problem = random_problem(n, seed)
    res = RoundSolver(problem, "cvxpy").solve()
    _in_range(problem, res)


# -- the ascent's invariants ---------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 30), seed=seeds)
def test_objective_never_decreases_along_the_ascent(n, seed):
    res = RoundSolver(random_problem(n, seed)).solve()
    hist = np.array(res.diagnostics["objective_history"])
    assert np.all(np.diff(hist) >= -1e-9 * np.maximum(1, np.abs(hist[1:])))
    assert res.objective >= hist[0] - 1e-12


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), seed=seeds)
def test_end_point_is_blockwise_optimal_on_a_grid(n, seed):
    """No single client's q, d or mu, moved alone on a grid, improves the objective."""
    problem = random_problem(n, seed)
    solver = RoundSolver(problem)
    state = RoundState.initial(problem)
    res = solver.solve(state)
    x = Allocation(*(res.decisions[k] for k in ("q", "d", "mu")))
    best = solver.objective(state, x)
    c = problem.clients
    for i in range(n):
        for name, lo, hi in (("q", c.q_min[i], 1.0), ("d", 0.0, 1.0),
                             ("mu", problem.mu_lo[i], c.mu_max[i])):
            for v in np.linspace(lo, hi, 201):
                trial = {k: np.array(getattr(x, k)) for k in ("q", "d", "mu")}
                trial[name][i] = v
                y = Allocation(**trial)
                if np.any(solver.use(y) > c.cap + 1e-12):
                    continue
                assert solver.objective(state, y) <= best + 1e-7 * max(1, abs(best))


# -- oracle 5: closed forms against brute force -------------------------------------------
@settings(max_examples=100, deadline=None)
@given(seed=seeds, G=st.floats(0.0, 50.0), price=st.floats(0.0, 5.0))
def test_q_closed_form_matches_grid(seed, G, price):
    problem = random_problem(5, seed)
    D = _Data(problem)
    ub = np.random.default_rng(seed).uniform(D.q_min, 1.0)
    q = FastBlocks(D).q_block(G, price, ub)
    for i in range(D.n):
        grid = np.linspace(D.q_min[i], ub[i], 20001)
        def f(v, i=i):
            return -G * D.p2[i] / v - price * D.ctr[i] * v

        assert f(q[i]) >= f(grid).max() - 1e-9 * max(1, abs(f(grid).max()))
        assert D.q_min[i] - 1e-12 <= q[i] <= ub[i] + 1e-12


@settings(max_examples=100, deadline=None)
@given(seed=seeds, scale=st.floats(0.0, 100.0), price=st.floats(0.0, 5.0))
def test_mu_closed_form_matches_grid(seed, scale, price):
    problem = random_problem(5, seed)
    D = _Data(problem)
    rng = np.random.default_rng(seed + 1)
    w = scale * rng.uniform(-0.2, 1.0, D.n)
    ub = rng.uniform(D.mu_lo, D.mu_max)
    mu = FastBlocks(D).mu_block(w, price, ub)
    for i in range(D.n):
        grid = np.linspace(D.mu_lo[i], ub[i], 20001)

        def f(v, i=i):
            return w[i] * on_time_fraction(D.lam[i], v, D.tau[i]) - price * D.cinf[i] * v

        if price * D.cinf[i] == 0 and (w[i] == 0 or not D.has_deadline[i]):
            continue  # a tie; the driver resolves it (free resource to its bound)
        assert f(mu[i]) >= f(grid).max() - 1e-9 * max(1, abs(f(grid).max()))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 20), seed=seeds)
def test_cap_multiplier_prices_the_cap(n, seed):
    """Re-solving the block the cap bounds at price Z + nu, with no cap, lands on the cap.

    This is the bisection characterisation of nu: the multiplier is the extra
    price at which the unconstrained closed form uses exactly the cap.
    """
    problem = random_problem(n, seed)
    solver = RoundSolver(problem)
    state = RoundState.initial(problem)
    res = solver.solve(state)
    nu = res.diagnostics["cap_multiplier"]
    assert np.all(nu >= 0)
    assert np.all(nu[~res.diagnostics["cap_binding"]] == 0)
    D = solver.data
    q, d, mu = (res.decisions[k] for k in ("q", "d", "mu"))
    alpha, kappa = D.acc.linearize(state.K)
    K1 = D.conv.step(state.K, q, D.p)
    w = D.V * D.lam * (alpha - kappa * (d * K1 + (1 - d) * state.ebar))
    free = FastBlocks(D).mu_block(w, state.Z + nu, D.mu_max)
    interior = (res.diagnostics["cap_binding"] & (mu > D.mu_lo + 1e-9)
                & (mu < D.mu_max - 1e-9) & D.has_deadline & (D.cinf > 0))
    np.testing.assert_allclose(free[interior], mu[interior], rtol=1e-7, atol=1e-9)


def test_bisection_on_nu_recovers_the_multiplier():
    """A plain bisection on the extra price reproduces the reported nu."""
    problem = random_problem(30, 5)
    solver = RoundSolver(problem)
    state = RoundState.initial(problem)
    res = solver.solve(state)
    D = solver.data
    q, d, mu = (res.decisions[k] for k in ("q", "d", "mu"))
    alpha, kappa = D.acc.linearize(state.K)
    K1 = D.conv.step(state.K, q, D.p)
    w = D.V * D.lam * (alpha - kappa * (d * K1 + (1 - d) * state.ebar))
    room = (D.cap - D.ctr * q - D.cdl * d) / D.cinf
    target = (res.diagnostics["cap_binding"] & (mu > D.mu_lo + 1e-9) & (mu < D.mu_max - 1e-9)
              & D.has_deadline)
    assert target.any(), "instance should have an interior binding cap"
    lo, hi = np.zeros(D.n), np.full(D.n, 1e6)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        over = FastBlocks(D).mu_block(w, state.Z + mid, D.mu_max) > room
        lo, hi = np.where(over, mid, lo), np.where(over, hi, mid)
    np.testing.assert_allclose(hi[target], res.diagnostics["cap_multiplier"][target],
                               rtol=1e-6, atol=1e-9)


# -- oracle 6: two paths, one answer ------------------------------------------------------
def _scale(problem, result) -> float:
    """The objective's natural size: its largest possible gain, ``V sum lambda acc_max``.

    The net objective (gain minus budget penalty plus look-ahead) can cancel to near zero,
    so a relative difference is taken against this scale, not against the net value.
    """
    c = problem.clients
    gain = problem.controller.V * float(c.arrival_rate.sum()) * problem.accuracy.acc_max
    return max(1.0, abs(result.objective), gain)

@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 15), seed=seeds)
def test_fast_and_cvxpy_objectives_agree(n, seed):
    """Same optimum value on any instance, ties (free resources, Z = 0) included."""
    problem = random_problem(n, seed)
    fast = RoundSolver(problem).solve()
    cvx = RoundSolver(problem, "cvxpy").solve()
    assert abs(fast.objective - cvx.objective) <= 1e-6 * _scale(problem, fast)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 15), seed=seeds)
def test_fast_and_cvxpy_decisions_agree(n, seed):
    """Same decisions where every resource has a price (no exact ties).

    Along a binding cap the objective can be flat to ~1e-8 in a decision; both paths stop
    when the objective stalls at that level, hence the 1e-3 tolerance on decisions.
    """
    problem = random_problem(n, seed, free_share=0.0)
    fast = RoundSolver(problem).solve()
    cvx = RoundSolver(problem, "cvxpy").solve()
    assert abs(fast.objective - cvx.objective) <= 1e-6 * _scale(problem, fast)
    for k in ("q", "d"):
        np.testing.assert_allclose(cvx.decisions[k], fast.decisions[k], atol=1e-3)
    np.testing.assert_allclose(cvx.decisions["mu"], fast.decisions["mu"], rtol=1e-3, atol=1e-3)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 40), seed=seeds, deadlines=st.booleans(), caps=st.booleans(),
       warm=st.booleans())
def test_compiled_sweep_follows_the_numpy_driver(n, seed, deadlines, caps, warm):
    """The fast path's compiled passes (``fused``) and the numpy driver with the same
    closed-form blocks take the same path: same objective, same decisions, ties included
    (they differ only in the order floating-point sums are added)."""
    problem = random_problem(n, seed, deadlines=deadlines, caps=caps)
    fused, ref = RoundSolver(problem, "fast"), RoundSolver(problem, "numpy")
    a, b = fused.solve(), ref.solve()
    if warm:  # a second round, warm-started, on the same solvers
        rng = np.random.default_rng(seed)
        state = RoundState(problem.K * 0.8, np.full(n, problem.K), rng.uniform(0, 2, n))
        a = fused.solve(state, Allocation(*(a.decisions[k] for k in ("q", "d", "mu"))))
        b = ref.solve(state, Allocation(*(b.decisions[k] for k in ("q", "d", "mu"))))
    assert (a.solver, b.solver) == ("bca-fast", "bca-numpy")
    assert abs(a.objective - b.objective) <= 1e-9 * _scale(problem, b)
    for k in ("q", "d", "mu"):
        np.testing.assert_allclose(a.decisions[k], b.decisions[k], rtol=1e-6, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), seed=seeds, deadlines=st.booleans(), caps=st.booleans())
@pytest.mark.parametrize("refresh", ["download", "download_or_train"])
def test_compiled_diagnostics_follow_the_numpy_ones(refresh, n, seed, deadlines, caps):
    """The fast path's diagnostics passes (on-time fractions, errors, use, binding caps and
    their multipliers) give what the numpy methods give at the same allocation."""
    problem = random_problem(n, seed, deadlines=deadlines, caps=caps, refresh=refresh)
    res = RoundSolver(problem, "fast").solve()
    x = Allocation(*(res.decisions[k] for k in ("q", "d", "mu")))
    ref = RoundSolver(problem, "numpy")
    state = RoundState.initial(problem)
    np.testing.assert_array_equal(res.diagnostics["cap_binding"], ref._binding(x))
    np.testing.assert_allclose(res.diagnostics["cap_multiplier"],
                               ref.cap_multipliers(state, x), rtol=1e-12, atol=1e-12)
    expected = ref._result(state, x, [res.objective], res.status, 0.0, 0).diagnostics
    for key in ("on_time_fraction", "expected_error_next", "resource_use", "K_next",
                "timely_accuracy"):
        np.testing.assert_allclose(res.diagnostics[key], expected[key], rtol=1e-12, atol=0)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), seed=seeds, caps=st.booleans())
def test_compiled_starts_follow_the_numpy_ones(n, seed, caps):
    problem = random_problem(n, seed, caps=caps)
    for a, b in zip(RoundSolver(problem, "fast").starts(), RoundSolver(problem, "numpy").starts(),
                    strict=True):
        for k in ("q", "d", "mu"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 60), seed=seeds, threads=st.integers(2, 3), warm=st.booleans())
def test_threaded_passes_give_the_serial_answer(n, seed, threads, warm):
    """Client ranges run in threads (forced on small instances) and added up in a fixed
    order: the serial answer up to the order of floating-point sums."""
    from jointopt.solvers.jti import fused

    problem = random_problem(n, seed)
    par = RoundSolver(problem, threads=threads)
    par._split = fused.Split(n, threads, min_chunk=1)
    ser = RoundSolver(problem, threads=1)
    assert len(par._split.bounds) > 1 and par._split.threads == threads
    assert len(ser._split.bounds) == 1
    a, b = par.solve(), ser.solve()
    if warm:
        state = RoundState(problem.K * 0.9, problem.ebar, problem.Z * 0.5)
        a = par.solve(state, Allocation(*(a.decisions[k] for k in ("q", "d", "mu"))))
        b = ser.solve(state, Allocation(*(b.decisions[k] for k in ("q", "d", "mu"))))
    assert abs(a.objective - b.objective) <= 1e-12 * _scale(problem, b)
    for k in ("q", "d", "mu"):
        np.testing.assert_allclose(a.decisions[k], b.decisions[k], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.diagnostics["cap_multiplier"], b.diagnostics["cap_multiplier"],
                               rtol=1e-9, atol=1e-12)


def test_threaded_passes_work_in_a_forked_process():
    """A process forked after the parent used the pool gets a pool of its own (the
    parent's threads do not exist there): the forked solve finishes."""
    import multiprocessing

    from jointopt.solvers.jti import fused

    problem = random_problem(30, 1)
    solver = RoundSolver(problem, threads=2)
    solver._split = fused.Split(30, 2, min_chunk=1)
    expected = solver.solve().objective  # the parent's pool now has threads
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(_threaded_objective, (problem,)).get(timeout=60)
    assert abs(got - expected) <= 1e-12 * _scale(problem, solver.solve())


def _threaded_objective(problem) -> float:
    from jointopt.solvers.jti import fused

    solver = RoundSolver(problem, threads=2)
    solver._split = fused.Split(problem.n, 2, min_chunk=1)
    return solver.solve().objective


def test_threads_are_checked(monkeypatch):
    from jointopt.solvers.jti import fused

    problem = random_problem(3, 0)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            RoundSolver(problem, threads=bad)
    monkeypatch.setenv("JOINTOPT_THREADS", "two")
    with pytest.raises(ValueError, match="JOINTOPT_THREADS"):
        fused.available_threads()
    monkeypatch.setenv("JOINTOPT_THREADS", "3")
    assert fused.available_threads() == 3


def test_pilot_size_and_its_validation():
    c = random_problem(3, 0).controller
    assert c.pilot == "auto" and c.pilot_size(99_999) is None and c.pilot_size(100_000) == 10_000
    c = random_problem(3, 0, pilot=0).controller
    assert c.pilot_size(10**7) is None
    c = random_problem(3, 0, pilot=50).controller
    assert c.pilot_size(50) is None and c.pilot_size(51) == 50
    with pytest.raises(ValidationError, match="controller.pilot"):
        random_problem(3, 0, pilot=-1)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 15), copies=st.integers(2, 5), seed=seeds)
def test_a_subset_is_a_miniature_of_the_population(m, copies, seed):
    """``_Data.subset`` scales ``b`` by N / len(idx): on a population made of ``copies``
    identical copies of ``m`` clients, one copy solves to the population's answer."""
    base = random_problem(m, seed, free_share=0.0).to_dict()
    tiled = {k: (np.tile(v, copies).tolist() if isinstance(v, list) else v)
             for k, v in base["clients"].items()}
    state = {k: (np.tile(v, copies).tolist() if isinstance(v, list) else v)
             for k, v in base["state"].items()}
    full = JointTrainingInferenceProblem.from_dict(
        {**base, "clients": {**tiled, "count": m * copies}, "state": state})
    solver = RoundSolver(full)
    a = solver.solve()
    idx = np.arange(m)
    st_full = RoundState.initial(full)
    b = solver._miniature(idx).solve(RoundState(st_full.K, st_full.ebar[idx], st_full.Z[idx]))
    assert abs(a.objective - copies * b.objective) <= 1e-9 * _scale(full, a)
    for k in ("q", "d", "mu"):
        np.testing.assert_allclose(a.decisions[k], np.tile(b.decisions[k], copies),
                                   rtol=1e-6, atol=1e-6)


def test_the_pilot_picks_a_start_only_where_the_starts_tie():
    """Cold solves with a pilot report it, and ascend one start only where the pilot's
    starts tie (else both, as without a pilot); a warm solve and ``pilot = 0`` run none."""
    for seed in range(6):
        problem = random_problem(300, seed, pilot=100, horizon=0.0 if seed % 2 else "auto")
        res = RoundSolver(problem).solve()
        pilot = res.diagnostics["pilot"]
        assert pilot["clients"] == 100 and len(pilot["objectives"]) == 2
        assert (pilot["start"] is None) == (pilot["spread"] > RoundSolver.PILOT_TIE)
        both = RoundSolver(problem.replace(
            controller={**problem.to_dict()["controller"], "pilot": 0})).solve()
        assert both.diagnostics["pilot"] is None
        if pilot["start"] is None:
            assert res.objective == both.objective
        x = Allocation(*(res.decisions[k] for k in ("q", "d", "mu")))
        assert RoundSolver(problem).solve(warm=x).diagnostics["pilot"] is None


@pytest.mark.parametrize("horizon", [0.0, "auto"])
def test_the_default_pilot_loses_nothing_measurable(horizon):
    """At the default (10,000 of 100,000 clients) the pilot's answer is within 1e-6 of
    ascending both starts (measured worst 2.9e-8 on 30 instances, ``RoundSolver._pilot``)."""
    problem = random_problem(100_000, 3, horizon=horizon)
    res = RoundSolver(problem).solve()
    assert res.diagnostics["pilot"]["clients"] == 10_000
    both = RoundSolver(problem.replace(
        controller={**problem.to_dict()["controller"], "pilot": 0})).solve()
    assert res.objective >= both.objective - 1e-6 * _scale(problem, both)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(12, 40), seed=seeds)
def test_the_pilot_takes_the_same_path_on_every_method(n, seed):
    """Same pilot, same pick (up to exact ties, which rounding may break either way),
    same answer."""
    problem = random_problem(n, seed, pilot=10)
    a, b = RoundSolver(problem, "fast").solve(), RoundSolver(problem, "numpy").solve()
    pa, pb = a.diagnostics["pilot"], b.diagnostics["pilot"]
    np.testing.assert_allclose(pa["objectives"], pb["objectives"], rtol=1e-9, atol=1e-9)
    if pa["start"] != pb["start"]:
        assert max(pa["spread"], pb["spread"]) <= 1e-9
        return
    assert abs(a.objective - b.objective) <= 1e-9 * _scale(problem, b)


def test_cvxpy_path_resolves_without_recompiling():
    problem = random_problem(20, 3)
    solver = RoundSolver(problem, "cvxpy")
    first = solver.solve()
    compiled = solver.blocks.mu_prob._cache.param_prog
    state = RoundState(1.5, problem.ebar * 1.1, problem.Z + 0.3)
    again = solver.solve(state, warm=Allocation(*(first.decisions[k] for k in ("q", "d", "mu"))))
    assert solver.blocks.mu_prob._cache.param_prog is compiled
    fast = RoundSolver(problem).solve(state)
    assert abs(again.objective - fast.objective) <= 1e-6 * _scale(problem, fast)


# -- oracle 7: limiting cases -------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 25), seed=seeds)
def test_zero_prices_and_no_cap(n, seed):
    base = random_problem(n, seed, caps=False)
    problem = base.replace(state={**base.to_dict()["state"], "Z": 0.0})
    res = RoundSolver(problem).solve()
    c = problem.clients
    np.testing.assert_allclose(res.decisions["q"], 1.0)
    np.testing.assert_allclose(res.decisions["mu"], c.mu_max)
    worse = problem.ebar > res.diagnostics["K_next"]
    wants = worse & (c.arrival_rate > 0)
    np.testing.assert_array_equal(res.decisions["d"], np.where(wants, 1.0, 0.0))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 25), seed=seeds, zero_z=st.booleans())
def test_idle_clients_never_download(n, seed, zero_z):
    base = random_problem(n, seed).to_dict()
    lam = np.array(base["clients"]["arrival_rate"])
    lam[::2] = 0.0
    base["clients"]["arrival_rate"] = lam.tolist()
    if zero_z:
        base["state"]["Z"] = 0.0
    problem = type(random_problem(1, 0)).from_dict(base)
    res = RoundSolver(problem).solve()
    assert np.all(res.decisions["d"][lam == 0] == 0)


def test_warm_start_is_used_and_infeasible_warm_start_is_ignored():
    problem = random_problem(10, 9)
    solver = RoundSolver(problem)
    cold = solver.solve()
    x = Allocation(*(cold.decisions[k] for k in ("q", "d", "mu")))
    warm = solver.solve(warm=x)
    assert warm.iterations <= 2 and warm.objective >= cold.objective - 1e-9
    bad = Allocation(np.full(10, 2.0), x.d, x.mu)  # q > 1: not feasible
    again = solver.solve(warm=bad)
    assert again.objective == pytest.approx(cold.objective, rel=1e-12)


def test_same_problem_same_answer():
    a = RoundSolver(random_problem(50, 4)).solve()
    b = RoundSolver(random_problem(50, 4)).solve()
    for k in ("q", "d", "mu"):
        np.testing.assert_array_equal(a.decisions[k], b.decisions[k])


def test_cvxpy_path_warns_past_its_useful_size():
    problem = random_problem(2001, 0)
    with pytest.warns(UserWarning, match="reference formulation"):
        RoundSolver(problem, "cvxpy")


def _noisy(beta):
    from jointopt.scenarios import load

    return with_aggregation_noise(load("default"), beta)


def test_linearising_the_deficit_prices_participation_and_survives_a_retune():
    """RoundSolver.linearise_deficit: nothing without aggregation noise; with it, the
    deficit's tangent at the decision's spread, on the copies' share of the training value,
    joins ``b_rel``, participation rises, and a closed loop's retune keeps it."""
    import dataclasses

    from jointopt.models.accuracy import deficit_slope
    from jointopt.models.convergence import participation_variance

    plain = RoundSolver(_noisy(0.0))
    res = plain.solve()
    x = Allocation(*(res.decisions[k] for k in ("q", "d", "mu")))
    assert plain.linearise_deficit(x) == 0.0
    assert np.array_equal(plain.solve().decisions["q"], res.decisions["q"])

    problem = _noisy(0.3)
    solver = RoundSolver(problem)
    before = solver.solve()
    x = Allocation(*(before.decisions[k] for k in ("q", "d", "mu")))
    slope = solver.linearise_deficit(x)
    c, H = problem.clients, problem.horizon
    copies = np.sum(c.arrival_rate * (on_time_fraction(c.arrival_rate, x.mu, c.deadline) + H)
                    * x.d)
    share = copies / (copies + H * c.arrival_rate.sum())
    assert 0 < share < 1
    assert slope == pytest.approx(deficit_slope(0.3, participation_variance(x.q, c.p)) * share)
    base = problem.convergence_model
    assert solver.data.model_conv.b_rel == pytest.approx(base.b_rel + slope)
    after = solver.solve()
    assert after.decisions["q"].mean() > before.decisions["q"].mean() + 1e-3
    other = dataclasses.replace(base, a=0.7)
    solver.retune(other)
    assert solver.data.model_conv.a == 0.7
    assert solver.data.model_conv.b_rel == pytest.approx(other.b_rel + slope)
