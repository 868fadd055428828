"""Hierarchical FL orchestration (HFLOP): pure evaluators, cost accounting, latency models.

Documented in ``docs/kinds/hfl.md``. Provenance labels:

- **[paper]** Lackinger et al., "Inference Load-Aware Orchestration for Hierarchical Federated
  Learning", IEEE LCN 2024 (arXiv 2407.16836): the problem (place edge aggregators, associate
  devices, respect inference capacity of the hosts).
- **[authors' code]** the public repository ``pfrag/hflop``: the per-round cost (O), the
  capacity / single-join / participation constraints, flat-FL and total-cost accounting,
  the testbed measurement protocol.
- **[project choice]** our reconstruction or extension: the M/M/1 latency objective, the
  tangent-cut grid and its error bound, the latency simulator's processing model.

Everything here is numpy only and vectorised over devices / hosts. An *assignment* is an
integer vector ``a`` of length N with ``a[i] in {-1, 0..M-1}`` (-1: device ``i`` does not
take part in training; its inference goes to the cloud).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from jointopt.models.queueing import mean_sojourn

# --------------------------------------------------------------------------- basics


def required_participants(n: int, rho: float) -> int:
    """``T = floor(rho N)`` [authors' code]; a 1e-9 guard stops ``0.29*100`` flooring to 28
    [project choice]."""
    return int(math.floor(rho * n + 1e-9))


def cheapest_host(device_costs: np.ndarray) -> np.ndarray:
    """``e(i) = argmin_j c^d_ij``, lowest index on ties."""
    return np.argmin(np.asarray(device_costs, dtype=float), axis=1)


def host_loads(workload, assignment, n_hosts: int) -> np.ndarray:
    """``lambda_j = sum_{i: a_i = j} D_i`` (req/s)."""
    a = np.asarray(assignment)
    on = a >= 0
    return np.bincount(a[on], weights=np.asarray(workload, dtype=float)[on],
                       minlength=n_hosts).astype(float)


def used_hosts(assignment, n_hosts: int) -> np.ndarray:
    """Boolean per host: at least one associated device ("used")."""
    a = np.asarray(assignment)
    return np.bincount(a[a >= 0], minlength=n_hosts) > 0


def per_round_cost(assignment, device_costs, edge_costs, l: float) -> float:
    """Objective (O) of an assignment [authors' code]: ``sum_{j used} c^e_j + l sum_i c^d_{i a_i}``.

    An open host without devices is not charged (normalised placement, v3)."""
    a = np.asarray(assignment)
    cd = np.asarray(device_costs, dtype=float)
    ce = np.asarray(edge_costs, dtype=float)
    on = np.flatnonzero(a >= 0)
    return float(ce[used_hosts(a, ce.shape[0])].sum() + l * cd[on, a[on]].sum())


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` recomputes from scratch for one assignment."""

    feasible: bool
    objective: float
    loads: np.ndarray
    overload: np.ndarray          # max(0, load_j - R_j)
    participants: int
    required: int
    used: np.ndarray              # bool per host
    reason: str                   # "" when feasible


def evaluate(assignment, workload, capacities, device_costs, edge_costs, l: float,
             required: int, *, tol: float = 1e-9) -> Evaluation:
    """Feasibility (C1-C3) and objective (O) of ``assignment``, from scratch.

    Every heuristic and test checks its output with this function. ``required`` is ``T``."""
    a = np.asarray(assignment)
    R = np.asarray(capacities, dtype=float)
    M = R.shape[0]
    if a.shape != (np.asarray(workload).shape[0],):
        raise ValueError(f"assignment must have one entry per device, got shape {a.shape}")
    if ((a < -1) | (a >= M)).any():
        raise ValueError("assignment entries must be -1 or a host index")
    loads = host_loads(workload, a, M)
    overload = np.maximum(0.0, loads - R)
    participants = int((a >= 0).sum())
    reasons = []
    if (overload > tol * np.maximum(1.0, R)).any():
        j = int(np.argmax(overload))
        reasons.append(f"capacity: host {j} load {loads[j]:g} > {R[j]:g}")
    if participants < required:
        reasons.append(f"participation: {participants} < {required} devices")
    return Evaluation(feasible=not reasons,
                      objective=per_round_cost(a, device_costs, edge_costs, l),
                      loads=loads, overload=overload, participants=participants,
                      required=int(required), used=used_hosts(a, M), reason="; ".join(reasons))


# --------------------------------------------------------------------------- baselines


def proximity_assignment(device_costs) -> np.ndarray:
    """Proximity (inference-unaware) HFL [project choice, explicit baseline]: every device
    joins its cheapest host ``e(i)``; capacities are ignored (see :func:`evaluate` overload)."""
    return cheapest_host(device_costs).astype(np.int64)


def flat_fl_cost_per_round(device_costs, edge_costs, *, participants=None,
                           unit_costs: bool = False) -> float:
    """Flat FL per global round [authors' code]: each device talks to the cloud through its
    cheapest host ``e(i)`` (device-host hop free): ``sum_i c^e_{e(i)}``.

    ``participants``: None = all N devices (authors' default), or an int ``T``: the ``T``
    devices with the cheapest route [project choice, ``fl_participants = "T"``]."""
    ce = _unit(np.asarray(edge_costs, dtype=float), unit_costs)
    per_device = np.sort(ce[cheapest_host(device_costs)])
    if participants is not None:
        per_device = per_device[:int(participants)]
    return float(per_device.sum())


def _unit(c: np.ndarray, unit_costs: bool) -> np.ndarray:
    return np.minimum(1.0, c) if unit_costs else c


def hfl_total_cost(assignment, device_costs, edge_costs, l: float, *, model_size_mb=0.593,
                   rounds=50, unit_costs: bool = False) -> float:
    """``C_HFL(a) = 2 S R_g [sum_{j used} c~^e_j + l sum_i c~^d_{i a_i}]`` [authors' code]."""
    cd = _unit(np.asarray(device_costs, dtype=float), unit_costs)
    ce = _unit(np.asarray(edge_costs, dtype=float), unit_costs)
    return 2.0 * model_size_mb * rounds * per_round_cost(assignment, cd, ce, l)


def flat_total_cost(device_costs, edge_costs, *, model_size_mb=0.593, rounds=100,
                    unit_costs: bool = False, participants=None) -> float:
    """``C_FL = 2 S R_FL sum_i c~^e_{e(i)}`` [authors' code]."""
    return 2.0 * model_size_mb * rounds * flat_fl_cost_per_round(
        device_costs, edge_costs, participants=participants, unit_costs=unit_costs)


def saving_percent(flat_cost: float, other_cost: float) -> float:
    """``100 (C_FL - C_X) / C_FL``; NaN when flat FL costs nothing."""
    return 100.0 * (flat_cost - other_cost) / flat_cost if flat_cost > 0 else float("nan")


def edge_cloud_mb(assignment, n_hosts: int, *, model_size_mb=0.593, rounds=50) -> float:
    """Edge-cloud traffic ``2 S R_g #used`` (MB), for the deployment-planner contract."""
    return 2.0 * model_size_mb * rounds * int(used_hosts(assignment, n_hosts).sum())


def closed_form_uncapacitated_saving(n: int, used: int, *, rounds_hfl=50, rounds_fl=100) -> float:
    """T6 [project choice]: zero-cost LAN, ``c^e = 1``, unit costs, ``rho = 1``:
    ``saving = 1 - (R_g/R_FL) M_used / N`` (a fraction, not %)."""
    return 1.0 - (rounds_hfl / rounds_fl) * used / n


def expected_used_hosts(n: int, m: int) -> float:
    """``E[M_used] = M (1 - (1 - 1/M)^N)`` for uniform homes (T6)."""
    return m * (1.0 - (1.0 - 1.0 / m) ** n)


# --------------------------------------------------------------------------- M/M/1


def phi(lam, mu) -> np.ndarray:
    """``phi(lambda) = lambda / (mu - lambda)`` = mean number in system (Little) [project
    choice]; 0 where ``mu = 0`` (host takes only zero-demand devices), ``inf`` if unstable."""
    lam = np.asarray(lam, dtype=float)
    mu = np.asarray(mu, dtype=float)
    w = mean_sojourn(lam, mu)
    with np.errstate(invalid="ignore"):
        out = np.where(lam > 0, lam * w, 0.0)
    return np.where(mu > 0, out, np.where(lam > 0, np.inf, 0.0))


def tangent(a, mu):
    """Tangent of ``phi`` at ``a``: ``theta >= slope lambda + intercept`` with
    ``slope = mu/(mu-a)^2`` and ``intercept = -a^2/(mu-a)^2``."""
    a = np.asarray(a, dtype=float)
    mu = np.asarray(mu, dtype=float)
    s = (mu - a) ** 2
    return mu / s, -(a * a) / s


def load_cap(capacities, service_rate, u_max: float) -> np.ndarray:
    """``lambda cap_j = min(R_j, u_max mu_j)``."""
    return np.minimum(np.asarray(capacities, float), u_max * np.asarray(service_rate, float))


def tangent_grid(mu: float, cap: float, k: int = 12) -> np.ndarray:
    """Cut points ``a_k = mu - s_k``, ``s_k = mu (1 - cap/mu)^{k/(K-1)}`` geometric in slack
    [project choice]: ``a_0 = 0``, ``a_{K-1} = cap``."""
    if mu <= 0 or cap <= 0:
        return np.zeros(1)
    if k < 2:
        return np.zeros(1)
    s = mu * (1.0 - cap / mu) ** (np.arange(k) / (k - 1))
    return np.clip(mu - s, 0.0, cap)


def grid_bound(mu: float, cap: float, k: int = 12) -> float:
    """Worst ratio ``(1 + phi(lambda)) / (1 + max cuts(lambda)) <= (1 + r)^2 / (4 r)`` over
    ``[0, cap]`` with ``r = (mu / (mu - cap))^{1/(K-1)}``.

    Why: with ``g = 1 + phi = mu/(mu - lambda)``, in the slack ``s = mu - lambda`` the tangent
    of ``g`` at ``s_k`` is ``mu (2 s_k - s)/s_k^2``; two neighbours with ratio ``r`` cross at
    ``s = 2 s_k s_{k+1}/(s_k + s_{k+1})``, where ``g``/cut = ``(1 + r)^2/(4 r)``."""
    if mu <= 0 or cap <= 0 or k < 2:
        return 1.0
    r = (mu / (mu - cap)) ** (1.0 / (k - 1))
    return (1.0 + r) ** 2 / (4.0 * r)


def mean_latency(assignment, workload, service_rate, delay, cloud_delay: float) -> float:
    """Exact mean per-request latency ``L(x)`` of [project choice] (s):
    ``(1/D_tot) [sum_j phi_j(lambda_j) + sum_i D_i delta_{i a_i} + tau_0 sum_{a_i=-1} D_i]``.
    ``inf`` when some host is unstable; 0 when ``D_tot = 0``."""
    a = np.asarray(assignment)
    D = np.asarray(workload, dtype=float)
    mu = np.asarray(service_rate, dtype=float)
    total = D.sum()
    if total <= 0:
        return 0.0
    lam = host_loads(D, a, mu.shape[0])
    on = np.flatnonzero(a >= 0)
    dl = np.asarray(delay, dtype=float)
    queue = float(phi(lam, mu).sum())
    net = float((D[on] * dl[on, a[on]]).sum())
    cloud = cloud_delay * float(D[a < 0].sum())
    return (queue + net + cloud) / total


def host_latency(loads, service_rate) -> dict[str, np.ndarray]:
    """Per-host M/M/1 figures: ``W_j = 1/(mu_j - lambda_j)``, utilisation ``lambda_j/mu_j``."""
    lam = np.asarray(loads, float)
    mu = np.asarray(service_rate, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        util = np.where(mu > 0, lam / np.where(mu > 0, mu, 1.0), np.where(lam > 0, np.inf, 0.0))
    return {"load": lam, "sojourn": mean_sojourn(lam, mu), "utilisation": util}


def home_delay_matrix(homes, n_hosts: int, home: float = 0.0054, other: float = 0.0108):
    """``delta_ij``: ``home`` s to the home host and ``other`` s elsewhere (testbed F5 defaults:
    means of the simulator's delay distributions, doubled off-home) [project choice]."""
    h = np.asarray(homes).astype(np.int64)
    out = np.full((h.shape[0], n_hosts), float(other))
    out[np.arange(h.shape[0]), h] = home
    return out


# --------------------------------------------------------------------------- simulator


def overflow_rule(workload, capacities, homes, *, order: str = "index") -> np.ndarray:
    """Proximity HFL with overflow [project choice reproducing the authors' hard-coded
    choice]: per host admit home devices in canonical order (or ``largest_first``) while the
    cumulative load stays <= ``R_j``; a device that does not fit goes to the cloud (-1) and
    later devices are still tried. Returns the served-at assignment."""
    D = np.asarray(workload, float)
    R = np.asarray(capacities, float)
    h = np.asarray(homes).astype(np.int64)
    out = np.full(D.shape[0], -1, dtype=np.int64)
    idx = np.arange(D.shape[0])
    if order == "largest_first":
        idx = np.argsort(-D, kind="stable")
    elif order != "index":
        raise ValueError(f"order must be 'index' or 'largest_first', got {order!r}")
    used = np.zeros(R.shape[0])
    for i in idx:  # N is the 20 testbed sensors: sequential by nature
        j = h[i]
        if used[j] + D[i] <= R[j] + 1e-12:
            used[j] += D[i]
            out[i] = j
    return out


def simulate_latency(workload, capacities, homes, config: str = "hflop", *, assignment=None,
                     multiplier: float = 1.0, rounds: int = 100, seed=0,
                     fwd_ms: float = 0.27, sigma: float = 0.3, speed: float = 1.0,
                     cloud_scale: float = 1.0, kappa: float = 1.0, fifo: bool = False,
                     overflow_order: str = "index", proc_scale: float = 1.0,
                     overflow=None) -> dict[str, np.ndarray]:
    """End-to-end latency samples of the testbed protocol.

    Protocol [authors' code]: each client draws its network delay once per run; each round it
    sends a burst of ``floor(D_i multiplier / speed)`` requests to its server; one sample per
    client and round is network delay + processing time of the burst. Model [project
    choice]: edge delay ``U(0.8, 10)`` ms, cloud ``U(50, 100)`` ms, overflowed proximity
    devices pay both; processing P1 = ``n_fwd * fwd_ms * eps`` with ``eps`` lognormal (median
    1, ``sigma``), times ``kappa`` at the edge and ``cloud_scale`` (= 1 - s/100) at the cloud;
    ``fifo=True`` (P2) adds waiting behind earlier bursts at the same server in the round.

    ``proc_scale`` multiplies every processing time (the authors also analysed the x10 run
    with processing times x10).

    ``config``: ``flat`` (all at the cloud), ``proximity`` (home hosts + overflow rule at
    the simulated load, or the devices in ``overflow`` pinned to the cloud: e.g. those that
    overflow at multiplier 1, as the source kept them at x10), ``hflop`` (``assignment``
    required; -1 = cloud; an overloaded assignment is accepted).
    Returns arrays ``client, round, where (0 edge, 1 cloud, 2 overflow), net_ms, proc_ms,
    total_ms`` of length ``N * rounds`` (client-major)."""
    D = np.asarray(workload, float) * multiplier
    n = D.shape[0]
    rng = np.random.default_rng(seed)
    h = np.asarray(homes).astype(np.int64)
    if config == "flat":
        served = np.full(n, -1)
        where = np.ones(n, dtype=np.int64)
    elif config == "proximity":
        if overflow is None:
            served = overflow_rule(D, capacities, h, order=overflow_order)
        else:
            served = h.copy()
            served[np.asarray(overflow, dtype=np.int64)] = -1
        where = np.where(served >= 0, 0, 2)
    elif config == "hflop":
        if assignment is None:
            raise ValueError("config 'hflop' needs an assignment")
        served = np.asarray(assignment)
        where = np.where(served >= 0, 0, 1)
    else:
        raise ValueError(f"config must be flat, proximity or hflop, got {config!r}")
    edge = rng.uniform(0.8, 10.0, n)
    cloud = rng.uniform(50.0, 100.0, n)
    net = np.where(where == 0, edge, np.where(where == 1, cloud, edge + cloud))
    n_fwd = np.floor(D / speed)
    eps = rng.lognormal(0.0, sigma, (n, rounds))
    scale = np.where(where == 0, kappa, cloud_scale)
    proc = (n_fwd * fwd_ms * scale * proc_scale)[:, None] * eps
    if fifo:  # bursts at the same server queue in client order within a round
        server = np.where(where == 0, served, -1)
        wait = np.zeros_like(proc)
        for s in np.unique(server):
            members = np.flatnonzero(server == s)
            wait[members] = np.cumsum(proc[members], axis=0) - proc[members]
        proc = proc + wait
    total = net[:, None] + proc
    return {"client": np.repeat(np.arange(n), rounds), "round": np.tile(np.arange(rounds), n),
            "where": np.repeat(where, rounds), "net_ms": np.repeat(net, rounds),
            "proc_ms": proc.ravel(), "total_ms": total.ravel()}


def latency_summary(total_ms) -> dict[str, float]:
    """Mean, population std (ddof 0, as the authors), median, p95."""
    t = np.asarray(total_ms, float)
    return {"mean": float(t.mean()), "std": float(t.std(ddof=0)),
            "median": float(np.median(t)), "p95": float(np.percentile(t, 95))}
