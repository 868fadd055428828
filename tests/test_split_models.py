"""models/split.py: ``docs/kinds/split_learning.md`` and oracles 4 (accounting), 6-12,
plus the plain-array forms of oracles 1-3 (mixing, gamma extremes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jointopt.models import split as sm

from jointopt.errors import ValidationError

LN10 = math.log(10)
pos = st.floats(1e-3, 1e3, allow_nan=False)
unit = st.floats(0.0, 1.0, allow_nan=False)


def random_net(rng: np.random.Generator, n_blocks: int) -> sm.LayeredNetwork:
    return sm.LayeredNetwork(macs=rng.integers(1, 10**6, n_blocks),
                             params=rng.integers(1, 10**5, n_blocks),
                             act_elems=rng.integers(1, 5000, n_blocks + 1),
                             aux_macs=rng.integers(0, 10**4, n_blocks + 1),
                             aux_params=rng.integers(0, 10**4, n_blocks + 1))


def random_link(rng: np.random.Generator) -> sm.Link:
    return sm.Link(f_client=10 ** rng.uniform(6, 10), f_server=10 ** rng.uniform(7, 11),
                   rate=10 ** rng.uniform(4, 8), tau0=rng.uniform(0, 1e-2) * rng.integers(0, 2),
                   bits_per_element=float(rng.choice([8, 16, 32])))


def random_records(rng, n_main, n_ood, ties=False):
    h = rng.uniform(0, LN10, n_main + n_ood)
    if ties:
        h = np.round(h, 1)
    return {"h": h, "is_ood": np.repeat([False, True], [n_main, n_ood]),
            "correct_client": rng.random(h.size) < 0.7, "correct_server": rng.random(h.size) < 0.8}


# -- accounting (oracle 4, the analytic half) ----------------------------------------------
@pytest.mark.parametrize("build", [sm.digits_cnn, sm.digits_mlp])
def test_preset_networks_split_consistently(build):
    net = build(10)
    s = net.cuts
    np.testing.assert_allclose(net.flops_client(s) + net.flops_server(s), net.flops_total)
    np.testing.assert_allclose(net.params_client(s) + net.params_server(s), net.params.sum())
    for ratio in (net.beta_flop(s), net.beta_param(s), net.beta_param_aux(s)):
        assert ratio[0] == 0 and ratio[-1] == 1 and np.all(np.diff(ratio) >= 0)
    assert net.aux_macs[0] == net.aux_macs[-1] == 0 and np.all(net.aux_macs[1:-1] > 0)
    assert net.act_elems[0] == 64 and net.act_elems[-1] == 10


def test_digits_cnn_counts_follow_the_layer_formulas():
    net = sm.digits_cnn(10)
    # conv 16->32 on 8x8 with a 3x3 kernel, and the 128->128 dense layer
    assert net.macs[1] == 16 * 32 * 9 * 64 and net.params[1] == 16 * 32 * 9 + 32
    assert net.macs[4] == 128 * 128 and net.params[4] == 128 * 128 + 128
    # the activation after block 1 is larger than the raw input: b_1 > b_0 is normal
    assert net.act_bits(1) > net.act_bits(0)
    # convolutions dominate compute, dense layers parameters: the two ratios differ a lot
    assert net.beta_flop(2) > 3 * net.beta_param(2)


def test_bad_network_and_cut_name_the_culprit():
    with pytest.raises(ValidationError, match=r"network.params must have 3 entries"):
        sm.LayeredNetwork([1, 2, 3], [1, 2], [1, 1, 1, 1], [0] * 4, [0] * 4)
    with pytest.raises(ValidationError, match=r"network.macs\[1\] must be finite and >= 0"):
        sm.LayeredNetwork([1, -2, 3], [1, 2, 3], [1, 1, 1, 1], [0] * 4, [0] * 4)
    with pytest.raises(ValidationError, match=r"split must lie in 0..6"):
        sm.digits_cnn().flops_client(7)


# -- entropy (oracle 6) ----------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=2, max_size=12))
def test_entropy_lies_in_zero_ln_c(logits):
    h = sm.entropy(np.array(logits))
    assert 0.0 <= h <= math.log(len(logits)) + 1e-12


def test_entropy_extremes():
    np.testing.assert_allclose(sm.entropy(np.full((3, 10), 2.5)), LN10)
    sat = np.array([[1e4, 0, 0, 0], [0, -np.inf, 5e3, 0], [1e308, -1e308, 0, 0]])
    h = sm.entropy(sat)
    assert np.all(np.isfinite(h)) and np.all(h == 0.0)
    assert sm.offloads(h, 0.0).sum() == 0  # strict rule: H = E_th stays local


# -- offload curves: threshold extremes, monotonicity (oracles 7, 8) --------------------------
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_main=st.integers(1, 40), n_ood=st.integers(0, 40),
       p=st.floats(0, 3), ties=st.booleans())
def test_curve_matches_direct_evaluation_and_is_monotone(seed, n_main, n_ood, p, ties):
    assume(n_ood > 0 or p == 0)
    rng = np.random.default_rng(seed)
    r = random_records(rng, n_main, n_ood, ties)
    cv = sm.offload_curve(r["h"], r["is_ood"], r["correct_client"], r["correct_server"], p, 10)
    w = sm.mixture_weights(r["is_ood"], p)
    np.testing.assert_allclose(w.sum(), 1.0)
    off = r["h"][None, :] > cv.e[:, None]
    np.testing.assert_allclose(cv.q, off @ w, atol=1e-12)
    acc = (np.where(off, r["correct_server"], r["correct_client"]) * w).sum(axis=1)
    np.testing.assert_allclose(cv.acc, acc, atol=1e-12)
    assert np.all(np.diff(cv.e) > 0) and np.all(np.diff(cv.q) <= 1e-12)
    # extremes: E = ln C offloads nothing, E = -1 everything
    assert cv.e[0] == -1 and cv.e[-1] == pytest.approx(LN10)
    assert cv.q[-1] == 0 and cv.q[0] == pytest.approx(1.0)
    assert cv.acc_client == pytest.approx(float(w @ r["correct_client"]))
    assert cv.acc_server == pytest.approx(float(w @ r["correct_server"]))
    # latency follows q: non-increasing in E_th; extremes equal the two limit formulas
    net, link = sm.digits_cnn(), sm.Link(1e8, 1e9, 1e7)
    t = sm.latency_splitgp(net, 2, cv.q, link)
    assert np.all(np.diff(t) <= 1e-15)
    assert t[-1] == pytest.approx(float(sm.client_time(net, 2, link)))
    assert t[0] == pytest.approx(float(sm.latency_split(net, 2, link)
                                       + net.flops_aux(2) / link.f_client))


def test_grid_mode_and_headline_threshold():
    rng = np.random.default_rng(5)
    r = random_records(rng, 40, 30)
    full = sm.offload_curve(r["h"], r["is_ood"], r["correct_client"], r["correct_server"], 0.4,
                            10)
    grid = sm.offload_curve(r["h"], r["is_ood"], r["correct_client"], r["correct_server"], 0.4,
                            10, candidates=sm.E_TH_GRID)
    assert grid.e.size == len(sm.E_TH_GRID) + 2
    np.testing.assert_allclose(grid.at(sm.E_TH_GRID)[0], full.at(sm.E_TH_GRID)[0])
    np.testing.assert_allclose(grid.at(sm.E_TH_GRID)[1], full.at(sm.E_TH_GRID)[1])
    e = sm.headline_threshold(r["h"], r["is_ood"], r["correct_client"], r["correct_server"], 10)
    means = [np.mean([full_p.at(x)[1] for full_p in (
        sm.offload_curve(r["h"], r["is_ood"], r["correct_client"], r["correct_server"], p, 10)
        for p in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0))]) for x in sm.E_TH_GRID]
    assert e in sm.E_TH_GRID and np.mean(means[sm.E_TH_GRID.index(e)]) == pytest.approx(
        max(means))
    # a client exit that is always right and a server that is always wrong: never offload
    ones, zeros = np.ones(70, bool), np.zeros(70, bool)
    assert sm.headline_threshold(r["h"], r["is_ood"], ones, zeros, 10) == 2.3


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), q_bar=st.floats(-0.2, 1.2), q_bar2=st.floats(0, 1.2))
def test_threshold_selection_and_rate_mapping(seed, q_bar, q_bar2):
    rng = np.random.default_rng(seed)
    r = random_records(rng, 30, 20)
    cv = sm.offload_curve(r["h"], r["is_ood"], r["correct_client"], r["correct_server"], 0.5, 10)
    j = cv.select(q_bar)
    if q_bar < 0:
        assert j is None
    else:
        ok = cv.q <= q_bar + 1e-12
        assert cv.q[j] <= q_bar + 1e-12 and cv.acc[j] == cv.acc[ok].max()
        assert not np.any(ok[j + 1:] & (cv.acc[j + 1:] == cv.acc[j]))  # ties to larger E
        # a worse network (smaller allowed rate) never raises the chosen accuracy
        lo = min(q_bar, q_bar2)
        if lo >= 0:
            assert cv.acc[cv.select(lo)] <= cv.acc[j] + 1e-15
    target = min(max(q_bar2, 0.0), 1.0)
    e_cons, e1, e2, prob = cv.threshold_for_rate(target)
    q_cons = cv.at(e_cons)[0]
    assert q_cons <= target + 1e-12
    assert np.all(cv.q[cv.e < e_cons] > target - 1e-12)  # the smallest such threshold
    q_mix = prob * cv.at(e2)[0] + (1 - prob) * cv.at(e1)[0]
    assert q_mix == pytest.approx(target, abs=1e-12)


# -- mixture identities (oracles 9, 10) ---------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_main=st.integers(1, 30), n_ood=st.integers(1, 30))
def test_accuracy_decomposes_over_main_and_ood(seed, n_main, n_ood):
    rng = np.random.default_rng(seed)
    correct = rng.random(n_main + n_ood) < 0.6
    is_ood = np.repeat([False, True], [n_main, n_ood])
    p_real = n_ood / n_main
    a_main, a_ood = correct[~is_ood].mean(), correct[is_ood].mean()
    assert correct.mean() == pytest.approx(float(sm.mixture_accuracy(a_main, a_ood, p_real)))
    w = sm.mixture_weights(is_ood, 0.7)
    assert w @ correct == pytest.approx(float(sm.mixture_accuracy(a_main, a_ood, 0.7)))


def test_accuracy_in_p_and_ideal_detector():
    p = np.linspace(0, 3, 31)
    acc = sm.mixture_accuracy(0.9, 0.3, p)
    assert np.all(np.diff(acc) < 0)
    assert np.all(sm.mixture_accuracy(1.0, 0.0, p) <= 1 / (1 + p) + 1e-15)
    np.testing.assert_allclose(sm.mixture_rate(0.0, 1.0, p), p / (1 + p))
    # an entropy gap that separates main from OOD samples is an ideal detector
    rng = np.random.default_rng(3)
    h = np.concatenate([rng.uniform(0, 0.5, 40), rng.uniform(1.5, 2.0, 25)])
    is_ood = np.repeat([False, True], [40, 25])
    for pp in (0.2, 1.0, 2.5):
        cv = sm.offload_curve(h, is_ood, np.ones(65), np.ones(65), pp, 10)
        assert cv.at(1.0)[0] == pytest.approx(pp / (1 + pp))


def test_beta_model_closed_form_agrees_with_its_samples():
    m = sm.BetaEntropyModel(1.5, 4.0, 5.0, 1.5, 0.9, 0.05, 0.93, 0.9)
    rec = m.sample(20000, 10000, np.random.default_rng(0))
    cv = sm.offload_curve(rec["h"], rec["is_ood"], rec["correct_client"],
                          rec["correct_server"], 0.5, 10)
    e = np.array([0.3, 0.9, 1.5])
    q_emp, acc_emp = cv.at(e)
    np.testing.assert_allclose(q_emp, m.rate(e, 0.5), atol=0.01)
    np.testing.assert_allclose(acc_emp, m.accuracy(e, 0.5), atol=0.01)
    assert m.rate(LN10, 0.5) == 0 and m.rate(-1, 0.5) == 1
    assert np.all(np.diff(m.rate(np.linspace(-1, 3, 50), 0.5)) <= 0)


# -- operating curves ----------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_envelope_is_concave_dominates_the_points_and_pairs_attain_it(seed):
    rng = np.random.default_rng(seed)
    r = random_records(rng, 25, 15)
    cv = sm.offload_curve(r["h"], r["is_ood"], r["correct_client"], r["correct_server"], 0.6, 10)
    env = cv.envelope()
    assert np.all(env(cv.q) >= cv.acc - 1e-12)
    np.testing.assert_allclose(env(env.vertices_q), env.vertices_acc, atol=1e-12)
    assert np.all(np.diff(env.slopes) < 0)
    assert np.all(env.intercepts >= env(0.0) - 1e-12) and env(0.0) >= 0
    for target in rng.uniform(0, 1, 5):
        e_lo, e_hi, prob_hi = env.pair_for_rate(target)
        (q_lo, a_lo), (q_hi, a_hi) = cv.at(e_lo), cv.at(e_hi)
        assert prob_hi * q_hi + (1 - prob_hi) * q_lo == pytest.approx(target, abs=1e-12)
        assert prob_hi * a_hi + (1 - prob_hi) * a_lo == pytest.approx(float(env(target)))


def test_ideal_detector_curve():
    env = sm.ideal_detector_curve(0.95, 0.0, 0.9, 0.85, 0.5)
    q_star = 0.5 / 1.5
    assert env(0.0) == pytest.approx(0.95 / 1.5)
    assert env.peak[0] == pytest.approx(q_star)
    assert env(q_star) == pytest.approx((0.95 + 0.5 * 0.85) / 1.5)
    with pytest.raises(ValidationError):
        sm.ideal_detector_curve(0.5, 0.4, 0.9, 0.45, 0.5)


# -- latency limits (oracle 11) -----------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_blocks=st.integers(1, 8), q=unit, q2=unit)
def test_latency_limits_at_both_ends_and_affine_in_q(seed, n_blocks, q, q2):
    rng = np.random.default_rng(seed)
    net, link = random_net(rng, n_blocks), random_link(rng)
    L = net.n_blocks
    assert sm.latency_splitgp(net, 0, q, link) == pytest.approx(
        float(sm.latency_offload(net, link)), rel=1e-12)
    assert sm.latency_splitgp(net, L, q, link) == pytest.approx(
        float(sm.latency_device(net, link)), rel=1e-12)
    assert sm.latency_split(net, 0, link) == pytest.approx(float(sm.latency_offload(net, link)))
    for s in range(1, L):
        t0, t1 = sm.latency_splitgp(net, s, 0.0, link), sm.latency_splitgp(net, s, 1.0, link)
        assert t0 == pytest.approx(float(sm.client_time(net, s, link)))
        assert sm.latency_splitgp(net, s, q, link) == pytest.approx(float(t0 + q * (t1 - t0)))
        # the normalized form is the same number divided by t_dev
        nz = sm.normalized(net, s, link)
        assert sm.latency_normalized(nz.beta, nz.beta_kappa, q2, nz.omega, nz.v) * nz.t_dev \
            == pytest.approx(float(sm.latency_splitgp(net, s, q2, link)), rel=1e-10)
    sch = sm.scheme_latencies(net, min(1, L), link, q, q2)
    assert set(sch) == {"on_device", "full_offload", "split", "multi_exit", "splitgp"}


@settings(max_examples=60, deadline=None)
@given(b1=unit, b2=unit, bk=unit, q=unit, omega=pos, v=pos)
def test_latency_increases_in_beta_iff_q_v_below_one(b1, b2, bk, q, omega, v):
    assume(abs(b1 - b2) > 1e-6 and abs(q * v - 1) > 1e-6)
    t1, t2 = (sm.latency_normalized(b, bk, q, omega, v) for b in (b1, b2))
    assert ((t2 - t1) * (b2 - b1) > 0) == (q * v < 1)


# -- bounds (oracle 12) -------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(beta=unit, bk=st.floats(0, 0.3), q=unit, omega=st.floats(0, 5), omega0=st.floats(0, 5),
       v=st.floats(1e-3, 5), speedup=st.floats(1, 4))
def test_bounds_agree_with_direct_evaluation(beta, bk, q, omega, omega0, v, speedup):
    t = float(sm.latency_normalized(beta, bk, q, omega, v))
    t_off = omega0 + v  # normalized T_off
    bmax, boff = sm.beta_max(q, v, omega, bk), sm.beta_off(q, v, omega, omega0, bk)
    gap_dev, gap_off = 1.0 - t, t_off - t
    assume(abs(gap_dev) > 1e-9 and abs(gap_off) > 1e-9)
    assume(abs(q * v - 1) > 1e-9 or q * v == 1)
    assert bool(bmax.beats(beta)) == (gap_dev > 0)
    assert bool(boff.beats(beta)) == (gap_off > 0)
    if q * v < 1:
        assert bmax.sense == 1 and np.sign(t - 1.0) == np.sign(beta - bmax.value)
    elif q * v > 1:
        assert bmax.sense == -1 and np.sign(t - 1.0) == -np.sign(beta - bmax.value)
    # the speed-up variant: T <= T_dev / S
    bs = sm.beta_max(q, v, omega, bk, speedup)
    assume(abs(t - 1 / speedup) > 1e-9)
    assert bool(bs.beats(beta)) == (t < 1 / speedup)
    assert sm.beta_max(q, v, omega, bk, 1.0).value == bmax.value


def test_never_faster_when_q_v_is_one_and_bound_read_outs():
    b = sm.beta_max(0.5, 2.0, 0.1, 0.0)
    assert b.value == -np.inf and not b.beats(0.0) and not b.beats(1.0)
    q = np.linspace(0, 0.99, 50)
    vals = sm.beta_max(q, 0.8, 0.2, 0.01).value
    assert np.all(np.diff(vals) <= 0)  # non-increasing in q while q v < 1
    # q = 1, v < 1, omega_s >= omega_0: always-offloading split cannot beat full offloading
    assert sm.beta_off(1.0, 0.5, 0.3, 0.3, 0.0).value <= 0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_blocks=st.integers(2, 7))
def test_per_cut_bounds_agree_with_seconds(seed, n_blocks):
    rng = np.random.default_rng(seed)
    net, link = random_net(rng, n_blocks), random_link(rng)
    q = rng.uniform(0, 1, net.n_blocks + 1)
    tab = sm.cut_bounds(net, link, q)
    t = tab["latency"]
    t_dev, t_off = float(sm.latency_device(net, link)), float(sm.latency_offload(net, link))
    clear = (np.abs(t - t_dev) > 1e-9 * t_dev) & (np.abs(t - t_off) > 1e-9 * t_off)
    np.testing.assert_array_equal(tab["device_beating"][clear], (t < t_dev)[clear])
    np.testing.assert_array_equal(tab["offload_beating"][clear], (t < t_off)[clear])
    assert tab["q"][0] == 1 and tab["q"][-1] == 0


def test_admissible_cut_window():
    beta = np.array([0.1, 0.4, 0.7, 0.9])
    acc = np.array([0.6, 0.8, 0.9, 0.95])
    fast = np.array([True, True, True, False])
    i, why = sm.admissible_cut(beta, acc, 0.75, fast, np.ones(4, bool), [3, 2, 1, 0])
    assert i == 2 and why == "ok"
    i, why = sm.admissible_cut(beta, acc, 0.99, fast, np.ones(4, bool), [3, 2, 1, 0])
    assert i is None and why.startswith("accuracy")
    i, why = sm.admissible_cut(beta, acc, 0.92, fast, np.ones(4, bool), [3, 2, 1, 0])
    assert i is None and why.startswith("latency")


# -- queueing (oracle 13 parts) ----------------------------------------------------------------
def test_queue_formulas():
    assert sm.server_sojourn(3.0, 5.0) == pytest.approx(0.5)
    assert sm.server_sojourn(5.0, 5.0) == np.inf
    q, nu, S = np.array([0.2, 0.5, 1.0]), np.array([2.0, 1.0, 0.5]), 0.1
    w_pk = sm.pk_sojourn(q, nu, np.full(3, S))
    np.testing.assert_allclose(w_pk, sm.server_sojourn(sm.offered_load(q, nu), 1 / S))
    net = sm.digits_cnn()
    assert sm.server_rate(net, 2, 1e9) == pytest.approx(1e9 / float(net.flops_server(2)))
    # closed form for identical clients solves the boundary equation
    n_load, mu, c, D = 40.0, 100.0, 0.002, 0.01
    q = sm.identical_q_max(n_load, mu, c, D, rho_max=0.99)
    assert q * c + q / (mu - n_load * q) == pytest.approx(D)
    assert sm.identical_q_max(n_load, mu, 0.0, D, 0.99) == pytest.approx(D * mu / (D * n_load + 1))
    assert sm.identical_q_max(n_load, mu, c, -1.0) == -math.inf


# -- training identities on plain arrays (oracles 1-3) -----------------------------------------
def _states(rng, k):
    return [{"w": rng.normal(size=(3, 2)), "b": rng.normal(size=2)} for _ in range(k)]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 6), lam=unit)
def test_mixing_preserves_the_weighted_mean(seed, k, lam):
    rng = np.random.default_rng(seed)
    states = _states(rng, k)
    alpha = rng.dirichlet(np.ones(k))
    mixed = sm.mix_client_sides(states, alpha, lam)
    bar, bar2 = sm.weighted_average(states, alpha), sm.weighted_average(mixed, alpha)
    for key in bar:
        np.testing.assert_allclose(bar2[key], bar[key], atol=1e-12)
    if lam == 1.0:
        for a, b in zip(states, mixed, strict=True):
            np.testing.assert_array_equal(a["w"], b["w"])


def test_lambda_zero_gives_bitwise_identical_client_sides():
    rng = np.random.default_rng(0)
    mixed = sm.mix_client_sides(_states(rng, 4), [0.1, 0.2, 0.3, 0.4], 0.0)
    for st_ in mixed[1:]:
        assert np.array_equal(st_["w"], mixed[0]["w"]) and np.array_equal(st_["b"], mixed[0]["b"])
    with pytest.raises(ValidationError, match="lam"):
        sm.mix_client_sides(_states(rng, 2), [0.5, 0.5], 1.5)


def _params(rng):
    return {"phi": rng.normal(size=(5, 4)), "kappa": rng.normal(size=(4, 3)),
            "theta": rng.normal(size=(4, 3))}


def test_gamma_extremes_freeze_one_exit():
    rng = np.random.default_rng(1)
    p, x, y = _params(rng), rng.normal(size=(8, 5)), rng.integers(0, 3, 8)
    new, _ = sm.splitgp_step(p, x, y, gamma=1.0, lr=0.5)
    assert np.array_equal(new["theta"], p["theta"]) and not np.array_equal(new["kappa"],
                                                                           p["kappa"])
    new, _ = sm.splitgp_step(p, x, y, gamma=0.0, lr=0.5)
    assert np.array_equal(new["kappa"], p["kappa"]) and not np.array_equal(new["theta"],
                                                                           p["theta"])


def test_splitgp_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    p, x, y, gamma = _params(rng), rng.normal(size=(6, 5)), rng.integers(0, 3, 6), 0.3

    def loss(q):
        _, info = sm.splitgp_step(q, x, y, gamma, 0.0)
        return gamma * info["loss_client"] + (1 - gamma) * info["loss_server"]

    _, info = sm.splitgp_step(p, x, y, gamma, 0.0)
    for key in ("phi", "kappa", "theta"):
        i = (1, 2)
        up, dn = {k: v.copy() for k, v in p.items()}, {k: v.copy() for k, v in p.items()}
        up[key][i] += 1e-6
        dn[key][i] -= 1e-6
        assert info["grads"][key][i] == pytest.approx((loss(up) - loss(dn)) / 2e-6, abs=1e-6)
