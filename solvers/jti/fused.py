"""The fast path's sweep, compiled: one loop over clients per pass instead of hundreds of
numpy array passes.

Same algorithm, ties and tolerances as the numpy driver in :mod:`.round`
(:meth:`RoundSolver._ascend` with :class:`FastBlocks`), written as scalar per-client
functions compiled by numba. A sweep is five passes over the clients:

1. the training value ``G`` (a sum over clients);
2. the q-block, accumulating ``sum p^2 (1 - q) / q`` for ``K_{t+1}``;
3. the d- and mu-blocks, marking the clients near their cap, summing the exchange's ``G``
   and the objective's sums at the new point;
4. the exchange proposal of each client near its cap (its cap multiplier by a safeguarded
   Newton iteration on ``log(price)``, warm-started from the last root);
5. the line search over the near clients only (the others do not move): the objective and
   feasibility at steps 1, 1/2, 1/4 of the proposal in one pass, and at 1/8 ... 1/256 in a
   second one when none of those improves.

The objective is separable given ``K_{t+1}``: with ``K_{t+1} = a K + b S + c`` and
``S = sum p^2 (1 - q)/q``, it is ``sum_n A_n - K_{t+1} sum_n B_n``, so each candidate point
costs one pass. ``numba`` is a dependency of jointopt; functions are compiled on first use
and cached on disk (``cache=True``), so only the first run on a machine pays the compile.
Tests hold this path to the numpy driver on random instances.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from numba import njit

_JIT = {"cache": True, "error_model": "numpy", "fastmath": False}

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
def _root(t, pr, tl, guess, G, ctr, cinf, p2, qmin, w, lam, tau, dl, mlo, mhi, kink):
    """Smallest ``pi >= pr`` with ``s(pi) <= t + tl`` (``_SmoothUse.root``, one client).

    Same steps as the numpy version; ``s`` is evaluated once per distinct point (the
    bracket ends and the guess are remembered with their values and slopes)."""
    if not np.isfinite(t):
        return pr
    _, _, lo_s, lo_d = _smooth(pr, G, ctr, cinf, p2, qmin, w, lam, tau, dl, mlo, mhi)
    if lo_s - t <= tl:
        return pr
    lo = pr
    if pr <= 0.0:
        lo = _TINY
        _, _, lo_s, lo_d = _smooth(lo, G, ctr, cinf, p2, qmin, w, lam, tau, dl, mlo, mhi)
        if lo_s - t <= tl:
            return _TINY
    cand = max(lo, kink if np.isfinite(kink) else 0.0)
    if cand > lo:
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
def training_sum(lam, mu, d, tau, dl, horizon, P, stale):
    """``sum lambda (P(mu) d + H (1 + d))``: ``G`` up to the factor ``V kappa b``.

    ``P`` holds each client's on-time fraction; it is recomputed where ``stale``."""
    acc = 0.0
    for i in range(lam.size):
        if stale[i]:
            P[i] = _on_time(mu[i], lam[i], tau[i], dl[i])
        acc += lam[i] * (P[i] * d[i] + horizon * (1.0 + d[i]))
    return acc


@njit(**_JIT)
def q_pass(G, Z, ctr, cdl, cinf, cap, p2, qmin, q, d, mu):
    """q-block in place (with its tie rule); returns ``sum p^2 (1 - q) / q``."""
    S = 0.0
    for i in range(q.size):
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
             budget, p2, qmin, mlo, mhi, ebar, q, d, mu, P, near, sums):
    """d- and mu-blocks in place (tie rules included), ``P`` updated to the new ``mu``;
    marks ``near`` (use within 1e-4 of the cap) and returns
    ``(any near, sum lambda (P d + H (1 + d)))`` at the new point.

    ``sums`` receives the objective's sums at the new point (see :func:`step_sums`): row 0
    over the clients not near their cap, row 1 over the near ones (columns A, B, S,
    feasible)."""
    acc = 0.0
    anynear = False
    sums[:] = 0.0
    sums[:, 3] = 1.0
    for i in range(q.size):
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
        acc += lam[i] * (P[i] * di + horizon * (1.0 + di))
        t, cf, sv, fine = _terms(0.0, V, alpha, kappa, horizon, Z[i], lam[i], tau[i], dl[i],
                                 ctr[i], cdl[i], cinf[i], cap[i], budget[i], p2[i], qmin[i],
                                 mlo[i], mhi[i], ebar[i], q[i], di, mi, q[i], di, mi, P[i],
                                 False)
        r = 1 if nr else 0
        sums[r, 0] += t
        sums[r, 1] += cf
        sums[r, 2] += sv
        if not fine:
            sums[r, 3] = 0.0
    return anynear, acc


@njit(**_JIT)
def exchange_pass(G, V, alpha, kappa, K1, horizon, Z, lam, tau, dl, ctr, cdl, cinf, cap,
                  p2, qmin, mlo, mhi, ebar, q, d, mu, P, near, last0, last1, qn, dn, mun):
    """Each near client's exchange proposal (``FastBlocks.exchange_block`` and the tie
    rules of ``RoundSolver._exchange``) into ``qn, dn, mun``; the others keep their point."""
    for i in range(q.size):
        if not near[i]:
            qn[i], dn[i], mun[i] = q[i], d[i], mu[i]
            continue
        w = V * lam[i] * (alpha - kappa * (d[i] * K1 + (1.0 - d[i]) * ebar[i]))
        gd = V * lam[i] * kappa * (P[i] + horizon) * (ebar[i] - K1)
        pr, room = Z[i], cap[i]
        qi = _q_cf(G, pr * ctr[i], p2[i], qmin[i], 1.0)
        di = 1.0 if gd > pr * cdl[i] else 0.0
        mi = _mu_cf(w, pr * cinf[i], lam[i], tau[i], dl[i], mlo[i], mhi[i])
        tol = 1e-12 * max(1.0, abs(room) if np.isfinite(room) else 0.0)
        if ctr[i] * qi + cdl[i] * di + cinf[i] * mi - room > tol:
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
                r1 = _root(room - c, pr, tol, last1[i], G, ctr[i], cinf[i], p2[i], qmin[i],
                           w, lam[i], tau[i], dl[i], mlo[i], mhi[i], kink)
            take1 = can and r1 < pstar
            if np.isfinite(r1):
                last1[i] = r1
            take0 = False
            if not take1:  # the root without a download is needed only then
                r0 = _root(room, pr, tol, last0[i], G, ctr[i], cinf[i], p2[i], qmin[i],
                           w, lam[i], tau[i], dl[i], mlo[i], mhi[i], kink)
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


@njit(**_JIT)
def _terms(s, V, alpha, kappa, horizon, Z, lam, tau, dl, ctr, cdl, cinf, cap, budget, p2,
           qmin, mlo, mhi, ebar, q, d, mu, qn, dn, mun, P, exact):
    """One client's ``(A, B, S, feasible)`` at ``x + s (x_new - x)``; ``P`` is used as the
    on-time fraction unless ``exact``."""
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
    return term, coef, p2 * (1.0 - qi) / qi, ok


@njit(**_JIT)
def step_sums(steps, idx, V, alpha, kappa, horizon, Z, lam, tau, dl, ctr, cdl, cinf, cap,
              budget, p2, qmin, mlo, mhi, ebar, q, d, mu, qn, dn, mun):
    """The objective's sums over the clients ``idx`` at ``x + s (x_new - x)`` for each ``s``
    in ``steps``: row k holds ``(A, B, S, feasible)``, the objective being
    ``A - (a K + b S + c) B`` over all clients (``RoundSolver.objective``; feasible as in
    ``_feasible``)."""
    out = np.zeros((steps.size, 4))
    out[:, 3] = 1.0
    for j in range(idx.size):
        i = idx[j]
        for k in range(steps.size):
            t, cf, sv, fine = _terms(steps[k], V, alpha, kappa, horizon, Z[i], lam[i], tau[i],
                                     dl[i], ctr[i], cdl[i], cinf[i], cap[i], budget[i], p2[i],
                                     qmin[i], mlo[i], mhi[i], ebar[i], q[i], d[i], mu[i],
                                     qn[i], dn[i], mun[i], 0.0, True)
            out[k, 0] += t
            out[k, 1] += cf
            out[k, 2] += sv
            if not fine:
                out[k, 3] = 0.0
    return out


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

    training_sum(r, w(), w(), r, rb, 1.0, w(), wb())
    q_pass(1.0, r, r, r, r, r, r, r, w(), w(), w())
    dmu_pass(1.0, 1.0, 0.1, 1.0, 1.0, r, r, r, rb, r, r, r, r, r, r, r, r, r, r, r,
             w(), w(), w(), w(), wb(), np.zeros((2, 4)))
    exchange_pass(1.0, 1.0, 1.0, 0.1, 1.0, 1.0, r, r, r, rb, r, r, r, r, r, r, r, r, r,
                  w(), w(), w(), w(), wb(), w(), w(), w(), w(), w())
    step_sums(np.zeros(1), np.zeros(1, dtype=np.int64), 1.0, 1.0, 0.1, 1.0, r, r, r, rb,
              r, r, r, r, r, r, r, r, r, r, w(), w(), w(), w(), w(), w())
    _WARM = True
