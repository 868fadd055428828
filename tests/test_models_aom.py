"""Age of model: stationary law, held error.

Each round a client's copy is refreshed with probability theta (age -> 0), else age + 1.
Stationary age is geometric: P(a = k) = theta (1 - theta)^k, mean (1 - theta)/theta.
Inference error e_n^t = K_{t - a_n^t}; ebar^{t+1} = theta K_{t+1} + (1 - theta) ebar^t.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jointopt.models import ConvergenceModel, ValidationError
from jointopt.models.aom import (
    REFRESH_MODES,
    age_step,
    expected_error_step,
    refresh_probability,
    simulate_ages,
    stationary_mean,
    stationary_pmf,
)

SETTINGS = settings(max_examples=60, deadline=None)

theta_open = st.floats(min_value=0.01, max_value=1.0)
prob = st.floats(min_value=0.0, max_value=1.0)

# --------------------------------------------------------------------------- simulation (oracle 2)

GROUP_THETAS = (0.1, 0.3, 0.7)
CLIENTS_PER_GROUP = 700
ROUNDS = 2000
BURN_IN = 500  # (1 - 0.1)^500 ~ 1e-23: the start at age 0 is forgotten


@pytest.fixture(scope="module")
def grouped_ages():
    """AoM paths of 3 groups of clients with different constant theta, fixed seed."""
    theta = np.repeat(GROUP_THETAS, CLIENTS_PER_GROUP)
    ages = simulate_ages(theta, ROUNDS, np.random.default_rng(0))
    return theta, ages


def test_simulate_ages_shape_and_start(grouped_ages):
    theta, ages = grouped_ages
    assert ages.shape == (ROUNDS + 1, theta.size)
    assert np.issubdtype(ages.dtype, np.integer)
    assert np.all(ages[0] == 0)
    assert ages.min() >= 0


def test_simulate_ages_follow_the_dynamics(grouped_ages):
    """Every step either resets to 0 or adds exactly one; never more than t at round t."""
    _, ages = grouped_ages
    nxt, prev = ages[1:], ages[:-1]
    assert np.all((nxt == 0) | (nxt == prev + 1))
    assert np.all(ages <= np.arange(ROUNDS + 1)[:, None])


def test_refresh_frequency_matches_theta(grouped_ages):
    """Resets are Bernoulli(theta) per round: binomial count, SE sqrt(theta(1-theta)/n)."""
    theta, ages = grouped_ages
    resets = ages[1:] == 0
    for th in GROUP_THETAS:
        cols = theta == th
        n = resets[:, cols].size
        rate = resets[:, cols].mean()
        se = math.sqrt(th * (1 - th) / n)
        assert abs(rate - th) < 5 * se, (th, rate, se)


def test_mean_age_converges_to_stationary_mean(grouped_ages):
    """Time-and-client average of the age -> (1 - theta)/theta.

    Ages of one client are autocorrelated: corr(a_t, a_{t+h}) = (1 - theta)^h (after a reset
    the age is independent of the past), so the integrated autocorrelation time is
    1 + 2 sum_h (1-theta)^h = (2 - theta)/theta. Clients are independent. Hence the standard
    error of the grand mean over N clients x R rounds is
    sqrt(Var(a) (2 - theta)/theta / (N R)), with Var(a) = (1 - theta)/theta^2.
    """
    theta, ages = grouped_ages
    post = ages[BURN_IN + 1:]
    for th in GROUP_THETAS:
        sample = post[:, theta == th]
        mean = (1 - th) / th
        var = (1 - th) / th ** 2
        se = math.sqrt(var * (2 - th) / th / sample.size)
        assert abs(sample.mean() - mean) < 5 * se, (th, sample.mean(), mean, se)
        assert float(stationary_mean(th)) == pytest.approx(mean, rel=1e-12)
        # Sanity on the tolerance itself: it is tight relative to the target.
        assert 5 * se < 0.05 * max(mean, 1.0)


def test_empirical_pmf_matches_stationary_pmf(grouped_ages):
    """Thinned rows (every 50 rounds, so that (1 - theta)^50 <= 0.9^50 ~ 5e-3 correlation)
    are treated as independent draws: each P(a = k) has binomial SE sqrt(P(1-P)/n)."""
    theta, ages = grouped_ages
    thinned = ages[BURN_IN + 1::50]
    ks = np.arange(6)
    for th in GROUP_THETAS:
        sample = thinned[:, theta == th].ravel()
        expected = th * (1 - th) ** ks  # derived from the geometric law, not from the code
        np.testing.assert_allclose(stationary_pmf(th, ks), expected, rtol=1e-12)
        for k, pk in zip(ks, expected, strict=True):
            freq = np.mean(sample == k)
            se = math.sqrt(pk * (1 - pk) / sample.size)
            assert abs(freq - pk) < 5 * se + 1e-12, (th, k, freq, pk, se)


def test_last_row_is_geometric_across_clients(grouped_ages):
    """The final ages of independent clients: mean and variance of a geometric law."""
    theta, ages = grouped_ages
    for th in GROUP_THETAS:
        last = ages[-1, theta == th]
        mean, var = (1 - th) / th, (1 - th) / th ** 2
        se = math.sqrt(var / last.size)
        assert abs(last.mean() - mean) < 5 * se


def test_theta_one_gives_age_identically_zero():
    ages = simulate_ages(np.ones(50), 300, np.random.default_rng(0),
                         age0=np.arange(50))
    assert np.all(ages[0] == np.arange(50))
    assert np.all(ages[1:] == 0)


def test_theta_zero_never_refreshes():
    ages = simulate_ages(np.zeros(4), 20, np.random.default_rng(0), age0=np.array([0, 1, 2, 3]))
    np.testing.assert_array_equal(ages, np.arange(21)[:, None] + np.array([0, 1, 2, 3]))


def test_simulate_ages_reproducible_with_seed():
    th = np.full(10, 0.4)
    a1 = simulate_ages(th, 50, np.random.default_rng(7))
    a2 = simulate_ages(th, 50, np.random.default_rng(7))
    np.testing.assert_array_equal(a1, a2)


def test_age_step():
    age = np.array([0, 3, 7, 2])
    np.testing.assert_array_equal(age_step(age, np.array([True, False, True, False])),
                                  [0, 4, 0, 3])


# --------------------------------------------------------------------------- stationary law


@SETTINGS
@given(theta_open)
def test_stationary_pmf_is_a_distribution_with_the_stated_mean(theta):
    # Enough terms that the geometric tail (1 - theta)^k_max is negligible.
    k_max = int(math.ceil(math.log(1e-16) / math.log(1 - theta))) + 1 if theta < 1 else 1
    k = np.arange(k_max + 1)
    pmf = stationary_pmf(theta, k)
    assert np.all(pmf >= 0)
    assert pmf.sum() == pytest.approx(1.0, abs=1e-12)
    assert float(np.sum(k * pmf)) == pytest.approx((1 - theta) / theta, rel=1e-9, abs=1e-12)
    assert float(stationary_mean(theta)) == pytest.approx((1 - theta) / theta, rel=1e-12)


@pytest.mark.parametrize("theta", [0.0, -0.1, 1.5, float("nan")])
def test_stationary_law_rejects_bad_theta(theta):
    with pytest.raises(ValidationError) as err:
        stationary_pmf(theta, 0)
    assert err.value.field == "theta"
    with pytest.raises(ValidationError):
        stationary_mean(theta)


def test_stationary_mean_vectorised():
    th = np.array([0.25, 0.5, 1.0])
    np.testing.assert_allclose(stationary_mean(th), [3.0, 1.0, 0.0])


# --------------------------------------------------------------------------- refresh probability


@SETTINGS
@given(st.lists(st.tuples(prob, prob), min_size=1, max_size=8))
def test_refresh_probability_modes(qd):
    q = np.array([x for x, _ in qd])
    d = np.array([y for _, y in qd])
    np.testing.assert_allclose(refresh_probability(q, d), d)
    np.testing.assert_allclose(refresh_probability(q, d, mode="download"), d)
    both = refresh_probability(q, d, mode="download_or_train")
    np.testing.assert_allclose(both, 1 - (1 - q) * (1 - d), rtol=1e-12, atol=1e-15)
    # Union of two independent events: at least each of them, at most their sum.
    assert np.all(both >= np.maximum(q, d) - 1e-15)
    assert np.all(both <= np.minimum(q + d, 1.0) + 1e-15)


def test_refresh_probability_train_alone_refreshes():
    q = np.array([1.0, 0.0, 0.5])
    d = np.array([0.0, 1.0, 0.0])
    np.testing.assert_allclose(refresh_probability(q, d, "download_or_train"), [1.0, 1.0, 0.5])
    np.testing.assert_allclose(refresh_probability(q, d, "download"), [0.0, 1.0, 0.0])


def test_refresh_modes_listed():
    assert set(REFRESH_MODES) == {"download", "download_or_train"}


@pytest.mark.parametrize("mode", ["train", "", "DOWNLOAD", None])
def test_refresh_probability_unknown_mode_raises(mode):
    with pytest.raises(ValueError, match="mode"):
        refresh_probability(np.array([0.5]), np.array([0.5]), mode=mode)


# ------------------------------------------------------------ inference error (oracle 4)


@st.composite
def decreasing_K(draw, max_rounds: int = 40):
    """A non-increasing K path: trajectory of the recursion started above its fixed point."""
    a = draw(st.floats(min_value=0.05, max_value=0.98))
    b = draw(st.floats(min_value=0.0, max_value=5.0))
    c = draw(st.floats(min_value=0.0, max_value=1.0))
    p = np.array([0.6, 0.4])
    q = np.array([draw(st.floats(min_value=0.1, max_value=1.0)) for _ in range(2)])
    model = ConvergenceModel(a, b, c)
    fp = model.fixed_point(q, p)
    K0 = fp + draw(st.floats(min_value=0.0, max_value=100.0))
    rounds = draw(st.integers(min_value=1, max_value=max_rounds))
    K = model.trajectory(K0, q, p, rounds)
    return K


@SETTINGS
@given(decreasing_K(), st.lists(theta_open, min_size=1, max_size=6), st.integers(0, 2**32 - 1))
def test_sampled_inference_error_dominates_K(K, thetas, seed):
    assert np.all(np.diff(K) <= 0), "precondition: K non-increasing"
    rounds = K.size - 1
    theta = np.array(thetas)
    ages = simulate_ages(theta, rounds, np.random.default_rng(seed))
    t = np.arange(rounds + 1)[:, None]
    assert np.all(ages <= t)  # the held version index t - a is never before round 0
    e = K[t - ages]  # e_n^t = K_{t - a_n^t}
    assert np.all(e >= K[:, None])
    fresh = ages == 0
    np.testing.assert_array_equal(e[fresh], np.broadcast_to(K[:, None], e.shape)[fresh])
    # Stale copies hold an older, never better, version.
    assert np.all(e[~fresh] >= np.broadcast_to(K[:, None], e.shape)[~fresh])


@SETTINGS
@given(decreasing_K(), st.lists(theta_open, min_size=1, max_size=6))
def test_expected_error_recursion_stays_above_K(K, thetas):
    assert np.all(np.diff(K) <= 0)
    theta = np.array(thetas)
    ebar = np.full(theta.size, K[0])
    scale = max(abs(K[0]), 1.0)
    for t in range(1, K.size):
        new = expected_error_step(ebar, K[t], theta)
        # Convex combination of K_{t} and the previous ebar.
        lo, hi = np.minimum(K[t], ebar), np.maximum(K[t], ebar)
        assert np.all(new >= lo - 1e-12 * scale) and np.all(new <= hi + 1e-12 * scale)
        ebar = new
        assert np.all(ebar >= K[t] - 1e-12 * scale), t
    # theta = 1 (refresh every round) tracks K exactly.
    ebar1 = np.array([K[0]])
    for t in range(1, K.size):
        ebar1 = expected_error_step(ebar1, K[t], np.array([1.0]))
        assert ebar1[0] == K[t]


@SETTINGS
@given(decreasing_K(max_rounds=30), theta_open)
def test_expected_error_recursion_equals_expectation_under_age_law(K, theta):
    """Starting at age 0, P(a^t = k) = theta(1-theta)^k for k < t and (1-theta)^t for k = t,
    so E[K_{t - a^t}] = sum_{k<t} theta (1-theta)^k K_{t-k} + (1-theta)^t K_0; the recursion
    from ebar^0 = K_0 must reproduce it exactly (up to rounding)."""
    ebar = np.array([K[0]])
    for t in range(1, K.size):
        ebar = expected_error_step(ebar, K[t], np.array([theta]))
        exact = math.fsum(theta * (1 - theta) ** k * K[t - k] for k in range(t))
        exact += (1 - theta) ** t * K[0]
        assert ebar[0] == pytest.approx(exact, rel=1e-10, abs=1e-12)


def test_sampled_error_mean_matches_expected_error_recursion():
    """Monte-Carlo mean over independent clients of e^t = K_{t - a^t} matches ebar^t.

    e^t lies in [K_t, K_0], so its standard deviation is at most (K_0 - K_t)/2 (Popoviciu);
    the SE of a mean over n clients is at most (K_0 - K_t)/(2 sqrt(n)).
    """
    model = ConvergenceModel(0.85, 1.0, 0.02)
    p, q = np.array([0.5, 0.5]), np.array([0.5, 0.5])
    K = model.trajectory(10.0, q, p, 40)
    theta, n = 0.25, 20000
    ages = simulate_ages(np.full(n, theta), K.size - 1, np.random.default_rng(0))
    t = np.arange(K.size)[:, None]
    e = K[t - ages]
    ebar = np.array([K[0]])
    for s in range(1, K.size):
        ebar = expected_error_step(ebar, K[s], np.array([theta]))
        bound = (K[0] - K[s]) / (2 * math.sqrt(n))
        assert abs(e[s].mean() - ebar[0]) <= 5 * bound + 1e-12, s
        assert ebar[0] > K[s]  # strictly stale on average when theta < 1 and K decreases
