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
