"""Deployment-planner estimates: pure numpy/scipy functions of ``docs/kinds/deployment_plan.md``.

Each function states its provenance. Labels: **[peer]** an established public tool
(FedScale, FLSim, FLGo, Green FL, PAPAYA; named each time), **project choice** our own
reconstruction. No formula or threshold comes from the FLINT paper (it only frames the
questions). Units: seconds, bytes, bit/s (inputs in Mbit/s are converted), joules.

Reused, not re-derived: rounds to target come from
:class:`jointopt.models.convergence.ConvergenceModel` (its closed-form trajectory), the
inference queueing factor from :func:`jointopt.models.queueing.mean_sojourn`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from jointopt.models.convergence import ConvergenceModel
from jointopt.models.queueing import mean_sojourn
from scipy import special

Z90 = float(special.ndtri(0.9))
Z95 = float(special.ndtri(0.95))


def brentq(f, lo: float, hi: float, xtol: float = 1e-12, maxiter: int = 300) -> float:
    """Root of ``f`` bracketed by ``[lo, hi]`` (a sign change): Illinois regula falsi, with a
    bisection step whenever the bracket has not halved in two steps. Stands in for
    ``scipy.optimize.brentq`` (the documented choice) so that ``jointopt plan`` does not pay
    scipy.optimize's import time; a test holds it to scipy's roots."""
    a, b = float(lo), float(hi)
    fa, fb = f(a), f(b)
    if fa == 0:
        return a
    if fb == 0:
        return b
    if fa * fb > 0:
        raise ValueError("f(lo) and f(hi) must have opposite signs")
    side, width = 0, b - a
    x = a
    for it in range(maxiter):
        if it % 2 == 0:
            if b - a > 0.5 * width:
                x = 0.5 * (a + b)  # bracket did not halve: bisect
                side = 0
            else:
                x = (a * fb - b * fa) / (fb - fa)
            width = b - a
        else:
            x = (a * fb - b * fa) / (fb - fa)
        if not a < x < b:
            x = 0.5 * (a + b)
        fx = f(x)
        if fx == 0 or b - a <= xtol * max(1.0, abs(x)):
            return x
        if fx * fb > 0:
            b, fb = x, fx
            if side == -1:
                fa *= 0.5
            side = -1
        else:
            a, fa = x, fx
            if side == 1:
                fb *= 0.5
            side = 1
    return x


# -- 4.1 payloads --------------------------------------------------------------------------
def payload_bytes(n_params, n_params_trainable, bytes_per_param_down, bytes_per_param_up,
                  compression_down=1.0, compression_up=1.0, secagg_expansion=1.0,
                  header_bytes=0.0) -> tuple[float, float]:
    """``(S_d, S_u)``: download and upload bytes of one task (project choice).

    ``S_d = n_params*bpp_down/compression_down + header``;
    ``S_u = n_trainable*bpp_up/compression_up*secagg_expansion + header``.
    """
    s_d = n_params * bytes_per_param_down / compression_down + header_bytes
    s_u = n_params_trainable * bytes_per_param_up / compression_up * secagg_expansion + header_bytes
    return float(s_d), float(s_u)


def transfer_seconds(n_bytes, mbps):
    """Seconds to move ``n_bytes`` at ``mbps`` Mbit/s (1 MB at 8 Mbit/s = 1 s)."""
    return 8.0 * np.asarray(n_bytes, dtype=float) / (np.asarray(mbps, dtype=float) * 1e6)


# -- 4.2 / 4.3 per-task time and outcome ---------------------------------------------------
@dataclass(frozen=True)
class Fleet:
    """Per-class arrays the task sampler needs (length = number of classes)."""

    share: np.ndarray
    train_s_per_sample: np.ndarray
    spread_sigma: np.ndarray
    bw_down_mbps: np.ndarray
    bw_up_mbps: np.ndarray
    bw_sigma: np.ndarray
    crash_rate: np.ndarray
    p_cpu_w: np.ndarray
    p_rx_w: np.ndarray
    p_tx_w: np.ndarray


@dataclass(frozen=True)
class TaskDraws:
    """One Monte-Carlo batch of tasks (any array shape), stage durations and outcomes."""

    cls: np.ndarray
    t_dn: np.ndarray
    t_cmp: np.ndarray
    t_up: np.ndarray
    T: np.ndarray          # full task time t_ovh + dn + cmp + up
    end: np.ndarray        # occupancy O: T on success, else first of dropout/crash/timeout
    success: np.ndarray
    t_ovh: float

    def spent(self, until=None):
        """Seconds actually spent in (download, compute, upload) up to ``until`` (or end)."""
        stop = self.end if until is None else np.minimum(self.end, until)
        s0 = self.t_ovh
        s1 = s0 + self.t_dn
        s2 = s1 + self.t_cmp
        dn = np.clip(stop - s0, 0.0, self.t_dn)
        cmp_ = np.clip(stop - s1, 0.0, self.t_cmp)
        up = np.clip(stop - s2, 0.0, self.t_up)
        return dn, cmp_, up


def draw_tasks(rng: np.random.Generator, shape, fleet: Fleet, s_d: float, s_u: float,
               work: np.ndarray | float, *, t_ovh: float, timeout: float,
               dwell_mean: float) -> TaskDraws:
    """Draw tasks. [peer] FedScale structure (compute + download + upload with
    log-normal device and link spread); mean-one speed factor, split links, overhead,
    exponential dwell dropout and crash inside compute: **project choice**.

    ``work``: local samples per task (scalar or an array of ``shape``).
    """
    cum = np.cumsum(fleet.share)
    cls = np.minimum(np.searchsorted(cum / cum[-1], rng.random(shape), side="right"),
                     len(fleet.share) - 1)
    sig = fleet.spread_sigma[cls]
    z = np.exp(sig * rng.standard_normal(shape) - 0.5 * sig * sig)
    bws = fleet.bw_sigma[cls]
    b_dn = fleet.bw_down_mbps[cls] * np.exp(bws * rng.standard_normal(shape))
    b_up = fleet.bw_up_mbps[cls] * np.exp(bws * rng.standard_normal(shape))
    t_dn = transfer_seconds(s_d, b_dn)
    t_cmp = np.asarray(work, dtype=float) * fleet.train_s_per_sample[cls] * z
    t_up = transfer_seconds(s_u, b_up)
    T = t_ovh + t_dn + t_cmp + t_up
    drop = rng.exponential(dwell_mean, size=shape)
    crashed = rng.random(shape) < fleet.crash_rate[cls]
    crash_t = np.where(crashed, t_ovh + t_dn + rng.random(shape) * t_cmp, np.inf)
    end = np.minimum(np.minimum(T, timeout), np.minimum(drop, crash_t))
    success = (T <= timeout) & (drop > T) & ~crashed
    end = np.where(success, T, end)
    return TaskDraws(cls, t_dn, t_cmp, t_up, T, end, success, float(t_ovh))


def success_probability_closed_form(T: np.ndarray, timeout: float, dwell_mean: float) -> float:
    """``E[1{T <= timeout} exp(-T/dwell)]``: success probability without crashes."""
    T = np.asarray(T, dtype=float)
    return float(np.mean((T <= timeout) * np.exp(-T / dwell_mean)))


def task_energy_j(p_cpu, p_rx, p_tx, dn_s, cmp_s, up_s):
    """Green FL device energy per task: ``p_cpu*T'_cmp + p_rx*T'_dn + p_tx*T'_up`` ([peer]
    Green FL power-profile method)."""
    return p_cpu * cmp_s + p_rx * dn_s + p_tx * up_s


def current_to_power_w(current_ma, voltage_v=3.8):
    """``P = I/1000 * V`` ([peer] Green FL; 3.8 V default of the defaults register)."""
    return np.asarray(current_ma, dtype=float) / 1000.0 * voltage_v


# -- 4.4 sync rounds -----------------------------------------------------------------------
def _binom_at_least(K: int, C: int, p: float) -> float:
    """``P(Binomial(C, p) >= K)`` (``binom.sf(K-1, C, p)``, via ``scipy.special.bdtrc``)."""
    return float(special.bdtrc(K - 1, C, p))


def round_failure_binomial(K: int, C: int, p_success: float) -> float:
    """``P(Binomial(C, p) < K)``: the probability that a sync attempt with C selected tasks
    closes with fewer than K results (exact: selected tasks are independent draws)."""
    return float(special.bdtr(K - 1, C, p_success))


def success_lower_bound(successes: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson lower bound on a success probability from ``successes`` of
    ``n`` Monte-Carlo draws: the true value is at least this with probability ``confidence``
    (exact binomial, ``betaincinv(k, n-k+1, 1-confidence)``). **Project choice**: the
    over-selection count is solved at this bound, so that the round-failure limit holds with
    the stated confidence whatever the Monte-Carlo noise of the estimate."""
    k, n = int(successes), int(n)
    if k <= 0 or n <= 0:
        return 0.0
    return float(special.betaincinv(k, n - k + 1, 1.0 - confidence))


def overselection(K: int, p_success: float, delta: float, c_max: int = 10**7) -> int:
    """``C* = min{C >= K : P(Bin(C, p) >= K) >= 1 - delta}`` ([peer] PAPAYA/FedScale
    over-selection; solve: project choice). ``P(Bin >= K)`` grows with C, so C steps upward
    from K (``binom.sf``, here ``scipy.special.bdtrc``) with doubling steps, then bisects to
    the smallest passing C. Returns ``-1`` if no C up to ``c_max`` suffices (p = 0)."""
    if p_success <= 0.0:
        return -1
    ok = lambda c: _binom_at_least(K, c, p_success) >= 1.0 - delta  # noqa: E731
    lo, step = int(K) - 1, 1  # lo: largest C known to fail (K - 1 cannot host K results)
    C = int(K)
    while not ok(C):
        lo = C
        C += step
        step *= 2
        if C > c_max:
            return -1
    while C - lo > 1:  # invariant: ok(C), not ok(lo) (or lo = K - 1)
        mid = (lo + C) // 2
        if ok(mid):
            C = mid
        else:
            lo = mid
    return C


@dataclass(frozen=True)
class SyncRounds:
    """Monte-Carlo summary of sync rounds (per effective round = failed attempts + success)."""

    q_fail: float
    round_times: np.ndarray       # effective round times (incl. retries and T_agg)
    mean: float
    var: float
    p50: float
    p90: float
    tasks_started: float          # per effective round
    uploads: float
    device_s: float
    bytes_down: float
    bytes_up: float
    energy_dev_j: float
    energy_stage_j: tuple[float, float, float]  # (download, compute, upload)
    cpu_s_by_class: np.ndarray    # mean compute seconds per task, by class
    bytes_by_class: np.ndarray    # mean bytes per started task, by class
    energy_by_class: np.ndarray   # mean device J per started task, by class
    p_success: float


def _attempt_stats(d: TaskDraws, K: int, timeout: float, s_d: float, s_u: float, fleet: Fleet):
    """Per attempt (rows): ok flag, duration, device-s, bytes, energy, uploads."""
    st = np.where(d.success, d.T, np.inf)
    kth = np.partition(st, K - 1, axis=1)[:, K - 1]
    ok = np.isfinite(kth)
    fail_t = np.minimum(timeout, d.end.max(axis=1))
    dur = np.where(ok, kth, fail_t)
    stop = dur[:, None]
    dn, cmp_, up = d.spent(stop)
    occupied = np.minimum(d.end, stop)
    uploads_full = d.success & (d.T <= stop)
    frac_up = np.where(d.t_up > 0, up / np.where(d.t_up > 0, d.t_up, 1.0), 0.0)
    frac_up = np.where(uploads_full, 1.0, frac_up)
    e_dn, e_cmp, e_up = (fleet.p_rx_w[d.cls] * dn, fleet.p_cpu_w[d.cls] * cmp_,
                         fleet.p_tx_w[d.cls] * up)
    return dict(ok=ok, dur=dur, dev_s=occupied.sum(1), bytes_down=d.cls.shape[1] * s_d,
                bytes_up=(frac_up * s_u).sum(1), uploads=uploads_full.sum(1),
                e_dn=e_dn.sum(1), e_cmp=e_cmp.sum(1), e_up=e_up.sum(1), cmp=cmp_,
                frac_up=frac_up, e_all=e_dn + e_cmp + e_up)


def sync_rounds(rng: np.random.Generator, n_mc: int, K: int, C: int, fleet: Fleet, s_d: float,
                s_u: float, work_sampler, *, t_ovh: float, timeout: float, dwell_mean: float,
                t_agg: float, chunk_cells: int = 2_000_000) -> SyncRounds:
    """Monte-Carlo sync rounds. [peer] FedScale over-commitment (keep the K fastest),
    FLSim per-client timeout; retries, aborts at ``T_(K)`` and the charging rules: project
    choice. ``work_sampler(rng, shape)`` gives local samples per task."""
    rows = max(1, chunk_cells // C)
    parts = []
    n_cls = len(fleet.share)
    cmp_sum = np.zeros(n_cls)
    byt_sum = np.zeros(n_cls)
    e_sum = np.zeros(n_cls)
    cnt = np.zeros(n_cls)
    succ = 0
    total = 0
    done = 0
    while done < n_mc:
        n = min(rows, n_mc - done)
        d = draw_tasks(rng, (n, C), fleet, s_d, s_u, work_sampler(rng, (n, C)), t_ovh=t_ovh,
                       timeout=timeout, dwell_mean=dwell_mean)
        a = _attempt_stats(d, K, timeout, s_d, s_u, fleet)
        parts.append({k: a[k] for k in ("ok", "dur", "dev_s", "bytes_up", "uploads", "e_dn",
                                         "e_cmp", "e_up")})
        c = d.cls.ravel()
        cnt += np.bincount(c, minlength=n_cls)
        cmp_sum += np.bincount(c, weights=d.t_cmp.ravel(), minlength=n_cls)
        byt_sum += np.bincount(c, weights=s_d + (a["frac_up"] * s_u).ravel(), minlength=n_cls)
        e_sum += np.bincount(c, weights=a["e_all"].ravel(), minlength=n_cls)
        succ += int(d.success.sum())
        total += d.success.size
        done += n
    P = {k: np.concatenate([p[k] for p in parts]) if k != "bytes_down" else None
         for k in parts[0]}
    ok = P["ok"]
    q_fail = float(1.0 - ok.mean())
    if not ok.any():
        nan = float("inf")
        return SyncRounds(1.0, np.full(n_mc, np.inf), nan, nan, nan, nan, nan, 0.0, nan, nan,
                          0.0, nan, (nan, nan, nan), cmp_sum / np.maximum(cnt, 1),
                          byt_sum / np.maximum(cnt, 1), e_sum / np.maximum(cnt, 1),
                          succ / max(total, 1))
    ok_dur = P["dur"][ok]
    fail_dur = P["dur"][~ok]
    # effective round: F ~ Geometric failures, each a resampled failed attempt
    n_fail = rng.geometric(1.0 - q_fail, size=n_mc) - 1 if q_fail > 0 else np.zeros(n_mc, int)
    eff = rng.choice(ok_dur, size=n_mc)
    if q_fail > 0:
        for j in range(1, int(n_fail.max()) + 1):
            mask = n_fail >= j
            eff[mask] += rng.choice(fail_dur, size=int(mask.sum()))
    eff = eff + t_agg
    ef = q_fail / (1.0 - q_fail)   # expected failed attempts per round

    def per_round(x):
        good = float(x[ok].mean())
        bad = float(x[~ok].mean()) if (~ok).any() else 0.0
        return good + ef * bad

    e_dn, e_cmp, e_up = per_round(P["e_dn"]), per_round(P["e_cmp"]), per_round(P["e_up"])
    return SyncRounds(
        q_fail=q_fail, round_times=eff, mean=float(ok_dur.mean() + ef * (fail_dur.mean()
                                                   if fail_dur.size else 0.0) + t_agg),
        var=float(eff.var()), p50=float(np.percentile(eff, 50)),
        p90=float(np.percentile(eff, 90)), tasks_started=C * (1.0 + ef),
        uploads=per_round(P["uploads"].astype(float)), device_s=per_round(P["dev_s"]),
        bytes_down=C * (1.0 + ef) * s_d, bytes_up=per_round(P["bytes_up"]),
        energy_dev_j=e_dn + e_cmp + e_up, energy_stage_j=(e_dn, e_cmp, e_up),
        cpu_s_by_class=cmp_sum / np.maximum(cnt, 1), bytes_by_class=byt_sum / np.maximum(cnt, 1),
        energy_by_class=e_sum / np.maximum(cnt, 1), p_success=succ / max(total, 1))


def active_time(rng: np.random.Generator, R: np.ndarray, mean: float, var: float,
                round_times: np.ndarray) -> np.ndarray:
    """Active training time ``A`` for each draw of ``R`` rounds: normal approximation
    ``N(R*mean, R*var)`` for ``R >= 30``, else the sum of R resampled round times."""
    R = np.asarray(R, dtype=float)
    out = R * mean + np.sqrt(R * var) * rng.standard_normal(R.shape)
    small = R < 30
    for i in np.flatnonzero(small):
        out[i] = rng.choice(round_times, size=int(max(R[i], 1))).sum()
    return np.maximum(out, 0.0)


# -- 4.5 async -----------------------------------------------------------------------------
@dataclass(frozen=True)
class AsyncRate:
    lam: float          # successful updates per second
    rho: float          # server steps per second
    discard: float      # discarded share of successes
    lam_acc: float      # accepted updates per second
    staleness: float    # mean staleness (server steps during flight)
    weight: float       # mean FedBuff weight 1/(1+s)


def async_rate(C: float, p_success: float, mean_occupancy: float, T_success: np.ndarray, K: int,
               max_staleness: int | None) -> AsyncRate:
    """FedBuff-style async throughput. Little's law ``lam = C p / E[O]``; the step rate
    solves ``rho = lam (1 - d(rho)) / K`` with ``d(rho) = P(rho T > s_max + 0.5 | success)``
    (brentq). [peer] FedScale async / PAPAYA; formulas: project choice. Staleness of a
    success is ``rho*T`` (deterministic approximation); weight ``1/(1+s)`` ([peer] FedBuff).
    """
    T = np.asarray(T_success, dtype=float)
    if C <= 0 or p_success <= 0 or T.size == 0:
        return AsyncRate(0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    lam = C * p_success / mean_occupancy

    def d(rho):
        if max_staleness is None:
            return 0.0
        return float(np.mean(rho * T > max_staleness + 0.5))

    hi = lam / K
    f = lambda rho: rho - lam * (1.0 - d(rho)) / K  # noqa: E731
    if max_staleness is None or f(hi) <= 0:
        rho = hi
    else:
        rho = brentq(f, 0.0, hi, xtol=1e-13)
    disc = d(rho)
    s = rho * T
    keep = s <= max_staleness + 0.5 if max_staleness is not None else np.ones(T.shape, bool)
    weight = float(np.mean(1.0 / (1.0 + s[keep]))) if keep.any() else 1.0
    return AsyncRate(lam, rho, disc, lam * (1.0 - disc), float(s.mean()), weight)


# -- 4.6 windows and calendar --------------------------------------------------------------
def hourly_pool(n_devices: float, static_eligibility: float, region_share, utc_offset_h,
                availability, coverage: float = 1.0) -> np.ndarray:
    """``Pool(h)`` for UTC hour h (project choice): eligible devices trainable at h."""
    share = np.asarray(region_share, dtype=float)
    avail = np.asarray(availability, dtype=float)          # (regions, 24) local hours
    h = np.arange(24)
    local = (h[None, :] + np.asarray(utc_offset_h)[:, None]) % 24
    frac = (share[:, None] * np.take_along_axis(avail, local, axis=1)).sum(0)
    return n_devices * static_eligibility * coverage * frac


def region_weights(region_share, utc_offset_h, availability, windows) -> np.ndarray:
    """Each region's share of participation: its pool share over the allowed hours."""
    share = np.asarray(region_share, dtype=float)
    avail = np.asarray(availability, dtype=float)
    h = np.asarray(sorted(set(windows)))
    local = (h[None, :] + np.asarray(utc_offset_h)[:, None]) % 24
    per = share * np.take_along_axis(avail, local, axis=1).sum(1)
    return per / per.sum() if per.sum() > 0 else share


def sync_days(A_s, n_ok_hours: int):
    """Calendar days of sync training: ``A / (3600 |H_ok|)``."""
    if n_ok_hours == 0:
        return np.full(np.shape(A_s), np.inf)
    return np.asarray(A_s, dtype=float) / (3600.0 * n_ok_hours)


def clock_days(A_s, ok_hours) -> np.ndarray:
    """Wall-clock days from UTC 0 until ``A_s`` seconds of training have run in the hours
    that can host the plan (``ok_hours``: 24 booleans, training runs only inside them).
    The same calendar model as :func:`sync_days`, read on a clock that starts at UTC 0
    (the discrete-event simulation's clock); for a long campaign the two differ by less
    than one day."""
    ok = np.flatnonzero(np.asarray(ok_hours, dtype=bool))
    A = np.asarray(A_s, dtype=float)
    if ok.size == 0:
        return np.full(A.shape, np.inf)
    full, rest = np.divmod(A, 3600.0 * ok.size)
    idx = np.minimum((rest // 3600).astype(int), ok.size - 1)
    last = ok[idx] * 3600.0 + (rest - idx * 3600.0)
    return full + last / 86400.0


def async_days(U, accepted_per_hour: np.ndarray):
    """Days until cumulative accepted updates reach ``U``, stepping hour by hour from UTC 0.
    ``accepted_per_hour``: 24 values ``3600*lam_acc(h)``. Within the last hour the
    rate is uniform (linear interpolation)."""
    rate = np.asarray(accepted_per_hour, dtype=float)
    per_day = rate.sum()
    U = np.asarray(U, dtype=float)
    if per_day <= 0:
        return np.full(U.shape, np.inf)
    full = np.floor(U / per_day)
    rest = U - full * per_day
    cum = np.concatenate([[0.0], np.cumsum(rate)])
    idx = np.clip(np.searchsorted(cum, rest, side="left") - 1, 0, 23)
    frac_h = np.where(rate[idx] > 0, (rest - cum[idx]) / np.where(rate[idx] > 0, rate[idx], 1),
                      0.0)
    hours = idx + np.clip(frac_h, 0.0, 1.0)
    hours = np.where(rest <= 0, 0.0, hours)
    return full + hours / 24.0


# -- convergence adapter ---------------------------------------------------------------------
def rounds_to_target(model: ConvergenceModel, K, proxy_clients: int, error0: float,
                     target: float) -> np.ndarray:
    """Rounds until the fitted recursion of :mod:`jointopt.models.convergence` reaches
    ``target`` with K of ``proxy_clients`` equal-weight clients per round (``q = K/N``).
    Uses the recursion's closed-form trajectory; ``inf`` where the target is below the
    fixed point. Project choice (adapter between the planner and the convergence model)."""
    K = np.atleast_1d(np.asarray(K, dtype=float))
    N = int(proxy_clients)
    out = np.empty(K.shape)
    p = np.full(N, 1.0 / N)
    for i, k in enumerate(K):
        q = np.full(N, min(k / N, 1.0))
        fp = model.fixed_point(q, p)
        if target <= fp:
            out[i] = np.inf
            continue
        t = math.log((target - fp) / (error0 - fp)) / math.log(model.a)
        R = max(1.0, math.ceil(t - 1e-9))
        while model.trajectory(error0, q, p, int(R))[-1] > target:  # float safety
            R += 1
        out[i] = R
    return out


def rounds_spread(model: ConvergenceModel, runs_K, runs_R, proxy_clients, error0, target) -> float:
    """Log-normal sigma of observed/predicted rounds across calibration runs (project choice)."""
    pred = rounds_to_target(model, runs_K, proxy_clients, error0, target)
    r = np.log(np.asarray(runs_R, dtype=float) / pred)
    return float(np.sqrt(np.mean(r * r))) if r.size else 0.0


# -- 4.8 population burden -----------------------------------------------------------------
def burden(M: float, days: float, e_day: float) -> dict:
    """Mean tasks per eligible device-day ``b = M/days/E_day``, Poisson P(>=2) and P99."""
    b = M / days / e_day if days > 0 and np.isfinite(days) else float("inf")
    if not np.isfinite(b):
        return {"b": b, "p_ge2": 1.0, "p99": float("inf")}
    k = 0
    while special.pdtr(k, b) < 0.99:
        k += 1
    return {"b": float(b), "p_ge2": float(special.pdtrc(1, b)), "p99": float(k)}


def unique_participants(M: float, e_camp: float) -> float:
    """``E_camp (1 - exp(-M/E_camp))``: expected distinct devices after M uniform picks."""
    return float(e_camp * -np.expm1(-M / e_camp))


# -- 4.10 energy, carbon; 4.11 cost ------------------------------------------------------------
def network_energy_j(net_j_per_bit: float, bytes_total: float) -> float:
    """``E_net = net_j_per_bit * 8 * bytes`` ([peer] Green FL per-bit network energy)."""
    return float(net_j_per_bit * 8.0 * bytes_total)


def server_energy_j(power_w: float, n_instances: int, pue: float, days: float,
                    hours_per_day: float = 24.0) -> float:
    """Server energy over its reservation: ``power * n * PUE * 3600 * hours_per_day * days``.
    ``hours_per_day`` is 24 for a server reserved around the clock and the number of
    training-window hours for one reserved only while training may run (project choice)."""
    return float(power_w * n_instances * pue * 3600.0 * hours_per_day * days)


def co2e_kg(e_device_net_j: float, grid_g_per_kwh: float, e_server_j: float,
            dc_g_per_kwh: float) -> float:
    """``(E_dev+E_net)/3.6e6 * g/1000 + E_srv/3.6e6 * g_dc/1000`` ([peer] Green FL)."""
    return float(e_device_net_j / 3.6e6 * grid_g_per_kwh / 1000.0
                 + e_server_j / 3.6e6 * dc_g_per_kwh / 1000.0)


def carbon_proxy_alpha(co2e_kg, x) -> float:
    """Least squares through the origin of ``CO2e = alpha * x`` with ``x = C*R`` (sync) or
    ``C*hours`` (async) over measured runs ([peer] Green FL carbon proxy)."""
    y = np.asarray(co2e_kg, dtype=float)
    x = np.asarray(x, dtype=float)
    return float(np.dot(x, y) / np.dot(x, x))


def cloud_usd(*, instance_hour_usd, n_instances, days, cpu_hour_usd, cpu_h, egress_gb_usd,
              gb_down, ingress_gb_usd, gb_up, storage_gb_month_usd, gb_month,
              cloud_infer_per_1k_usd, q_cloud, backbone_gb_usd=0.0, gb_backbone=0.0,
              hours_per_day=24.0) -> dict:
    """Cloud spend by line (project choice); ``total`` is the sum. Instances are billed
    for their reservation, ``hours_per_day`` hours on each of ``days`` (as
    :func:`server_energy_j`)."""
    lines = {
        "instances": instance_hour_usd * n_instances * hours_per_day * days,
        "cpu": cpu_hour_usd * cpu_h,
        "egress": egress_gb_usd * gb_down,
        "ingress": ingress_gb_usd * gb_up,
        "storage": storage_gb_month_usd * gb_month,
        "backbone": backbone_gb_usd * gb_backbone,
        "cloud_inference": cloud_infer_per_1k_usd * q_cloud / 1000.0,
    }
    lines = {k: float(v) for k, v in lines.items()}
    lines["total"] = float(sum(lines.values()))
    return lines


# -- 4.12 inference latency ------------------------------------------------------------------
def lognormal_from_quantiles(p50: float, p95: float) -> tuple[float, float]:
    """``(mu, sigma)`` of a log-normal with the given median and P95."""
    mu = math.log(p50)
    return mu, (math.log(p95) - mu) / Z95


def mm1_factor(lam, mu):
    """Latency inflation by queueing: ``1/(1 - lam/mu)`` = mean sojourn over service time,
    from :func:`jointopt.models.queueing.mean_sojourn` (tagged assumed)."""
    mu = np.asarray(mu, dtype=float)
    return np.asarray(mean_sojourn(lam, mu)) * mu


def fleet_latency_p95(p50_ms, p95_ms, overlap, interference, factor, weights,
                      level: float = 0.95) -> tuple[float, np.ndarray]:
    """Fleet P95 solving ``sum_c v_c F_mix,c(x) = level`` (brentq) and per-class P95.
    ``F_mix,c(x) = (1-o) F_c(x/f) + o F_c(x/(f(1+i)))`` with ``f`` the queueing factor."""
    p50 = np.asarray(p50_ms, float)
    p95 = np.asarray(p95_ms, float)
    o = np.asarray(overlap, float)
    i = np.asarray(interference, float)
    f = np.asarray(factor, float)
    v = np.asarray(weights, float)
    v = v / v.sum()
    mus = np.log(p50)
    sig = (np.log(p95) - mus) / Z95

    def cdf(x, c=None):
        sl = slice(None) if c is None else slice(c, c + 1)
        a = special.ndtr((np.log(x / f[sl]) - mus[sl]) / sig[sl])
        b = special.ndtr((np.log(x / (f[sl] * (1 + i[sl]))) - mus[sl]) / sig[sl])
        return (1 - o[sl]) * a + o[sl] * b

    hi = float(np.max(p95 * f * (1 + i))) * 10 + 1.0
    fleet = brentq(lambda x: float((v * cdf(x)).sum()) - level, 1e-9, hi)
    per = np.array([brentq(lambda x, c=c: float(cdf(x, c)[0]) - level, 1e-9, hi)
                    for c in range(len(p50))])
    return float(fleet), per


__all__ = [
    "AsyncRate", "Fleet", "SyncRounds", "TaskDraws", "active_time", "async_days", "async_rate",
    "burden", "carbon_proxy_alpha", "clock_days", "cloud_usd", "co2e_kg", "current_to_power_w",
    "draw_tasks", "fleet_latency_p95", "hourly_pool", "lognormal_from_quantiles", "mm1_factor",
    "network_energy_j", "overselection", "payload_bytes", "region_weights",
    "round_failure_binomial", "rounds_spread", "rounds_to_target", "server_energy_j",
    "success_lower_bound", "success_probability_closed_form", "sync_days", "sync_rounds",
    "task_energy_j", "transfer_seconds", "unique_participants",
]
