"""M/M/1 inference service at each client.

Provenance: **project choice**; the paper names per-client service rates. Requests
arrive Poisson(``lam``) and are served FIFO at rate ``mu``; stable iff ``mu > lam``; the
sojourn time is Exp(``mu - lam``). All functions are vectorised over clients.
"""

from __future__ import annotations

import numpy as np


def is_stable(lam, mu) -> np.ndarray:
    """``mu > lam``, element-wise."""
    return np.asarray(mu, dtype=float) > np.asarray(lam, dtype=float)


def mean_sojourn(lam, mu) -> np.ndarray:
    """Mean time in system ``1 / (mu - lam)``; ``inf`` where unstable."""
    gap = np.asarray(mu, dtype=float) - np.asarray(lam, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(gap > 0, 1.0 / np.where(gap > 0, gap, 1.0), np.inf)


def on_time_fraction(lam, mu, tau) -> np.ndarray:
    """Fraction of requests finished within deadline ``tau``: ``1 - exp(-(mu - lam) tau)``.

    ``tau = inf`` (no deadline) gives 1 for a stable queue; an unstable queue gives 0.
    Concave and increasing in ``mu`` on the stable region.
    """
    lam = np.asarray(lam, dtype=float)
    mu = np.asarray(mu, dtype=float)
    tau = np.asarray(tau, dtype=float)
    gap = mu - lam
    with np.errstate(invalid="ignore", over="ignore"):
        frac = -np.expm1(-np.maximum(gap, 0.0) * tau)
    frac = np.where(np.isinf(tau), 1.0, frac)
    return np.where(gap > 0, frac, 0.0)


def sojourn_quantile(lam, mu, level: float) -> np.ndarray:
    """``level``-quantile of the sojourn time (e.g. 0.99 for the P99 latency)."""
    gap = np.asarray(mu, dtype=float) - np.asarray(lam, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(gap > 0, -np.log1p(-level) / np.where(gap > 0, gap, 1.0), np.inf)


def fifo_round(arrivals, mu, tau, free, start: float, slot: float,
               rng: np.random.Generator):
    """One slot of FIFO M/M/1 queues, one per client, carried over between slots.

    ``arrivals[n]`` requests reach client n at uniform times in ``[start, start + slot)``
    (Poisson arrivals given their count), each needs an Exp(``mu[n]``) service, and the
    server is busy until ``free[n]`` from earlier slots (Lindley recursion). Returns
    ``(on_time, valid, free)``: ``on_time[n, k]`` whether client n's ``k``-th request of the
    slot finished within ``tau[n]`` of its arrival, ``valid[n, k]`` whether that request
    exists (``k < arrivals[n]``), and when each server is next idle. A queue near its
    capacity (``mu`` close to ``lam``) that starts empty stays far below its stationary
    sojourn law for many slots; this follows it slot by slot.
    """
    arrivals = np.asarray(arrivals)
    mu = np.asarray(mu, dtype=float)
    n = len(arrivals)
    amax = int(arrivals.max()) if n else 0
    if amax == 0:
        return np.zeros((n, 0), dtype=bool), np.zeros((n, 0), dtype=bool), free
    times = rng.random((n, amax)) * slot
    valid = np.arange(amax)[None, :] < arrivals[:, None]
    times = np.sort(np.where(valid, times, np.inf), axis=1) + start
    service = rng.exponential(1.0, (n, amax)) / mu[:, None]
    ok = np.zeros((n, amax), dtype=bool)
    free = np.asarray(free, dtype=float).copy()
    tau = np.broadcast_to(np.asarray(tau, dtype=float), (n,))
    for k in range(amax):
        v = valid[:, k]
        begin = np.maximum(times[:, k], free)
        finish = begin + service[:, k]
        with np.errstate(invalid="ignore"):
            ok[:, k] = v & (finish - times[:, k] <= tau)
        free = np.where(v, finish, free)
    return ok, valid, free
