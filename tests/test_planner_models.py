"""Deployment-planner formulas (models/planner.py) on hand-computed cases and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jointopt.models import planner as pm
from jointopt.models.convergence import ConvergenceModel
from scipy import stats


def _fleet(n=1, *, sigma=0.0, bw_sigma=0.0, crash=0.0, tps=0.01, down=8.0, up=8.0):
    f = lambda v: np.full(n, float(v))  # noqa: E731
    return pm.Fleet(np.full(n, 1.0 / n), f(tps), f(sigma), f(down), f(up), f(bw_sigma),
                    f(crash), f(3.0), f(1.0), f(2.0))


def test_payloads_by_hand():
    s_d, s_u = pm.payload_bytes(1e6, 5e5, 4, 4, compression_down=2, compression_up=4,
                                secagg_expansion=1.5, header_bytes=100)
    assert s_d == 1e6 * 4 / 2 + 100
    assert s_u == 5e5 * 4 / 4 * 1.5 + 100


def test_one_megabyte_at_eight_megabit_is_one_second():
    assert pm.transfer_seconds(1e6, 8.0) == pytest.approx(1.0)


def test_deterministic_task_time_is_the_sum_of_its_stages():
    rng = np.random.default_rng(0)
    d = pm.draw_tasks(rng, (50,), _fleet(), 2e6, 1e6, 100.0, t_ovh=3.0, timeout=1e9,
                      dwell_mean=1e15)
    # 3 s overhead + 2 MB at 8 Mbit/s (2 s) + 100 samples * 0.01 s + 1 MB at 8 Mbit/s (1 s)
    np.testing.assert_allclose(d.T, 3.0 + 2.0 + 1.0 + 1.0)
    assert d.success.all()
    np.testing.assert_allclose(d.end, d.T)


def test_timeout_fails_tasks_and_charges_until_the_timeout():
    rng = np.random.default_rng(0)
    d = pm.draw_tasks(rng, (20,), _fleet(), 2e6, 1e6, 100.0, t_ovh=3.0, timeout=6.5,
                      dwell_mean=1e15)
    assert not d.success.any()
    np.testing.assert_allclose(d.end, 6.5)
    dn, cmp_, up = d.spent()
    np.testing.assert_allclose(dn, 2.0)
    np.testing.assert_allclose(cmp_, 1.0)
    np.testing.assert_allclose(up, 0.5)


def test_success_probability_matches_the_closed_form_without_crashes():
    rng = np.random.default_rng(1)
    fleet = _fleet(2, sigma=0.5, bw_sigma=0.4)
    n = 40_000
    d = pm.draw_tasks(rng, (n,), fleet, 2e6, 1e6, 300.0, t_ovh=1.0, timeout=12.0,
                      dwell_mean=60.0)
    closed = pm.success_probability_closed_form(d.T, 12.0, 60.0)
    se = math.sqrt(closed * (1 - closed) / n)
    assert abs(d.success.mean() - closed) <= 4 * se + 1e-3


def test_crashes_happen_inside_compute():
    rng = np.random.default_rng(2)
    d = pm.draw_tasks(rng, (5000,), _fleet(crash=1.0), 2e6, 1e6, 100.0, t_ovh=0.0,
                      timeout=1e9, dwell_mean=1e15)
    assert not d.success.any()
    assert ((d.end >= 2.0) & (d.end <= 3.0)).all()


def test_overselection_agrees_with_a_direct_scan():
    for K, p, delta in ((10, 0.8, 0.05), (100, 0.6, 0.01), (1, 0.3, 0.1), (50, 0.95, 0.001),
                        (2000, 0.7, 0.01), (5, 1.0, 0.01)):
        C = pm.overselection(K, p, delta)
        direct = next(c for c in range(K, 10 * K + 100)
                      if stats.binom.sf(K - 1, c, p) >= 1 - delta)
        assert C == direct
    assert pm.overselection(10, 0.0, 0.05) == -1


def test_identical_deterministic_tasks_give_round_time_T():
    rng = np.random.default_rng(3)
    sr = pm.sync_rounds(rng, 200, 5, 8, _fleet(), 2e6, 1e6, lambda r, s: np.full(s, 100.0),
                        t_ovh=3.0, timeout=1e9, dwell_mean=1e15, t_agg=0.5)
    np.testing.assert_allclose(sr.round_times, 7.5)
    assert sr.q_fail == 0.0
    assert sr.tasks_started == 8
    assert sr.bytes_down == 8 * 2e6


def test_exponential_tasks_kth_order_statistic():
    rng = np.random.default_rng(4)
    mu, K, C = 10.0, 6, 10
    # free links, unit compute per sample, sigma 0: task time = the exponential work
    fleet = _fleet(tps=1.0, down=1e12, up=1e12)
    sr = pm.sync_rounds(rng, 20_000, K, C, fleet, 1.0, 1.0,
                        lambda r, s: r.exponential(mu, s), t_ovh=0.0, timeout=1e12,
                        dwell_mean=1e18, t_agg=0.0)
    expect = mu * sum(1.0 / j for j in range(C - K + 1, C + 1))
    se = sr.round_times.std() / math.sqrt(len(sr.round_times))
    assert abs(sr.round_times.mean() - expect) <= 3 * se + 1e-6


def test_async_deterministic_rate_and_staleness():
    T = np.full(1000, 20.0)
    a = pm.async_rate(40, 1.0, 20.0, T, 10, None)
    assert a.lam == pytest.approx(40 / 20.0)
    assert a.staleness == pytest.approx(40 / 10)
    assert a.discard == 0.0 and a.lam_acc == a.lam


def test_async_staleness_bound_discards_and_fixed_point_holds():
    T = np.random.default_rng(5).exponential(20.0, 5000)
    a = pm.async_rate(40, 1.0, 20.0, T, 10, 1)
    assert 0 < a.discard < 1
    assert a.rho == pytest.approx(a.lam * (1 - a.discard) / 10, rel=1e-6)
    # with discards binding, lam/K overstates staleness
    assert a.staleness < (a.lam / 10) * T.mean()


def test_async_days_steps_hour_by_hour():
    assert pm.async_days(480.0, np.full(24, 10.0)) == pytest.approx(2.0)
    rate = np.zeros(24)
    rate[0] = 100.0
    assert pm.async_days(150.0, rate) == pytest.approx(1 + 0.5 / 24)
    assert np.isinf(pm.async_days(1.0, np.zeros(24)))


def test_hourly_pool_and_windows_by_hand():
    avail = np.arange(24) / 100.0
    pool = pm.hourly_pool(1000, 0.5, [1.0], [2], [avail], coverage=0.8)
    # UTC hour h is local hour h+2
    assert pool[0] == pytest.approx(1000 * 0.5 * 0.8 * 0.02)
    assert pool[22] == pytest.approx(0.0)  # local hour 0
    assert pm.sync_days(3600 * 8, 4) == pytest.approx(2.0)
    assert np.isinf(pm.sync_days(10.0, 0))


def test_burden_and_unique_participants():
    b = pm.burden(1000, 2.0, 1000)
    assert b["b"] == 0.5
    assert b["p_ge2"] == pytest.approx(1 - math.exp(-0.5) * 1.5)
    assert b["p99"] == stats.poisson.ppf(0.99, 0.5)
    rng = np.random.default_rng(6)
    E, M = 200, 300
    direct = np.mean([len(np.unique(rng.integers(0, E, M))) for _ in range(2000)])
    assert pm.unique_participants(M, E) == pytest.approx(direct, rel=0.01)


def test_energy_carbon_and_cost_by_hand():
    assert pm.network_energy_j(1e-8, 1e9) == pytest.approx(80.0)
    assert pm.server_energy_j(100, 2, 1.5, 1.0) == pytest.approx(100 * 2 * 1.5 * 86400)
    # 3.6e6 J = 1 kWh at 500 g/kWh -> 0.5 kg; server 7.2e6 J at 250 g -> 0.5 kg
    assert pm.co2e_kg(3.6e6, 500, 7.2e6, 250) == pytest.approx(1.0)
    assert pm.task_energy_j(3.0, 1.0, 2.0, 10, 20, 5) == 3 * 20 + 10 + 2 * 5
    assert pm.current_to_power_w(1000) == pytest.approx(3.8)
    usd = pm.cloud_usd(instance_hour_usd=1, n_instances=2, days=1, cpu_hour_usd=0.1, cpu_h=10,
                       egress_gb_usd=0.05, gb_down=100, ingress_gb_usd=0.01, gb_up=50,
                       storage_gb_month_usd=0.02, gb_month=10, cloud_infer_per_1k_usd=0.5,
                       q_cloud=2000)
    assert usd["total"] == pytest.approx(48 + 1 + 5 + 0.5 + 0.2 + 0 + 1.0)


def test_latency_single_class_and_queueing_factor():
    mu, sig = pm.lognormal_from_quantiles(20.0, 50.0)
    assert math.exp(mu) == pytest.approx(20.0)
    assert math.exp(mu + sig * stats.norm.ppf(0.95)) == pytest.approx(50.0)
    fleet, per = pm.fleet_latency_p95([20.0], [50.0], [0.0], [0.5], [1.0], [1.0])
    assert fleet == pytest.approx(50.0, rel=1e-6) and per[0] == pytest.approx(50.0, rel=1e-6)
    assert float(pm.mm1_factor(1.0, 2.0)) == pytest.approx(2.0)
    slower, _ = pm.fleet_latency_p95([20.0], [50.0], [1.0], [0.5], [2.0], [1.0])
    assert slower == pytest.approx(50.0 * 1.5 * 2.0, rel=1e-6)


def test_rounds_to_target_from_the_convergence_recursion():
    m = ConvergenceModel.from_fitted(0.5, 0.0, 0.0)
    assert pm.rounds_to_target(m, 10, 100, 1.0, 0.1)[0] == 4  # 0.5^4 = 0.0625 <= 0.1 < 0.125
    m2 = ConvergenceModel.from_fitted(0.9, 1.0, 0.0)
    R = pm.rounds_to_target(m2, [10, 50, 100], 100, 1.0, 0.5)
    assert R[0] > R[1] > R[2]  # larger cohorts need fewer rounds
    assert np.isinf(pm.rounds_to_target(m2, 1, 100, 1.0, 0.5)[0])  # below the floor


@settings(max_examples=30, deadline=None)
@given(c1=st.floats(1, 10), c2=st.floats(1, 10))
def test_more_compression_never_increases_bytes(c1, c2):
    lo, hi = sorted((c1, c2))
    a = pm.payload_bytes(1e6, 1e6, 4, 4, lo, lo)
    b = pm.payload_bytes(1e6, 1e6, 4, 4, hi, hi)
    assert b[0] <= a[0] and b[1] <= a[1]


@settings(max_examples=25, deadline=None)
@given(t1=st.floats(1, 200), t2=st.floats(1, 200), f=st.floats(1, 5))
def test_longer_timeout_or_dwell_never_lowers_success(t1, t2, f):
    lo, hi = sorted((t1, t2))
    fleet = _fleet(2, sigma=0.6, bw_sigma=0.5, crash=0.01)

    def p(timeout, dwell):
        rng = np.random.default_rng(7)  # common random numbers
        return pm.draw_tasks(rng, (3000,), fleet, 2e6, 1e6, 500.0, t_ovh=1.0,
                             timeout=timeout, dwell_mean=dwell).success.mean()

    assert p(hi, 100.0) >= p(lo, 100.0)
    assert p(hi, 100.0 * f) >= p(hi, 100.0)


@settings(max_examples=30, deadline=None)
@given(n1=st.integers(1, 50), n2=st.integers(1, 50), days=st.floats(0.1, 30))
def test_cloud_cost_is_monotone_in_instances_and_traffic(n1, n2, days):
    lo, hi = sorted((n1, n2))

    def usd(n, gb):
        return pm.cloud_usd(instance_hour_usd=0.5, n_instances=n, days=days, cpu_hour_usd=0.1,
                            cpu_h=1, egress_gb_usd=0.05, gb_down=gb, ingress_gb_usd=0.0,
                            gb_up=gb / 4, storage_gb_month_usd=0.02, gb_month=1,
                            cloud_infer_per_1k_usd=0.0, q_cloud=0)["total"]

    assert usd(hi, 10) >= usd(lo, 10)
    assert usd(lo, 10 * hi) >= usd(lo, 10 * lo)


@settings(max_examples=40, deadline=None)
@given(r=st.floats(0.01, 100), p=st.floats(0.5, 5))
def test_root_finder_agrees_with_scipy_brentq(r, p):
    from scipy.optimize import brentq as scipy_brentq

    def f(x):
        return x**p - r

    hi = r ** (1 / p) * 1.7 + 0.3
    assert pm.brentq(f, 0.0, hi) == pytest.approx(scipy_brentq(f, 0.0, hi, xtol=1e-14),
                                                  rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError):
        pm.brentq(f, r**(1 / p) + 1, r**(1 / p) + 2)


def test_clock_days_counts_training_hours_from_utc_midnight():
    ok = np.zeros(24, bool)
    ok[[0, 1, 2, 3]] = True
    assert pm.clock_days(1800.0, ok) == pytest.approx(0.5 / 24)
    assert pm.clock_days(3600 * 4 + 1800.0, ok) == pytest.approx(1 + 0.5 / 24)
    ok[:] = False
    ok[[22, 23]] = True
    assert pm.clock_days(3600 * 1.5, ok) == pytest.approx(23.5 / 24)
    # a long campaign: the clock and the sync_days model differ by less than a day
    A = 3600 * 4 * 7.3
    ok[:] = False
    ok[[0, 1, 2, 3]] = True
    assert abs(pm.clock_days(A, ok) - pm.sync_days(A, 4)) < 1
