"""Convergence-error recursion: fixed point and monotonicity in q.

    K_{t+1} = a K_t + b * sum_n p_n^2 (1 - q_n) / q_n + c,      0 < a < 1

Expectations below are derived from this formula in the test itself, never copied from a
run of the code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jointopt.models import ConvergenceModel, JointoptError, ValidationError
from jointopt.models.convergence import participation_variance

SETTINGS = settings(max_examples=80, deadline=None)

unit_a = st.floats(min_value=0.01, max_value=0.99)
nonneg = st.floats(min_value=0.0, max_value=10.0)
positive = st.floats(min_value=0.01, max_value=10.0)
q_value = st.floats(min_value=0.05, max_value=1.0)


@st.composite
def weights_and_q(draw, min_n: int = 1, max_n: int = 8):
    """Data weights ``p`` (positive, summing to 1) and participation ``q`` of equal length."""
    n = draw(st.integers(min_value=min_n, max_value=max_n))
    raw = np.array(draw(st.lists(st.floats(min_value=0.1, max_value=1.0),
                                 min_size=n, max_size=n)))
    q = np.array(draw(st.lists(q_value, min_size=n, max_size=n)))
    return raw / raw.sum(), q


def reference_variance(q, p) -> float:
    """``sum_n p_n^2 (1 - q_n) / q_n`` written out with a Python loop."""
    return math.fsum(pn * pn * (1.0 - qn) / qn for pn, qn in zip(p, q, strict=True))


def reference_fixed_point(a, b, c, q, p) -> float:
    """Solve ``K = a K + b V + c`` for K."""
    return (b * reference_variance(q, p) + c) / (1.0 - a)


# --------------------------------------------------------------------------- variance term


@SETTINGS
@given(weights_and_q())
def test_participation_variance_matches_formula(pq):
    p, q = pq
    assert participation_variance(q, p) == pytest.approx(reference_variance(q, p),
                                                         rel=1e-12, abs=1e-15)
    assert participation_variance(q, p) >= 0.0


@SETTINGS
@given(weights_and_q())
def test_participation_variance_zero_at_full_participation(pq):
    p, _ = pq
    assert participation_variance(np.ones_like(p), p) == 0.0


# --------------------------------------------------------------------------- step / fixed point


@SETTINGS
@given(unit_a, nonneg, nonneg, weights_and_q(), st.floats(min_value=0.0, max_value=100.0))
def test_step_is_the_recursion(a, b, c, pq, K):
    p, q = pq
    model = ConvergenceModel(a, b, c)
    expected = a * K + b * reference_variance(q, p) + c
    assert model.step(K, q, p) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@SETTINGS
@given(unit_a, nonneg, nonneg, weights_and_q())
def test_fixed_point_formula_and_invariance(a, b, c, pq):
    p, q = pq
    model = ConvergenceModel(a, b, c)
    fp = model.fixed_point(q, p)
    assert fp == pytest.approx(reference_fixed_point(a, b, c, q, p), rel=1e-12, abs=1e-12)
    # A fixed point of the map: one step from it stays there.
    assert model.step(fp, q, p) == pytest.approx(fp, rel=1e-12, abs=1e-12)


@SETTINGS
@given(unit_a, nonneg, nonneg, weights_and_q(), st.floats(min_value=0.0, max_value=100.0),
       st.integers(min_value=0, max_value=60))
def test_trajectory_agrees_with_iterated_step(a, b, c, pq, K0, rounds):
    p, q = pq
    model = ConvergenceModel(a, b, c)
    traj = model.trajectory(K0, q, p, rounds)
    assert traj.shape == (rounds + 1,)
    assert traj[0] == pytest.approx(K0, rel=1e-12, abs=1e-12)
    K = K0
    scale = max(abs(K0), reference_fixed_point(a, b, c, q, p), 1.0)
    for t in range(1, rounds + 1):
        K = model.step(K, q, p)
        assert traj[t] == pytest.approx(K, rel=1e-9, abs=1e-12 * scale), t


@SETTINGS
@given(unit_a, nonneg, nonneg, weights_and_q(), st.floats(min_value=0.0, max_value=100.0),
       st.integers(min_value=1, max_value=40))
def test_iterated_step_contracts_geometrically_to_fixed_point(a, b, c, pq, K0, rounds):
    """Distance to the fixed point shrinks by exactly ``a`` per round, hence K_t -> fixed point."""
    p, q = pq
    model = ConvergenceModel(a, b, c)
    fp = reference_fixed_point(a, b, c, q, p)
    K = K0
    for _ in range(rounds):
        K = model.step(K, q, p)
    scale = max(abs(K0), fp, 1.0)
    assert abs(K - fp) == pytest.approx(a ** rounds * abs(K0 - fp), rel=1e-7, abs=1e-12 * scale)
    # And the side of the fixed point is preserved (monotone approach).
    if K0 > fp:
        assert K >= fp - 1e-12 * scale
    elif K0 < fp:
        assert K <= fp + 1e-12 * scale


@pytest.mark.parametrize("a", [0.3, 0.9, 0.99])
@pytest.mark.parametrize("K0", [0.0, 50.0])
def test_long_run_converges_to_fixed_point(a, K0):
    p = np.array([0.5, 0.3, 0.2])
    q = np.array([0.2, 0.6, 1.0])
    b, c = 0.4, 0.05
    model = ConvergenceModel(a, b, c)
    fp = reference_fixed_point(a, b, c, q, p)
    rounds = int(math.ceil(math.log(1e-15) / math.log(a))) + 10  # a^rounds < 1e-15
    K = K0
    for _ in range(rounds):
        K = model.step(K, q, p)
    assert K == pytest.approx(fp, rel=1e-10)
    traj = model.trajectory(K0, q, p, rounds)
    assert traj[-1] == pytest.approx(fp, rel=1e-10)
    assert model.fixed_point(q, p) == pytest.approx(fp, rel=1e-12)
    # Monotone approach from either side.
    diffs = np.diff(traj)
    if K0 > fp:
        assert np.all(diffs <= 1e-15)
    else:
        assert np.all(diffs >= -1e-15)


@SETTINGS
@given(unit_a, nonneg, weights_and_q())
def test_full_participation_fixed_point_is_c_over_one_minus_a(a, c, pq):
    p, _ = pq
    for b in (0.0, 1.0, 7.5):  # b must not matter at q = 1
        model = ConvergenceModel(a, b, c)
        assert model.fixed_point(np.ones_like(p), p) == pytest.approx(c / (1.0 - a), rel=1e-12,
                                                                      abs=1e-15)


# --------------------------------------------------------------------------- monotonicity in q


@SETTINGS
@given(unit_a, st.floats(min_value=0.01, max_value=10.0), nonneg,
       weights_and_q(), st.floats(min_value=0.0, max_value=100.0), st.data())
def test_step_strictly_decreases_in_every_q(a, b, c, pq, K, data):
    p, q = pq
    model = ConvergenceModel(a, b, c)
    base = model.step(K, q, p)
    base_fp = model.fixed_point(q, p)
    for m in range(p.size):
        if q[m] > 0.99:
            continue
        new_qm = data.draw(st.floats(min_value=q[m] + 0.01, max_value=1.0), label=f"q[{m}]")
        raised = q.copy()
        raised[m] = new_qm
        # Predicted decrease: b p_m^2 (1/q - 1/q') > 0.
        drop = b * p[m] ** 2 * (1.0 / q[m] - 1.0 / new_qm)
        assert drop > 0
        after = model.step(K, raised, p)
        assert after < base, m
        assert base - after == pytest.approx(drop, rel=1e-6, abs=1e-12 * max(K, 1.0))
        assert model.fixed_point(raised, p) < base_fp


@SETTINGS
@given(unit_a, st.floats(min_value=0.01, max_value=10.0), nonneg, weights_and_q(min_n=2),
       st.floats(min_value=0.0, max_value=100.0))
def test_step_gradient_in_q_is_negative(a, b, c, pq, K):
    """Central finite difference of step() in each q_m matches -b p_m^2 / q_m^2 < 0."""
    p, q = pq
    q = np.clip(q, 0.1, 0.9)
    model = ConvergenceModel(a, b, c)
    h = 1e-6
    for m in range(p.size):
        up, down = q.copy(), q.copy()
        up[m] += h
        down[m] -= h
        fd = (model.step(K, up, p) - model.step(K, down, p)) / (2 * h)
        exact = -b * p[m] ** 2 / q[m] ** 2
        assert fd < 0
        assert fd == pytest.approx(exact, rel=1e-3, abs=1e-6 * max(K, 1.0))


# --------------------------------------------------------------------------- constructors


@st.composite
def smoothness_params(draw):
    L = draw(st.floats(min_value=0.1, max_value=50.0))
    rho = draw(st.floats(min_value=0.01, max_value=1.0)) * L
    I = draw(st.integers(min_value=1, max_value=20))
    # lr strictly inside (0, 1/(rho I))
    lr = draw(st.floats(min_value=0.01, max_value=0.99)) / (rho * I)
    G2 = draw(st.floats(min_value=0.0, max_value=10.0))
    s2 = draw(st.floats(min_value=0.0, max_value=10.0))
    n = draw(st.integers(min_value=1, max_value=8))
    raw = np.array(draw(st.lists(st.floats(min_value=0.1, max_value=1.0),
                                 min_size=n, max_size=n)))
    return dict(lr=lr, smoothness=L, strong_convexity=rho, local_steps=I, grad_sq_bound=G2,
                noise_var=s2, p=raw / raw.sum())


@SETTINGS
@given(smoothness_params())
def test_from_smoothness_constants(kw):
    model = ConvergenceModel.from_smoothness(**kw)
    lr, L, rho, I = kw["lr"], kw["smoothness"], kw["strong_convexity"], kw["local_steps"]
    sum_p2 = math.fsum(x * x for x in kw["p"])
    assert model.a == pytest.approx(1.0 - lr * rho * I, rel=1e-12)
    assert 0.0 < model.a < 1.0
    assert model.b == pytest.approx(lr ** 2 * L * I * kw["grad_sq_bound"], rel=1e-12, abs=0)
    assert model.c == pytest.approx(lr ** 2 * L * I * kw["noise_var"] * sum_p2, rel=1e-12, abs=0)
    assert model.source == "analytic"


def _base_kw():
    return dict(lr=0.01, smoothness=2.0, strong_convexity=0.5, local_steps=5,
                grad_sq_bound=1.0, noise_var=0.5, p=np.array([0.5, 0.5]))


def test_from_smoothness_base_is_valid():
    model = ConvergenceModel.from_smoothness(**_base_kw())
    assert model.a == pytest.approx(1 - 0.01 * 0.5 * 5)


@pytest.mark.parametrize(
    ("lr", "rho", "I"),
    [(0.5, 1.0, 2),        # lr*rho*I == 1 exactly
     (1.0, 1.0, 3),        # > 1
     (0.25, 2.0, 10)],     # > 1
)
def test_from_smoothness_rejects_too_large_lr(lr, rho, I):
    kw = _base_kw() | dict(lr=lr, strong_convexity=rho, smoothness=max(rho, 2.0), local_steps=I)
    assert lr * rho * I >= 1.0
    with pytest.raises(ValidationError) as err:
        ConvergenceModel.from_smoothness(**kw)
    assert err.value.field == "convergence.lr"
    assert isinstance(err.value, JointoptError)


@SETTINGS
@given(st.floats(min_value=0.1, max_value=50.0), st.floats(min_value=1.0001, max_value=10.0))
def test_from_smoothness_rejects_rho_above_L(L, ratio):
    kw = _base_kw() | dict(smoothness=L, strong_convexity=L * ratio, lr=1e-6, local_steps=1)
    assume(kw["strong_convexity"] > L)
    with pytest.raises(ValidationError) as err:
        ConvergenceModel.from_smoothness(**kw)
    assert err.value.field == "convergence.strong_convexity"


@pytest.mark.parametrize(
    ("field", "value"),
    [("lr", 0.0), ("lr", -0.1), ("lr", float("nan")), ("smoothness", 0.0),
     ("strong_convexity", 0.0), ("strong_convexity", -1.0), ("local_steps", 0),
     ("grad_sq_bound", -1.0), ("noise_var", -0.5), ("noise_var", float("inf"))],
)
def test_from_smoothness_rejects_bad_scalars(field, value):
    kw = _base_kw() | {field: value}
    with pytest.raises(ValidationError) as err:
        ConvergenceModel.from_smoothness(**kw)
    assert err.value.field == f"convergence.{field}"


@pytest.mark.parametrize("a", [0.0, 1.0, -0.5, 1.5, float("nan"), float("inf")])
def test_a_outside_open_unit_interval_rejected(a):
    with pytest.raises(ValidationError) as err:
        ConvergenceModel(a, 0.1, 0.1)
    assert err.value.field == "convergence.a"
    with pytest.raises(ValidationError) as err:
        ConvergenceModel.from_fitted(a, 0.1, 0.1)
    assert err.value.field == "convergence.a"


@pytest.mark.parametrize(("field", "args"), [("convergence.b", (0.5, -1e-3, 0.1)),
                                             ("convergence.c", (0.5, 0.1, -2.0)),
                                             ("convergence.b", (0.5, float("inf"), 0.1))])
def test_negative_b_or_c_rejected(field, args):
    with pytest.raises(ValidationError) as err:
        ConvergenceModel(*args)
    assert err.value.field == field


def test_from_fitted_keeps_constants_and_source():
    model = ConvergenceModel.from_fitted(0.8, 0.25, 0.0)
    assert (model.a, model.b, model.c) == (0.8, 0.25, 0.0)
    assert model.source == "fitted"


# --------------------------------------------------------------------------- error objects
def test_validation_error_survives_pickle_roundtrip():
    """Errors raised in process or Dask workers must cross back intact."""
    import pickle

    with pytest.raises(ValidationError) as err:
        ConvergenceModel(0.5, -1.0, 0.0)
    back = pickle.loads(pickle.dumps(err.value))
    assert isinstance(back, ValidationError)
    assert back.field == "convergence.b"
    assert str(back) == str(err.value)


def test_infeasible_error_survives_pickle_roundtrip():
    import pickle

    from jointopt.models.errors import InfeasibleError

    err = InfeasibleError("hard cap", "too small", field="clients[2].cap", shortfall=0.5)
    back = pickle.loads(pickle.dumps(err))
    assert (back.constraint, back.field, back.shortfall, str(back)) == (
        "hard cap", "clients[2].cap", 0.5, "too small")


def test_validation_message_shows_plain_number():
    with pytest.raises(ValidationError) as err:
        ConvergenceModel(0.5, -1.0, 0.0)
    assert str(err.value).endswith("got -1.0")
