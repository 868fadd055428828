"""Closed-loop calibration: recursive least squares with forgetting, and the online policy
that plans with its estimates."""

from __future__ import annotations

import numpy as np
import pytest
from jointopt.models.accuracy import AffineAccuracy, ExponentialAccuracy
from jointopt.models.convergence import ConvergenceModel

import jointopt
from jointopt.closed_loop import ClosedLoop, Feedback, RecursiveLeastSquares, ScaledAccuracy
from jointopt.policies import Online
from jointopt.surrogate import simulate


def test_rls_matches_batch_least_squares_without_forgetting():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + rng.normal(0, 0.1, 60)
    rls = RecursiveLeastSquares(np.zeros(3), 1e-9, forgetting=1.0)
    for k in range(0, 60, 4):
        rls.update(X[k:k + 4], y[k:k + 4])
    np.testing.assert_allclose(rls.theta, np.linalg.lstsq(X, y, rcond=None)[0], atol=1e-6)


def test_rls_forgets_a_changed_system():
    rng = np.random.default_rng(1)
    rls = RecursiveLeastSquares([0.0], 1e-6, forgetting=0.9)
    for slope in (1.0, 3.0):
        for _ in range(80):
            x = rng.normal(size=(1, 1))
            rls.update(x, x[:, 0] * slope)
        assert rls.theta[0] == pytest.approx(slope, abs=1e-3)
    with pytest.raises(ValueError, match="forgetting"):
        RecursiveLeastSquares([0.0], 1.0, forgetting=1.5)


@pytest.mark.parametrize("base", [AffineAccuracy(0.95, 0.3, 0.05),
                                  ExponentialAccuracy(0.97, 1.5, 0.1)])
def test_scaled_accuracy_is_consistent(base):
    acc = ScaledAccuracy(base, 0.05, 0.9)
    e = np.linspace(0.1, 2.0, 7)
    np.testing.assert_allclose(acc(e), 0.05 + 0.9 * base(e))
    np.testing.assert_allclose(acc.error_of(acc(e)), e, atol=1e-9)
    intercept, slope = acc.linearize(1.0)
    h = 1e-6
    assert slope == pytest.approx(-(acc(1.0 + h) - acc(1.0 - h)) / (2 * h), rel=1e-5)
    assert float(acc(1.0)) == pytest.approx(intercept - slope * 1.0)


def test_closed_loop_learns_a_model_the_controller_got_wrong():
    """The controller believes the default scenario's model; the system follows another
    recursion and a lower accuracy map. Fed what the system reports, the estimates move to
    the truth."""
    problem = jointopt.load_scenario("default")
    truth = ConvergenceModel(0.88, 0.1, 0.05, b_rel=0.2)
    acc0 = problem.accuracy_map
    loop = ClosedLoop(problem, forgetting=0.99, prior_rounds=1e-3)  # a faint prior
    rng = np.random.default_rng(3)
    K, n = 2.0, problem.n
    loop.observe(0, K, None)
    for t in range(1, 300):
        spread = float(rng.uniform(0.0, 0.6))
        served = rng.uniform(0.1, 2.0, n)
        on_time = rng.poisson(40, n)
        correct = rng.binomial(on_time, np.clip(0.1 + 0.8 * acc0(served), 0, 1))
        if t % 60:
            K = truth.next(K, spread)
            loop.observe(t, K, Feedback(spread, served, on_time, correct))
        else:  # a restart keeps K informative; a round without feedback teaches nothing
            K = 2.0
            loop.observe(t, K, None)
    est = loop.convergence
    assert (est.a, est.b, est.c, est.b_rel) == pytest.approx((0.88, 0.1, 0.05, 0.2), abs=0.02)
    acc = loop.accuracy
    assert (acc.s0, acc.s1) == pytest.approx((0.1, 0.8), abs=0.03)
    assert len(loop.history) == 300 and set(loop.estimates) >= {"est_a", "est_acc_s1"}


def test_closed_loop_policy_reports_its_estimates_and_stays_near_a_true_model():
    """In the surrogate the scenario's model is the truth: the estimates stay near it, and
    the result's table carries them round by round."""
    problem = jointopt.load_scenario("default")
    res = simulate(problem, Online(closed_loop=True), rounds=40, seed=2)
    est = res.table[["est_a", "est_b", "est_c", "est_acc_s0", "est_acc_s1"]]
    assert len(est) == 40 and est.notna().all().all()
    assert est["est_a"].iloc[-1] == pytest.approx(problem.convergence.a, abs=1e-6)
    assert est["est_acc_s1"].iloc[-1] == pytest.approx(1.0, abs=0.1)
    assert "est_a" not in simulate(problem, Online(), rounds=5, seed=2).table
    # the scenario flag switches it on for the online policy only
    flagged = problem.replace(controller={**problem.to_dict()["controller"],
                                          "closed_loop": True})
    assert "est_a" in simulate(flagged, "online", rounds=5, seed=2).table
    assert "est_a" not in simulate(flagged, "aom_unaware", rounds=5, seed=2).table
