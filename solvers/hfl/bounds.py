"""Lower bounds for HFLOP without the full LP (R3') [project choice].

Lagrangian relaxation of the single-join rows C2 (multipliers ``nu_i >= 0``) and the
participation row C3 (``pi >= 0``): the problem splits into one continuous knapsack per
host, ``min c^e_j y_j + sum_i (C_ij + nu_i - pi) x_ij`` s.t. ``sum_i D_i x_ij <= R_j y_j``,
``0 <= x_ij <= y_j``, whose value is ``min(0, c^e_j + knapsack_j)``. Any multipliers give a
valid bound ``sum_j min(0, host_j) - sum_i nu_i + pi T``; subgradient steps (Polyak step
towards the incumbent when one is known) improve it.
"""

from __future__ import annotations

import math
import time

import numpy as np


def host_values(Rc, D, R, ce, allowed=None):
    """Per-host ``min(0, c^e_j + continuous knapsack)`` and the fractional ``x`` (N x M)."""
    N, M = Rc.shape
    neg = Rc < 0
    if allowed is not None:
        neg &= allowed
    Dm = np.broadcast_to(D[:, None], (N, M))
    with np.errstate(divide="ignore", invalid="ignore"):
        key = np.where(neg, np.where(Dm > 0, Rc / np.where(Dm > 0, Dm, 1.0), -np.inf), np.inf)
    order = np.argsort(key, axis=0, kind="stable")
    sD = np.take_along_axis(np.where(neg, Dm, 0.0), order, 0)
    sR = np.take_along_axis(np.where(neg, Rc, 0.0), order, 0)
    cum = np.cumsum(sD, 0)
    prev = cum - sD
    cap = np.broadcast_to(R[None, :], (N, M))
    frac = np.where(sD > 0, np.clip((cap - prev) / np.where(sD > 0, sD, 1.0), 0.0, 1.0),
                    1.0)
    frac = np.where(np.take_along_axis(neg, order, 0), frac, 0.0)
    knap = (frac * sR).sum(0)
    val = ce + knap
    use = val < 0
    x = np.zeros((N, M))
    np.put_along_axis(x, order, frac, 0)
    x *= use[None, :]
    return np.minimum(0.0, val), x


def lagrangian_bound(D, R, C, ce, T, *, allowed=None, iters=60, upper=None,
                     time_limit=3.0) -> float:
    """Best Lagrangian lower bound found in ``iters`` subgradient steps (or ``time_limit``)."""
    D, R, ce = (np.asarray(v, float) for v in (D, R, ce))
    C = np.asarray(C, float)
    N, M = C.shape
    if T == 0:
        return 0.0
    Cm = C if allowed is None else np.where(allowed, C, np.inf)
    best_dev = np.sort(Cm.min(1))
    pi = float(best_dev[min(T, N) - 1]) + 1e-6 if np.isfinite(best_dev[min(T, N) - 1]) else 0.0
    nu = np.zeros(N)
    best = -math.inf
    step = 2.0
    stall = 0
    t0 = time.perf_counter()
    Cfin = np.where(np.isfinite(Cm), Cm, 0.0)
    for _ in range(iters):
        Rc = Cfin + nu[:, None] - pi
        vals, x = host_values(Rc, D, R, ce, None if allowed is None else allowed)
        L = float(vals.sum() - nu.sum() + pi * T)
        if L > best + 1e-12:
            best, stall = L, 0
        else:
            stall += 1
            if stall >= 5:
                step /= 2
                stall = 0
        if upper is not None and best >= upper - 1e-9 * max(1.0, abs(upper)):
            break
        g_nu = x.sum(1) - 1.0
        g_pi = T - x.sum()
        norm = float(g_nu @ g_nu + g_pi * g_pi)
        if norm <= 1e-12 or time.perf_counter() - t0 > time_limit:
            break
        target = upper if upper is not None and upper > L else abs(L) * 1.05 + 1.0
        t = step * (target - L) / norm
        nu = np.maximum(0.0, nu + t * g_nu)
        pi = max(0.0, pi + t * g_pi)
    return best
