"""Brute-force reference for tiny HFLOP instances (T1, T9a) [project choice].

Enumerates all ``(M+1)^N`` assignments (-1 allowed) vectorised with numpy; only for tests
and tiny cases (N <= 7 or so).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from jointopt.models import hfl as hm


def all_assignments(n: int, m: int) -> np.ndarray:
    return np.array(list(itertools.product(range(-1, m), repeat=n)), dtype=np.int64).reshape(
        -1, n)


def brute_force(prob, *, uncapacitated=False, latency=False):
    """``(best value, best assignment)`` or ``(inf, None)`` when infeasible. ``latency``:
    minimise the exact (O) + beta L under the load caps (and ``max_latency``)."""
    A = all_assignments(prob.N, prob.M)
    on = A >= 0
    D = prob.workload
    loads = np.zeros((A.shape[0], prob.M))
    for j in range(prob.M):
        loads[:, j] = ((A == j) * D[None, :]).sum(1)
    ok = on.sum(1) >= prob.T
    cap = prob.load_cap if latency else prob.capacities
    if not uncapacitated:
        ok &= (loads <= cap[None, :] * (1 + 1e-12) + 1e-12).all(1)
    cdx = np.where(on, prob.l * prob.cd[np.arange(prob.N)[None, :], np.maximum(A, 0)], 0.0)
    used = np.stack([(A == j).any(1) for j in range(prob.M)], 1)
    val = cdx.sum(1) + (used * prob.ce[None, :]).sum(1)
    if latency:
        lat = np.array([prob.mean_latency(a) for a in A])
        if prob.latency.max_latency is not None:
            ok &= lat <= prob.latency.max_latency * (1 + 1e-9)
        finite = np.isfinite(lat)
        val = val + np.where(finite, prob.latency.beta * np.where(finite, lat, 0.0), np.inf)
    val = np.where(ok, val, np.inf)
    k = int(np.argmin(val))
    if not math.isfinite(val[k]):
        return math.inf, None
    return float(val[k]), A[k]


def evaluate_many(prob, A):
    """(O) of each row of ``A`` (for quick checks)."""
    return np.array([hm.per_round_cost(a, prob.cd, prob.ce, prob.l) for a in A])
