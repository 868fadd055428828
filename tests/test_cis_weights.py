"""CIS exit-weight rules and the convex weight program: oracles O3, O4, O5, O12, O13."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jointopt.models.cis import DEVICE_SHARES
from jointopt.solvers.cis import (
    ConvexWeightProgram,
    CooperativeInferenceProblem,
    balanced_weights,
    bound,
    convex_weights,
    equal_weights,
    flops_weights,
    inverse_variance_weights,
    serving_rate_weights,
    solve_slsqp,
)

from jointopt.errors import ValidationError

METHODS = CooperativeInferenceProblem.methods
simplex_vectors = st.lists(st.floats(0.01, 1.0), min_size=3, max_size=3).map(
    lambda v: np.asarray(v) / np.sum(v))
variances = st.lists(st.floats(0.01, 100.0), min_size=3, max_size=3).map(np.asarray)


def problem(share="0.45", split="2x", pi="p0", **kw):
    return CooperativeInferenceProblem.three_tier(7, share, split, pi=pi, **kw)


# -- O4 simplex, O3 rescaling ------------------------------------------------------------------
@pytest.mark.parametrize("share", [*DEVICE_SHARES, "0.80*"])
@pytest.mark.parametrize("split, pi", [("eq", "p0"), ("tiny", "p40")])
def test_every_rule_lies_on_the_simplex(share, split, pi):
    p = problem(share, split, pi)
    for method in METHODS:
        w = p.exit_weights(method)
        assert w.shape == (3,) and np.all(w >= 0), method
        assert w.sum() == pytest.approx(1.0, abs=1e-12), method
        if method == "convex":
            assert np.all(w >= p.convex.eps - 1e-15)
    for t in range(p.training.rounds):
        w = p.exit_weights("flops", t=t)
        assert np.all(w >= 0) and w.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("c", [0.1, 7.3])
@pytest.mark.parametrize("share", ["0.05", "0.33", "0.80"])
def test_rules_are_invariant_to_rescaling_every_rate(c, share):
    base = problem(share)
    scaled = problem(share, tree={"nodes": 7, "device_share": share, "total_arrival": 10 * c})
    assert scaled.serving_tree.arrival.sum() == pytest.approx(100 * c / 10)
    for method in METHODS:
        tol = 1e-7 if method == "convex" else 1e-12  # solver tolerance on the convex rule
        np.testing.assert_allclose(scaled.exit_weights(method), base.exit_weights(method),
                                   atol=tol, err_msg=method)


def test_uniform_serving_makes_serving_rate_equal_weighting():
    p = problem("0.33")
    np.testing.assert_allclose(p.exit_weights("serving_rate"), p.exit_weights("equal"),
                               atol=1e-15)
    # balanced then halves the gap between equal and inverse variance
    np.testing.assert_allclose(p.exit_weights("balanced"),
                               0.5 * (equal_weights(3) + p.exit_weights("inverse_variance")))


# -- closed forms -------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(lam=simplex_vectors, v=variances, scale=st.floats(1e-3, 1e3))
def test_closed_forms_are_scale_free_and_inverse_variance_is_least_variance(lam, v, scale):
    np.testing.assert_allclose(serving_rate_weights(lam * scale), lam, atol=1e-12)
    iv = inverse_variance_weights(v)
    np.testing.assert_allclose(inverse_variance_weights(v * scale), iv, atol=1e-12)
    np.testing.assert_allclose(balanced_weights(lam, v), (lam + iv) / 2, atol=1e-12)
    # iv minimises sum w^2 V on the simplex: no random simplex point does better
    rng = np.random.default_rng(0)
    others = rng.dirichlet(np.ones(3), 200)
    assert np.all((others**2 * v).sum(axis=1) >= (iv**2 * v).sum() - 1e-12)


def test_inverse_variance_gives_zero_to_an_exit_nobody_trains():
    w = inverse_variance_weights([1.0, np.inf, 2.0])
    np.testing.assert_allclose(w, [2 / 3, 0, 1 / 3])
    with pytest.raises(ValidationError) as exc:
        inverse_variance_weights([1.0, 0.0, 2.0])
    assert exc.value.field == "variance[1]"


@pytest.mark.parametrize("rounds", [10, 40, 100])
def test_flops_schedule(rounds):
    costs = np.array([1.0, 30.0, 60.0])
    gamma = costs / costs[-1]
    ws = np.array([flops_weights(costs, t, rounds) for t in range(rounds)])
    taus = np.minimum(1.0, (np.arange(rounds) + 1) / rounds)
    early = taus <= gamma.min()
    np.testing.assert_allclose(ws[early], 1 / 3, atol=1e-15)
    np.testing.assert_allclose(ws[-1], gamma / gamma.sum(), atol=1e-15)
    assert np.all(np.diff(ws[:, -1]) >= -1e-15)  # deepest exit's weight never decreases
    # the authors' fixed step 0.01 is T = 100
    np.testing.assert_array_equal(flops_weights(costs, 57, step=0.01),
                                  flops_weights(costs, 57, 100))


# -- O13: the convex program --------------------------------------------------------------------
def test_the_program_is_dcp_and_dpp_for_every_bias():
    for bias in ("chi2", "kl", "none"):
        prog = ConvexWeightProgram(3, bias=bias)
        assert prog.problem.is_dcp() and prog.problem.is_dpp()
    with pytest.raises(ValidationError, match="convex.eps"):
        ConvexWeightProgram(3, eps=0.4)


@settings(max_examples=15, deadline=None)
@given(lam=simplex_vectors, v=variances)
def test_convex_limits(lam, v):
    # rho = kappa = 0: the serving-rate target
    np.testing.assert_allclose(convex_weights(lam, v, 0.0, 0.0).weights, lam, atol=1e-4)
    none = ConvexWeightProgram(3, eps=1e-6, bias="none")
    # variance only: inverse variance (when the floor is not active)
    iv = (1 / v) / (1 / v).sum()
    if iv.min() > 1e-3:
        np.testing.assert_allclose(none.solve(lam, v, 1.0, 0.0).weights, iv, atol=1e-4)
    # progress only: sqrt(lambda)
    sq = np.sqrt(lam) / np.sqrt(lam).sum()
    np.testing.assert_allclose(none.solve(lam, v, 0.0, 1.0).weights, sq, atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(lam=simplex_vectors, v=variances, rho=st.sampled_from([0.1, 0.3, 1.0, 3.0, 10.0]),
       kappa=st.sampled_from([0.0, 0.1]), bias=st.sampled_from(["chi2", "kl"]))
def test_cvxpy_and_slsqp_agree(lam, v, rho, kappa, bias):
    a = convex_weights(lam, v, rho, kappa, bias=bias)
    b = solve_slsqp(lam, v, rho, kappa, bias=bias)
    np.testing.assert_allclose(a.weights, b.weights, atol=1e-4)
    assert a.objective == pytest.approx(b.objective, abs=1e-6)
    assert a.solver == "CLARABEL" and a.status == "optimal"


def test_scs_fallback_path_solves_too():
    lam, v = np.array([0.6, 0.3, 0.1]), np.array([1.0, 2.0, 5.0])
    a = convex_weights(lam, v, 1.0, 0.1, solver="SCS")
    b = convex_weights(lam, v, 1.0, 0.1)
    assert a.solver == "SCS"
    np.testing.assert_allclose(a.weights, b.weights, atol=1e-3)


@pytest.mark.parametrize("split, pi", [("eq", "p0"), ("2x", "p0"), ("tiny", "p40")])
@pytest.mark.parametrize("rho, kappa", [(0.1, 0.0), (1.0, 0.0), (10.0, 0.1)])
def test_convex_rule_has_the_least_bound_among_the_rules(split, pi, rho, kappa):
    for share in ("0.05", "0.45", "0.80"):
        p = problem(share, split, pi, convex={"rho": rho, "kappa": kappa})
        best = p.bound(p.exit_weights("convex"))
        for method in METHODS:
            w = p.exit_weights(method)
            if w.min() >= p.convex.eps:
                assert best <= p.bound(w) + 1e-6, (share, method)


def test_resolving_reuses_the_compiled_program():
    prog = ConvexWeightProgram(3)
    first = prog.solve([0.8, 0.15, 0.05], [1.0, 2.0, 3.0], 1.0, 0.0)
    compiled = prog.problem._cache.param_prog
    second = prog.solve([0.2, 0.3, 0.5], [1.0, 2.0, 3.0], 3.0, 0.1)
    assert prog.problem._cache.param_prog is compiled
    assert not np.allclose(first.weights, second.weights)


def test_bound_at_the_target_is_variance_only():
    lam, v = np.array([0.5, 0.3, 0.2]), np.array([1.0, 1.0, 2.0])
    vhat = v / v.sum()
    assert bound(lam, lam, v, 2.0, 0.0) == pytest.approx(2.0 * np.sum(vhat * lam**2))
    # a zero weight where the target is positive is infinitely biased
    assert bound([0.5, 0.5, 0.0], lam, v) == np.inf


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 15),
       pi=st.sampled_from(["p0", "p40", [0.0, 0.1, 0.9]]))
def test_rules_stay_on_the_simplex_on_random_trees(seed, n, pi):
    """Also when a tier is empty: an exit nobody can train gets weight 0 from the variance
    and data rules, and the floor eps from the convex rule."""
    rng = np.random.default_rng(seed)
    parent = [-1] + [int(rng.integers(0, i)) for i in range(1, n)]
    exits = [3]
    for i in range(1, n):
        exits.append(int(rng.integers(1, exits[parent[i]] + 1)))
    p = CooperativeInferenceProblem.from_dict({
        "nodes": {"parent": parent, "exit": exits, "arrival": rng.exponential(size=n).tolist(),
                  "forward": 0.0, "data_size": rng.integers(1, 100, n).tolist()},
        "training": {"pi": pi}})
    for method in METHODS:
        w = p.exit_weights(method)
        assert np.all(w >= 0) and w.sum() == pytest.approx(1.0, abs=1e-12), method
