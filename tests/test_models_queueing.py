"""M/M/1 inference service: sojourn and on-time fraction against a simulation.

Requests arrive Poisson(lam), are served FIFO at Exp(mu); stable iff mu > lam; sojourn time
~ Exp(mu - lam): mean 1/(mu - lam), P(S <= tau) = 1 - exp(-(mu - lam) tau).
The closed forms are checked against a SimPy discrete-event simulation.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import simpy
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jointopt.models.queueing import is_stable, mean_sojourn, on_time_fraction, sojourn_quantile

SETTINGS = settings(max_examples=80, deadline=None)

# --------------------------------------------------------------------------- discrete-event sim

CUSTOMERS = 60_000
WARM_UP = 5_000      # discarded: the queue starts empty, not in steady state
BATCHES = 25         # batch means: sojourns of consecutive customers are correlated
POINTS = [  # (lam, mu, tau)
    (1.0, 2.0, 1.0),    # rho = 0.5
    (3.0, 5.0, 0.8),    # rho = 0.6
    (0.5, 2.5, 0.2),    # rho = 0.2
]


def simulate_mm1(lam: float, mu: float, n: int, seed: int):
    """Sojourn times of ``n`` customers of a FIFO M/M/1 queue (SimPy), plus the draws used."""
    rng = np.random.default_rng(seed)
    interarrival = rng.exponential(1.0 / lam, n)
    service = rng.exponential(1.0 / mu, n)
    env = simpy.Environment()
    server = simpy.Resource(env, capacity=1)
    sojourn = np.full(n, np.nan)

    def customer(i):
        arrived = env.now
        with server.request() as req:
            yield req
            yield env.timeout(service[i])
        sojourn[i] = env.now - arrived

    def source():
        for i in range(n):
            yield env.timeout(interarrival[i])
            env.process(customer(i))

    env.process(source())
    env.run()
    return sojourn, interarrival, service


def lindley_sojourn(interarrival, service):
    """Independent reference: W_{i+1} = max(W_i + S_i - A_{i+1}, 0), sojourn = W + S."""
    wait = np.empty_like(service)
    wait[0] = 0.0
    for i in range(1, service.size):
        wait[i] = max(wait[i - 1] + service[i - 1] - interarrival[i], 0.0)
    return wait + service


def batch_mean_se(x: np.ndarray, batches: int = BATCHES) -> tuple[float, float]:
    """Mean and its batch-means standard error."""
    usable = x[: x.size - x.size % batches]
    means = usable.reshape(batches, -1).mean(axis=1)
    return float(x.mean()), float(means.std(ddof=1) / math.sqrt(batches))


@pytest.fixture(scope="module", params=POINTS, ids=lambda p: "lam={}-mu={}-tau={}".format(*p))
def simulated(request):
    lam, mu, tau = request.param
    sojourn, interarrival, service = simulate_mm1(lam, mu, CUSTOMERS, seed=0)
    return lam, mu, tau, sojourn, interarrival, service


def test_simulation_is_a_fifo_single_server_queue(simulated):
    """The SimPy model is the queue we mean: it matches Lindley's recursion on the same draws."""
    _, _, _, sojourn, interarrival, service = simulated
    assert not np.isnan(sojourn).any()
    np.testing.assert_allclose(sojourn, lindley_sojourn(interarrival, service),
                               rtol=1e-9, atol=1e-9)


def test_mean_sojourn_matches_simulation(simulated):
    lam, mu, _, sojourn, _, _ = simulated
    steady = sojourn[WARM_UP:]
    mean, se = batch_mean_se(steady)
    expected = 1.0 / (mu - lam)
    assert float(mean_sojourn(lam, mu)) == pytest.approx(expected, rel=1e-12)
    assert se < 0.03 * expected  # the tolerance below is tight, not vacuous
    assert abs(mean - expected) < 4 * se, (mean, expected, se)


def test_on_time_fraction_matches_simulation(simulated):
    lam, mu, tau, sojourn, _, _ = simulated
    on_time = (sojourn[WARM_UP:] <= tau).astype(float)
    frac, se = batch_mean_se(on_time)
    expected = 1.0 - math.exp(-(mu - lam) * tau)
    assert float(on_time_fraction(lam, mu, tau)) == pytest.approx(expected, rel=1e-12)
    assert se < 0.02
    assert abs(frac - expected) < 4 * se, (frac, expected, se)


@pytest.mark.parametrize("level", [0.5, 0.9, 0.99])
def test_sojourn_quantile_matches_simulation(simulated, level):
    lam, mu, _, sojourn, _, _ = simulated
    x = float(sojourn_quantile(lam, mu, level))
    frac, se = batch_mean_se((sojourn[WARM_UP:] <= x).astype(float))
    assert abs(frac - level) < 4 * se + 1e-3, (level, frac, se)


# --------------------------------------------------------------------------- closed forms

rate = st.floats(min_value=0.0, max_value=100.0)
gap = st.floats(min_value=1e-3, max_value=100.0)
deadline = st.floats(min_value=1e-3, max_value=10.0)


def test_is_stable():
    np.testing.assert_array_equal(is_stable([1.0, 2.0, 3.0], [2.0, 2.0, 1.0]),
                                  [True, False, False])
    assert bool(is_stable(0.0, 1e-9))


@pytest.mark.parametrize(("lam", "mu"), [(2.0, 2.0), (3.0, 1.0), (1.0, 0.0)])
def test_unstable_queue_infinite_sojourn_zero_on_time(lam, mu):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero / invalid warnings leak out
        assert not bool(is_stable(lam, mu))
        assert float(mean_sojourn(lam, mu)) == math.inf
        assert float(on_time_fraction(lam, mu, 1.0)) == 0.0
        assert float(on_time_fraction(lam, mu, math.inf)) == 0.0
        assert float(sojourn_quantile(lam, mu, 0.9)) == math.inf


@SETTINGS
@given(rate, gap)
def test_no_deadline_means_always_on_time(lam, g):
    mu = lam + g
    assume(mu > lam)
    assert float(on_time_fraction(lam, mu, math.inf)) == 1.0


@SETTINGS
@given(rate, gap)
def test_zero_deadline_never_on_time(lam, g):
    assert float(on_time_fraction(lam, lam + g, 0.0)) == 0.0


@SETTINGS
@given(rate, gap, deadline)
def test_on_time_fraction_formula_and_range(lam, g, tau):
    mu = lam + g
    assume(mu > lam)
    f = float(on_time_fraction(lam, mu, tau))
    assert f == pytest.approx(-math.expm1(-(mu - lam) * tau), rel=1e-9, abs=1e-15)
    assert 0.0 < f <= 1.0
    assert float(mean_sojourn(lam, mu)) == pytest.approx(1.0 / (mu - lam), rel=1e-9)


@SETTINGS
@given(rate, gap, st.floats(min_value=1e-6, max_value=1 - 1e-9))
def test_sojourn_quantile_inverts_on_time_fraction(lam, g, level):
    mu = lam + g
    assume(mu > lam)
    x = float(sojourn_quantile(lam, mu, level))
    assert x > 0
    assert float(on_time_fraction(lam, mu, x)) == pytest.approx(level, rel=1e-9, abs=1e-12)
    assert x == pytest.approx(-math.log1p(-level) / (mu - lam), rel=1e-9)


@SETTINGS
@given(rate, gap, st.floats(min_value=1e-3, max_value=0.98), st.floats(min_value=1e-3,
                                                                       max_value=0.01))
def test_sojourn_quantile_increasing_in_level(lam, g, level, step):
    mu = lam + g
    assume(mu > lam)
    assert sojourn_quantile(lam, mu, level + step) > sojourn_quantile(lam, mu, level)


@SETTINGS
@given(st.floats(min_value=0.0, max_value=20.0), st.floats(min_value=0.01, max_value=5.0),
       st.floats(min_value=0.01, max_value=5.0), st.floats(min_value=0.01, max_value=5.0),
       st.floats(min_value=0.05, max_value=2.0))
def test_on_time_fraction_increasing_and_concave_in_mu(lam, g1, dg, dg2, tau):
    """On the stable region P(mu) = 1 - exp(-(mu - lam) tau) is increasing and concave."""
    mu1, mu2, mu3 = lam + g1, lam + g1 + dg, lam + g1 + dg + dg2
    f1, f2, f3 = (float(on_time_fraction(lam, m, tau)) for m in (mu1, mu2, mu3))
    assert f1 < f2 < f3 or f3 == 1.0
    assert f1 <= f2 <= f3
    # Concavity: the chord slope decreases; and the midpoint lies above the chord.
    s12 = (f2 - f1) / (mu2 - mu1)
    s23 = (f3 - f2) / (mu3 - mu2)
    assert s23 <= s12 + 1e-9
    mid = float(on_time_fraction(lam, 0.5 * (mu1 + mu3), tau))
    assert mid >= 0.5 * (f1 + f3) - 1e-12
    # Derivative tau exp(-(mu - lam) tau) bounds the chord slopes.
    assert s12 <= tau * math.exp(-g1 * tau) + 1e-9


@SETTINGS
@given(st.floats(min_value=0.0, max_value=20.0), gap, deadline, deadline)
def test_on_time_fraction_monotone_in_deadline_and_load(lam, g, tau, dtau):
    mu = lam + g
    assume(mu > lam)
    assert on_time_fraction(lam, mu, tau + dtau) >= on_time_fraction(lam, mu, tau)
    lam2 = lam + 0.5 * g  # more load, still stable
    assume(mu > lam2 > lam)
    assert on_time_fraction(lam2, mu, tau) <= on_time_fraction(lam, mu, tau)
    assert mean_sojourn(lam2, mu) >= mean_sojourn(lam, mu)


@SETTINGS
@given(st.lists(st.tuples(st.floats(min_value=0.0, max_value=10.0),
                          st.floats(min_value=-5.0, max_value=5.0),
                          st.one_of(deadline, st.just(math.inf))),
                min_size=1, max_size=8))
def test_vectorised_equals_elementwise(rows):
    lam = np.array([r[0] for r in rows])
    mu = lam + np.array([r[1] for r in rows])
    tau = np.array([r[2] for r in rows])
    vec_f = on_time_fraction(lam, mu, tau)
    vec_s = mean_sojourn(lam, mu)
    vec_st = is_stable(lam, mu)
    vec_q = sojourn_quantile(lam, mu, 0.9)
    assert vec_f.shape == vec_s.shape == vec_st.shape == vec_q.shape == lam.shape
    for i in range(lam.size):
        assert vec_f[i] == on_time_fraction(lam[i], mu[i], tau[i])
        assert vec_s[i] == mean_sojourn(lam[i], mu[i])
        assert vec_st[i] == (mu[i] > lam[i])
        assert vec_q[i] == sojourn_quantile(lam[i], mu[i], 0.9)
        if mu[i] <= lam[i]:
            assert vec_f[i] == 0.0 and vec_s[i] == math.inf
        assert 0.0 <= vec_f[i] <= 1.0
