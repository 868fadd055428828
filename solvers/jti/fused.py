"""The fast path's sweep, compiled: one loop over clients per pass instead of hundreds of
numpy array passes.

Same algorithm, ties and tolerances as the numpy driver in :mod:`.round`
(:meth:`RoundSolver._ascend` with :class:`FastBlocks`), written as scalar per-client
functions compiled by numba. A sweep is three passes over the clients
and two over the few near their cap:

1. the q-block, accumulating ``sum p^2 (1 - q) / q`` for ``K_{t+1}``;
2. the d- and mu-blocks, marking the clients near their cap, summing the exchange's ``G``
   and the objective's sums at the new point;
3. the exchange proposal of each client near its cap (its cap multiplier by a safeguarded
   Newton iteration on ``log(price)``, warm-started from the last root), with the line
   search's sums at steps 1, 1/2, 1/4 of the proposal on the way; the other clients do
   not move, so their sums are those of pass 2;
4. only when none of those steps improves, the sums at 1/8 ... 1/256 (near clients only,
   :func:`late_sums`);
5. the chosen step, applied to the near clients only.

The training value ``G`` (a sum over clients) of the next sweep is summed on the way, in
passes 2 and 3; only the first sweep needs a pass of its own for it.

The objective is separable given ``K_{t+1}``: with ``K_{t+1} = a K + b S + c`` and
``S = sum p^2 (1 - q)/q``, it is ``sum_n A_n - K_{t+1} sum_n B_n``, so each candidate point
costs one pass.

Every pass works on a range of clients (``lo, hi``) and releases the GIL, so that
:class:`Split` can run the ranges of a large instance in threads and add their sums up in
a fixed order (the same answer whatever thread ran which range).

``numba`` is a dependency of jointopt; functions are compiled on first use and cached on
disk (``cache=True``), so only the first run on a machine pays the compile. Tests hold
this path to the numpy driver on random instances.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
from numba import njit

_JIT = {"cache": True, "error_model": "numpy", "fastmath": False, "nogil": True}

_INF = np.inf
_TINY = 1e-300  # as in round.py: "0+" in the multiplier search


@njit(**_JIT)
def _q_cf(G, cost, p2, qmin, ub):
    q = np.sqrt(G * p2 / cost)
    if q != q:
        q = _INF
    return min(max(q, qmin), ub)


@njit(**_JIT)
def _mu_cf(w, cost, lam, tau, dl, mlo, ub):
    mu = lam + np.log(w * tau / cost) / tau
    if mu != mu:
        mu = _INF if (cost == 0.0 and (w >= 0.0 or not dl)) else -_INF
    return min(max(mu, mlo), ub)


@njit(**_JIT)
def _ratio(num, den):
    return num / den if den > 0.0 else _INF


@njit(**_JIT)
def _on_time(mu, lam, tau, dl):
    return 1.0 - np.exp(-(mu - lam) * tau) if dl else 1.0


@njit(**_JIT)
def _smooth(pi, G, ctr, cinf, p2, qmin, w, lam, tau, dl, mlo, mhi):
    """``(q, mu, s, ds/dlog pi)`` of one client at price ``pi`` (``_SmoothUse.at``)."""
    q = _q_cf(G, pi * ctr, p2, qmin, 1.0)
    mu = _mu_cf(w, pi * cinf, lam, tau, dl, mlo, mhi)
    slope = 0.0
    if qmin < q < 1.0:
        slope -= 0.5 * ctr * q
    if mlo < mu < mhi and dl:
        slope -= cinf / tau
    return q, mu, ctr * q + cinf * mu, slope


@njit(**_JIT)
def _root(t, pr, tl, guess, pr_s, pr_d, G, ctr, cinf, p2, qmin, w, lam, tau, dl, mlo, mhi,
          kink):
    """Smallest ``pi >= pr`` with ``s(pi) <= t + tl`` (``_SmoothUse.root``, one client).

    Same steps as the numpy version, with ``s(pr)`` and its slope given (``pr_s``,
    ``pr_d``: the caller has them). ``s`` is evaluated once per distinct point (the
    bracket ends and the guess are remembered with their values and slopes), and the
    clip point is not evaluated when a usable guess lies past it (the guess then closes
    or raises the bracket by itself)."""
    if not np.isfinite(t):
        return pr
    lo_s, lo_d = pr_s, pr_d
    if lo_s - t <= tl:
        return pr
    lo = pr
    if pr <= 0.0:
        lo = _TINY
        _, _, lo_s, lo_d = _smooth(lo, G, ctr, cinf, p2, qmin, w, lam, tau, dl, mlo, mhi)
        if lo_s - t <= tl:
            return _TINY
    cand = max(lo, kink if np.isfinite(kink) else 0.0)
    if cand > lo and not (np.isfinite(guess) and guess >= cand):
        _, _, c_s, c_d = _smooth(cand, G, ctr, cinf, p2, qmin, w, lam, tau, dl, mlo, mhi)
        if c_s - t > tl:
            lo, lo_s, lo_d = cand, c_s, c_d
    usable = np.isfinite(guess) and guess > lo
    hi = max(2.0 * lo, 1.0)
    hi_s, hi_d, hi_known = 0.0, 0.0, False
    if usable:
        _, _, g_s, g_d = _smooth(guess, G, ctr, cinf, p2, qmin, w, lam, tau, dl, mlo, mhi)
        if g_s - t <= tl:
            hi, hi_s, hi_d, hi_known = guess, g_s, g_d, True
        else:
            lo, lo_s, lo_d = guess, g_s, g_d
    for _ in range(200):
        if not hi_known:
            _, _, hi_s, hi_d = _smooth(hi, G, ctr, cinf, p2, qmin, w, lam, tau, dl, mlo, mhi)
        hi_known = False
        if hi_s - t <= tl:
            break
        lo, lo_s, lo_d = hi, hi_s, hi_d
        hi = 4.0 * hi
    x = guess if (usable and lo < guess <= hi) else lo
    # the first Newton point is a bracket end (or the guess, then one of them): known
    if x == hi:
        s, slope = hi_s, hi_d
    else:
        s, slope = lo_s, lo_d
    for it in range(100):
        if it > 0:
            _, _, s, slope = _smooth(x, G, ctr, cinf, p2, qmin, w, lam, tau, dl, mlo, mhi)
        f = s - t
        if f > tl:
            lo = x
        else:
            hi = x
        if abs(f) <= tl or hi - lo <= 1e-13 * hi or hi <= 1e-12:
            return hi
        newton = x * np.exp(-f / slope)
        if slope < 0.0 and lo < newton < hi and np.isfinite(newton):
            x = newton
        else:
            x = np.sqrt(lo * hi) if lo > 0.0 else 0.5 * (lo + hi)
    return hi


@njit(**_JIT)
def training_sum(lam, mu, d, tau, dl, horizon, P, stale, lo, hi):
    """``sum lambda (P(mu) d + H (1 + d))``: ``G`` up to the factor ``V kappa b``.

    ``P`` holds each client's on-time fraction; it is recomputed where ``stale``."""
    acc = 0.0
    for i in range(lo, hi):
        if stale[i]:
            P[i] = _on_time(mu[i], lam[i], tau[i], dl[i])
        acc += lam[i] * (P[i] * d[i] + horizon * (1.0 + d[i]))
    return acc


@njit(**_JIT)
def q_pass(G, Z, ctr, cdl, cinf, cap, p2, qmin, q, d, mu, lo, hi):
    """q-block in place (with its tie rule); returns ``sum p^2 (1 - q) / q``."""
    S = 0.0
    for i in range(lo, hi):
        use = ctr[i] * q[i] + cdl[i] * d[i] + cinf[i] * mu[i]
        ub = min(1.0, _ratio(max(cap[i] - (use - ctr[i] * q[i]), 0.0), ctr[i]))
        qi = _q_cf(G, Z[i] * ctr[i], p2[i], qmin[i], ub)
        if G == 0.0 and Z[i] * ctr[i] == 0.0:
            qi = max(ub, qmin[i])
        q[i] = qi
        S += p2[i] * (1.0 - qi) / qi
    return S


@njit(**_JIT)
def dmu_pass(V, alpha, kappa, K1, horizon, Z, lam, tau, dl, ctr, cdl, cinf, cap, cap_f,
             budget, p2, qmin, mlo, mhi, ebar, q, d, mu, P, near, lo, hi):
    """d- and mu-blocks in place (tie rules included), ``P`` updated to the new ``mu``;
    marks ``near`` (use within 1e-4 of the cap) and returns whether any client is near,
    and the objective's sums and the training sum at the new point (see
    :func:`step_sums`): row 0 over the clients not near their cap, row 1 over the near
    ones (columns A, B, S, feasible, T)."""
    anynear = False
    sums = np.zeros((2, 5))
    sums[:, 3] = 1.0
    for i in range(lo, hi):
        beta = V * lam[i] * kappa * (P[i] + horizon) * (ebar[i] - K1) - Z[i] * cdl[i]
        use = ctr[i] * q[i] + cdl[i] * d[i] + cinf[i] * mu[i]
        ub = min(1.0, _ratio(max(cap[i] - (use - cdl[i] * d[i]), 0.0), cdl[i]))
        di = ub if beta > 0.0 else 0.0
        if beta == 0.0:
            di = 0.0
        d[i] = di
        w = V * lam[i] * (alpha - kappa * (di * K1 + (1.0 - di) * ebar[i]))
        use = ctr[i] * q[i] + cdl[i] * di + cinf[i] * mu[i]
        ub = min(mhi[i], _ratio(max(cap[i] - (use - cinf[i] * mu[i]), 0.0), cinf[i]))
        mi = _mu_cf(w, Z[i] * cinf[i], lam[i], tau[i], dl[i], mlo[i], ub)
        if Z[i] * cinf[i] == 0.0 and (w == 0.0 or not dl[i]):
            mi = max(ub, mlo[i])
        if mi != mu[i]:  # else P[i] already holds P(mu)
            P[i] = _on_time(mi, lam[i], tau[i], dl[i])
        mu[i] = mi
        use = ctr[i] * q[i] + cdl[i] * di + cinf[i] * mi
        nr = use >= cap[i] - 1e-4 * max(1.0, cap_f[i])
        near[i] = nr
        anynear = anynear or nr
        t, cf, sv, ts, fine = _terms(0.0, V, alpha, kappa, horizon, Z[i], lam[i], tau[i], dl[i],
                                 ctr[i], cdl[i], cinf[i], cap[i], budget[i], p2[i], qmin[i],
                                 mlo[i], mhi[i], ebar[i], q[i], di, mi, q[i], di, mi, P[i],
                                 False)
        _accumulate(sums, 1 if nr else 0, t, cf, sv, ts, fine)
    return anynear, sums


@njit(**_JIT)
def exchange_pass(G, V, alpha, kappa, K1, horizon, Z, lam, tau, dl, ctr, cdl, cinf, cap,
                  budget, p2, qmin, mlo, mhi, ebar, q, d, mu, P, near, last0, last1,
                  qn, dn, mun, lo, hi):
    """Each near client's exchange proposal (``FastBlocks.exchange_block`` and the tie
    rules of ``RoundSolver._exchange``) into ``qn, dn, mun`` (only the near clients' entries
    are written), and the first three steps of the line search on the way: row k of the
    result holds the near clients' sums (see :func:`step_sums`) at step ``(1, 1/2, 1/4)[k]``
    of the proposal (:func:`_halving_sums`)."""
    out = np.zeros((3, 5))
    out[:, 3] = 1.0
    for i in range(lo, hi):
        if not near[i]:
            continue
        w = V * lam[i] * (alpha - kappa * (d[i] * K1 + (1.0 - d[i]) * ebar[i]))
        gd = V * lam[i] * kappa * (P[i] + horizon) * (ebar[i] - K1)
        pr, room = Z[i], cap[i]
        qi, mi, s_pr, d_pr = _smooth(pr, G, ctr[i], cinf[i], p2[i], qmin[i], w, lam[i], tau[i],
                                     dl[i], mlo[i], mhi[i])
        di = 1.0 if gd > pr * cdl[i] else 0.0
        tol = 1e-12 * max(1.0, abs(room) if np.isfinite(room) else 0.0)
        if s_pr + cdl[i] * di - room > tol:
            least = ctr[i] * qmin[i] + cinf[i] * mlo[i]
            kq = _ratio(G * p2[i], ctr[i])
            kink_q = kq if (G * p2[i] > 0.0 and np.isfinite(kq)) else _INF
            kmu = _ratio(w * tau[i] * np.exp(-(mhi[i] - lam[i]) * tau[i]), cinf[i])
            kink_mu = kmu if (dl[i] and w > 0.0 and np.isfinite(kmu)) else _INF
            kink = min(kink_q, kink_mu)
            c = cdl[i]
            if c > 0.0:
                pstar = gd / c
            else:
                pstar = _INF if gd > 0.0 else 0.0
            can = gd > pr * c and room - c >= least - tol
            r1 = _INF
            if can:
                r1 = _root(room - c, pr, tol, last1[i], s_pr, d_pr, G, ctr[i], cinf[i], p2[i],
                           qmin[i], w, lam[i], tau[i], dl[i], mlo[i], mhi[i], kink)
            take1 = can and r1 < pstar
            if np.isfinite(r1):
                last1[i] = r1
            take0 = False
            if not take1:  # the root without a download is needed only then
                r0 = _root(room, pr, tol, last0[i], s_pr, d_pr, G, ctr[i], cinf[i], p2[i],
                           qmin[i], w, lam[i], tau[i], dl[i], mlo[i], mhi[i], kink)
                last0[i] = r0
                take0 = r0 >= pstar
            if take1:
                pi = r1
            elif take0:
                pi = r0
            else:
                pi = max(pstar, pr)
            qi, mi, used, _ = _smooth(pi, G, ctr[i], cinf[i], p2[i], qmin[i], w, lam[i],
                                      tau[i], dl[i], mlo[i], mhi[i])
            if take1:
                di = 1.0
            elif take0:
                di = 0.0
            else:
                di = min(max((room - used) / (c if c > 0.0 else 1.0), 0.0), 1.0)
        # the single blocks' ties, resolved the same way
        if gd - pr * cdl[i] == 0.0:
            di = 0.0
        left = room - cdl[i] * di
        if pr * cinf[i] == 0.0 and (w == 0.0 or not dl[i]):
            mi = max(min(mhi[i], _ratio(left - ctr[i] * qi, cinf[i])), mlo[i])
        if G == 0.0 and pr * ctr[i] == 0.0:
            qi = min(max(_ratio(left - cinf[i] * mi, ctr[i]), qmin[i]), 1.0)
        qn[i], dn[i], mun[i] = qi, di, mi
        _halving_sums(out, 1.0, V, alpha, kappa, horizon, Z[i], lam[i], tau[i], dl[i], ctr[i],
                      cdl[i], cinf[i], cap[i], budget[i], p2[i], qmin[i], mlo[i], mhi[i],
                      ebar[i], q[i], d[i], mu[i], qi, di, mi, P[i])
    return out


@njit(**_JIT)
def apply_step(step, near, lam, tau, dl, q, d, mu, qn, dn, mun, P, lo, hi):
    """Move the near clients ``step`` of the way to their proposal, ``P`` with them."""
    for i in range(lo, hi):
        if near[i]:
            q[i] += step * (qn[i] - q[i])
            d[i] += step * (dn[i] - d[i])
            mu[i] += step * (mun[i] - mu[i])
            P[i] = _on_time(mu[i], lam[i], tau[i], dl[i])


@njit(**_JIT)
def _terms(s, V, alpha, kappa, horizon, Z, lam, tau, dl, ctr, cdl, cinf, cap, budget, p2,
           qmin, mlo, mhi, ebar, q, d, mu, qn, dn, mun, P, exact):
    """One client's ``(A, B, S, T, feasible)`` at ``x + s (x_new - x)``, ``T`` its term of
    :func:`training_sum`; ``P`` is used as the on-time fraction unless ``exact``."""
    qi = q + s * (qn - q)
    di = d + s * (dn - d)
    mi = mu + s * (mun - mu)
    use = ctr * qi + cdl * di + cinf * mi
    ok = (qi >= qmin - 1e-12 and qi <= 1.0 + 1e-12 and di >= -1e-12 and di <= 1.0 + 1e-12
          and mi >= mlo - 1e-12 and mi <= mhi + 1e-12 and use <= cap * (1.0 + 1e-12) + 1e-12)
    if exact:
        P = _on_time(mi, lam, tau, dl)
    held = (1.0 - di) * ebar
    term = V * lam * P * (alpha - kappa * held)
    if Z > 0.0:
        term -= Z * (use - budget)
    coef = V * lam * kappa * P * di
    if horizon != 0.0:
        term -= horizon * V * kappa * lam * held
        coef += horizon * V * kappa * lam * (1.0 + di)
    return term, coef, p2 * (1.0 - qi) / qi, lam * (P * di + horizon * (1.0 + di)), ok


@njit(**_JIT)
def _accumulate(out, k, t, cf, sv, ts, fine):
    """Add one client's ``(A, B, S, T)`` to row ``k`` of ``out``; an infeasible client
    makes the row infeasible (column 3)."""
    out[k, 0] += t
    out[k, 1] += cf
    out[k, 2] += sv
    out[k, 4] += ts
    if not fine:
        out[k, 3] = 0.0


@njit(**_JIT)
def _halving_sums(out, first, V, alpha, kappa, horizon, Z, lam, tau, dl, ctr, cdl, cinf, cap,
                  budget, p2, qmin, mlo, mhi, ebar, q, d, mu, qn, dn, mun, P):
    """Add one client's sums at the steps ``first, first/2, ...`` (a row of ``out`` each)
    of its proposal. The on-time fraction at step s is
    ``1 - exp(-(mu - lam) tau) exp(-(mu_new - mu) tau)^s``: the first factor is ``1 - P``,
    the second takes one exp at the first step and a square root for each halving."""
    late = 1.0 - P
    shift = np.exp(-(mun - mu) * tau * first)
    step = first
    for k in range(out.shape[0]):
        t, cf, sv, ts, fine = _terms(step, V, alpha, kappa, horizon, Z, lam, tau, dl, ctr, cdl,
                                     cinf, cap, budget, p2, qmin, mlo, mhi, ebar, q, d, mu,
                                     qn, dn, mun, 1.0 - late * shift, False)
        _accumulate(out, k, t, cf, sv, ts, fine)
        shift = np.sqrt(shift)
        step *= 0.5


@njit(**_JIT)
def step_sums(steps, sel, V, alpha, kappa, horizon, Z, lam, tau, dl, ctr, cdl, cinf, cap,
              budget, p2, qmin, mlo, mhi, ebar, q, d, mu, qn, dn, mun, lo, hi):
    """The objective's sums over the clients ``sel`` at ``x + s (x_new - x)`` for each ``s``
    in ``steps``: row k holds ``(A, B, S, feasible, T)``, the objective being
    ``A - (a K + b S + c) B`` over all clients (``RoundSolver.objective``; feasible as in
    ``_feasible``) and ``T`` the :func:`training_sum` of the clients there."""
    out = np.zeros((steps.size, 5))
    out[:, 3] = 1.0
    for i in range(lo, hi):
        if not sel[i]:
            continue
        for k in range(steps.size):
            t, cf, sv, ts, fine = _terms(steps[k], V, alpha, kappa, horizon, Z[i], lam[i], tau[i],
                                     dl[i], ctr[i], cdl[i], cinf[i], cap[i], budget[i], p2[i],
                                     qmin[i], mlo[i], mhi[i], ebar[i], q[i], d[i], mu[i],
                                     qn[i], dn[i], mun[i], 0.0, True)
            _accumulate(out, k, t, cf, sv, ts, fine)
    return out


@njit(**_JIT)
def late_sums(steps, near, V, alpha, kappa, horizon, Z, lam, tau, dl, ctr, cdl, cinf, cap,
              budget, p2, qmin, mlo, mhi, ebar, q, d, mu, qn, dn, mun, P, lo, hi):
    """:func:`step_sums` over the near clients for steps that halve one after the other
    (``steps[k + 1] = steps[k] / 2``), by :func:`_halving_sums`."""
    out = np.zeros((steps.size, 5))
    out[:, 3] = 1.0
    for i in range(lo, hi):
        if near[i]:
            _halving_sums(out, steps[0], V, alpha, kappa, horizon, Z[i], lam[i], tau[i], dl[i],
                          ctr[i], cdl[i], cinf[i], cap[i], budget[i], p2[i], qmin[i], mlo[i],
                          mhi[i], ebar[i], q[i], d[i], mu[i], qn[i], dn[i], mun[i], P[i])
    return out


@njit(**_JIT)
def diagnostics(G, V, alpha, kappa, K1, horizon, Z, lam, tau, dl, ctr, cdl, cinf, cap, cap_f,
                p2, qmin, mlo, mhi, ebar, q, d, mu, P, train_refreshes, use_out, ebar_next,
                binding, nu, lo, hi):
    """The per-client diagnostics of a result in one pass: resource use, the held copy's
    expected error next round (``refresh_probability``, ``expected_error_step``), binding
    caps (``RoundSolver._binding``) and their multipliers
    (``RoundSolver.cap_multipliers``)."""
    for i in range(lo, hi):
        use = ctr[i] * q[i] + cdl[i] * d[i] + cinf[i] * mu[i]
        use_out[i] = use
        theta = 1.0 - (1.0 - q[i]) * (1.0 - d[i]) if train_refreshes else d[i]
        ebar_next[i] = theta * K1 + (1.0 - theta) * ebar[i]
        b = use >= cap[i] - 1e-7 * max(1.0, cap_f[i])
        binding[i] = b
        nu[i] = 0.0
        if not b:
            continue
        if mlo[i] + 1e-12 < mu[i] < mhi[i] - 1e-12 and cinf[i] > 0.0 and dl[i]:
            w = V * lam[i] * (alpha - kappa * (d[i] * K1 + (1.0 - d[i]) * ebar[i]))
            v = _ratio(w * tau[i] * np.exp(-(mu[i] - lam[i]) * tau[i]), cinf[i]) - Z[i]
        elif qmin[i] + 1e-12 < q[i] < 1.0 - 1e-12 and ctr[i] > 0.0:
            v = _ratio(G * p2[i] / q[i] ** 2, ctr[i]) - Z[i]
        elif 1e-12 < d[i] < 1.0 - 1e-12 and cdl[i] > 0.0:
            beta = V * lam[i] * kappa * (P[i] + horizon) * (ebar[i] - K1)
            v = _ratio(beta, cdl[i]) - Z[i]
        else:
            v = 0.0
        nu[i] = max(v, 0.0)


@njit(**_JIT)
def full_start(ctr, cdl, cinf, cap, qmin, mlo, mhi, d1, mu1, lo, hi):
    """The second cold start of ``RoundSolver.starts`` (same arithmetic): from the least
    use, downloads as far as the cap allows, then the service rate."""
    for i in range(lo, hi):
        left = max(cap[i] - ((ctr[i] * qmin[i] + cdl[i] * 0.0 + cinf[i] * mlo[i])
                             - cdl[i] * 0.0), 0.0)
        di = min(1.0, _ratio(left, cdl[i]))
        left = max(cap[i] - ((ctr[i] * qmin[i] + cdl[i] * di + cinf[i] * mlo[i])
                             - cinf[i] * mlo[i]), 0.0)
        d1[i] = di
        mu1[i] = max(mlo[i], min(mhi[i], _ratio(left, cinf[i])))


def readonly(a) -> np.ndarray:
    """A read-only, C-contiguous view (no copy where ``a`` already is float64 and
    contiguous): the one array type the passes are compiled for."""
    v = np.ascontiguousarray(a).view()
    v.flags.writeable = False
    return v


_ARRAYS = ("lam", "tau_f", "has_deadline", "ctr", "cdl", "cinf", "cap", "cap_finite",
           "budget", "p2", "q_min", "mu_lo", "mu_max")


def frozen(data) -> SimpleNamespace:
    """Read-only views of the solver data's per-client arrays (see :func:`readonly`)."""
    return SimpleNamespace(**{k: readonly(getattr(data, k)) for k in _ARRAYS})


def available_threads() -> int:
    """Threads the passes may use: ``JOINTOPT_THREADS`` if set, else the cores this
    process may run on."""
    env = os.environ.get("JOINTOPT_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"JOINTOPT_THREADS must be a positive integer, got {env!r}")
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """The shared pool of ``threads`` threads of this process (keyed by process id too: a
    forked worker process inherits the parent's pool object but none of its threads)."""
    key = (os.getpid(), threads)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="jointopt-pass")
        return _POOLS[key]


class Split:
    """The client ranges every pass runs over.

    One range (in the calling thread) with one thread or below ``2 * min_chunk`` clients;
    else ``4 * threads`` ranges (so that a thread slowed by other load gets fewer of them),
    each at least ``min_chunk`` clients, run by a shared pool of threads. :meth:`map`
    returns the ranges' results in range order. Measured on the 2-core machine: a 1M-client
    pass takes half the time with 2 threads, and no longer than one thread when another
    process keeps one core busy.
    """

    MIN_CHUNK = 50_000

    def __init__(self, n: int, threads: int, min_chunk: int | None = None):
        m = self.MIN_CHUNK if min_chunk is None else min_chunk
        k = 1 if threads <= 1 else max(1, min(4 * threads, n // m))
        edges = np.linspace(0, n, k + 1).astype(np.int64)
        self.bounds = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        self.threads = threads if k > 1 else 1

    def map(self, fn, *args) -> list:
        """``[fn(*args, lo, hi) for each range]``, in threads when there are several."""
        if self.threads == 1:
            return [fn(*args, lo, hi) for lo, hi in self.bounds]
        return list(_pool(self.threads).map(lambda b: fn(*args, *b), self.bounds))


def merged(parts) -> np.ndarray:
    """Ranges' sums (see :func:`step_sums`) added up; the feasibility column is the least
    of them (feasible where every range is)."""
    parts = np.asarray(parts)
    out = parts.sum(axis=0)
    out[..., 3] = parts[..., 3].min(axis=0)
    return out


_WARM = False


def warm_up() -> None:
    """Compile (or load from the on-disk cache) every pass once, on one dummy client, so
    that a solve's reported time is the solve's and not the compiler's. Idempotent."""
    global _WARM
    if _WARM:
        return
    r, rb = readonly(np.ones(1)), readonly(np.ones(1, dtype=np.bool_))

    def w():
        return np.ones(1)

    def wb():
        return np.ones(1, dtype=np.bool_)

    training_sum(r, w(), w(), r, rb, 1.0, w(), wb(), 0, 1)
    q_pass(1.0, r, r, r, r, r, r, r, w(), w(), w(), 0, 1)
    dmu_pass(1.0, 1.0, 0.1, 1.0, 1.0, r, r, r, rb, r, r, r, r, r, r, r, r, r, r, r,
             w(), w(), w(), w(), wb(), 0, 1)
    exchange_pass(1.0, 1.0, 1.0, 0.1, 1.0, 1.0, r, r, r, rb, r, r, r, r, r, r, r, r, r, r,
                  w(), w(), w(), w(), wb(), w(), w(), w(), w(), w(), 0, 1)
    apply_step(0.5, wb(), r, r, rb, w(), w(), w(), w(), w(), w(), w(), 0, 1)
    diagnostics(1.0, 1.0, 1.0, 0.1, 1.0, 1.0, r, r, r, rb, r, r, r, r, r, r, r, r, r, r,
                r, r, r, r, False, w(), w(), wb(), w(), 0, 1)
    training_sum(r, r, r, r, rb, 1.0, w(), wb(), 0, 1)
    full_start(r, r, r, r, r, r, r, w(), w(), 0, 1)
    step_sums(np.zeros(1), wb(), 1.0, 1.0, 0.1, 1.0, r, r, r, rb,
              r, r, r, r, r, r, r, r, r, r, w(), w(), w(), w(), w(), w(), 0, 1)
    late_sums(np.ones(2), wb(), 1.0, 1.0, 0.1, 1.0, r, r, r, rb,
              r, r, r, r, r, r, r, r, r, r, w(), w(), w(), w(), w(), w(), w(), 0, 1)
    _WARM = True
