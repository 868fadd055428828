"""The system objective: one function scores every iterate of the joint loop and the siloed
plan, from the decisions alone [project choice].

Where a request of device n is answered:

* on the device (rate ``s_n = lambda_n (1 - o_n)``): an M/M/1 queue at the allocated
  service rate ``mu_n``, on time with probability ``1 - exp(-(mu_n - s_n) tau_n)``; its
  accuracy is the device exit's on the requests it keeps (the confidence model's kept
  part), times the freshness of the device's model copy ``acc(ebar_n) / acc(0)``;
* on its edge host m (rate ``lambda_n o_n``): the device's compute up to its exit, the
  upload of the activation, the device-host delay, then host m's M/M/1 queue at its
  service rate ``mu_m`` (from its compute and the FLOPs it runs per request) fed by all the
  offloads of its devices: on time with probability ``1 - exp(-(mu_m - load_m) slack)``,
  ``slack`` = deadline minus the fixed delays (0 if the queue is unstable); accuracy of the
  edge exit on the offloaded requests times the edge model's freshness ``acc(K') / acc(0)``;
* in the cloud, for a device without a host (all its requests): upload of the raw input,
  an exponential WAN delay of mean ``cloud.rtt``, the cloud's compute; accuracy of the
  cloud exit.

Metrics: the request-weighted timely accuracy (the objective), the training communication
per global round (hfl's objective of the association), the edge overload
``max_m (load_m - R_m)^+``, the participants against ``floor(rho N)``, and the devices'
resource use against their caps and budgets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jointopt.models import hfl as hm
from jointopt.models.queueing import on_time_fraction


@dataclass
class Plan:
    """The decisions of one plan (an iterate or the siloed plan)."""

    association: np.ndarray
    offload: np.ndarray
    cut: np.ndarray
    threshold: np.ndarray
    host_cut: np.ndarray
    alloc: object           # stages.Allocation
    exit_weights: object    # SolveResult of cis_early_exit or None
    serving: dict           # host -> split_learning SolveResult
    placement: object       # hfl SolveResult or None (fixed association)


def host_on_time(ctx, association, cut, offload, host_cut, *, load_cap=None):
    """Per device, the on-time fraction of an offloaded request at its host, with each
    host's load the sum of its devices' offloads (at most ``load_cap`` when given); also
    the host loads and service rates."""
    p = ctx.problem
    lam, tau = ctx.lam, ctx.tau
    on = association >= 0
    rate = np.where(on, lam * offload, 0.0)
    load = np.bincount(association[on], weights=rate[on], minlength=p.M)
    if load_cap is not None:
        load = np.minimum(load, load_cap)
    mu = np.zeros(p.M)
    for s in p.cuts:
        hs = host_cut == s
        mu[hs] = p.host_service_rate(s)[hs]
    p_on = np.zeros(p.N)
    if on.any() and p.mode != "device_only":
        idx = np.flatnonzero(on & (cut >= 0))
        m = association[idx]
        fixed = np.zeros(idx.size)
        for s in p.cuts:
            k = cut[idx] == s
            fixed[k] = (p.device_time(s)[idx[k]] + p.upload_time(s)[idx[k]])
        fixed += p.delay[idx, m]
        gap = mu[m] - load[m]
        slack = tau[idx] - fixed
        p_on[idx] = np.where((gap > 0) & (slack > 0),
                             -np.expm1(-np.maximum(gap, 0.0) * np.maximum(slack, 0.0)), 0.0)
    return p_on, load, mu


def evaluate_plan(ctx, plan: Plan) -> dict:
    """Every metric of ``plan``: scalars (``timely_accuracy`` the objective,
    ``comm_per_round``, ``edge_overload``, ``feasible``, ...) and per-device / per-host
    arrays (keys ``device_*``, ``host_*``)."""
    p = ctx.problem
    dev = p.devices
    lam, tau = ctx.lam, ctx.tau
    a = plan.association
    on = a >= 0
    al = plan.alloc
    o = np.where(on, plan.offload, 1.0)
    served = np.where(on, lam * (1.0 - o), 0.0)
    to_edge = np.where(on, lam * o, 0.0)
    to_cloud = np.where(on, 0.0, lam)
    acc0 = ctx.acc_top
    f_dev = np.asarray(ctx.acc_map(al.ebar_next), float) / acc0
    f_up = float(ctx.acc_map(al.K_next)) / acc0
    p_dev = on_time_fraction(served, al.mu, tau)
    p_dev = np.where(served > 0, p_dev, 0.0)
    p_edge, load, mu_host = host_on_time(ctx, a, plan.cut, o, plan.host_cut)
    kept = np.zeros(p.N)
    off = np.zeros(p.N)
    has_cut = on & (plan.cut >= 0)
    if has_cut.any():
        kept[has_cut], off[has_cut] = ctx.parts_at(plan.cut[has_cut], o[has_cut])
    if p.mode == "device_only":
        kept[on] = ctx.parts_at(np.full(int(on.sum()), p.cuts[0]), np.zeros(int(on.sum())))[0]
    timely = np.where(on, kept * p_dev * f_dev + off * p_edge * f_up,
                      ctx.cloud_acc * ctx.cloud_on_time * f_up)
    total = float(lam.sum())
    objective = float(lam @ timely / total) if total > 0 else float("nan")
    cap = p.hosts.capacity
    tol = 1e-9 * np.maximum(1.0, cap)
    over = np.maximum(load - cap, 0.0)
    over[over <= tol] = 0.0     # rounding of the split solver's load cap, not an overload
    use = al.use
    cap_excess = np.where(on, np.maximum(use - dev.cap, 0.0), 0.0)
    budget_excess = np.where(on, np.maximum(use - dev.budget, 0.0), 0.0)
    T = hm.required_participants(p.N, p.training.participation_ratio)
    participants = int(on.sum())
    comm = hm.per_round_cost(a, p.device_costs, p.hosts.edge_cost,
                             p.training.local_to_global_ratio)
    with np.errstate(divide="ignore", invalid="ignore"):
        sojourn = np.where((mu_host > load) & (plan.host_cut >= 0),
                           1.0 / np.where(mu_host > load, mu_host - load, 1.0), np.inf)
    feasible = bool((over <= tol).all() and participants >= T
                    and (cap_excess <= 1e-9 * np.maximum(1.0, np.where(np.isfinite(dev.cap),
                                                                      dev.cap, 1.0))).all())
    share = (lambda x: float(x.sum()) / total) if total > 0 else (lambda x: float("nan"))
    return {
        "timely_accuracy": objective,
        "comm_per_round": float(comm),
        "edge_overload": float(over.max()) if over.size else 0.0,
        "participants": participants, "required_participants": T,
        "open_hosts": int(np.unique(a[on]).size),
        "share_device": share(served), "share_edge": share(to_edge),
        "share_cloud": share(to_cloud),
        "max_cap_excess": float(cap_excess.max()),
        "max_budget_excess": float(budget_excess.max()),
        "mean_resource_use": float(use[on].mean()) if on.any() else 0.0,
        "K_next": float(al.K_next),
        "feasible": feasible,
        "device_timely": timely, "device_served": served, "device_to_edge": to_edge,
        "device_to_cloud": to_cloud, "device_on_time": p_dev, "edge_on_time": p_edge,
        "device_resource_use": use,
        "host_load": load, "host_capacity": cap, "host_overload": over,
        "host_service_rate": mu_host, "host_sojourn": sojourn,
    }


def scalars(metrics: dict) -> dict:
    """The scalar metrics (what the trajectory and the siloed summary report)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, np.ndarray)}
