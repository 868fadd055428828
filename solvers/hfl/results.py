"""Packaging HFLOP outcomes as :class:`HFLResult` (result object)."""

from __future__ import annotations

import math

import numpy as np
from jointopt.models import hfl as hm
from jointopt.solvers.hfl.problem import HFLResult

SOLVER_NAMES = {"highs": "HiGHS (matrix path)", "pyomo": "HiGHS via Pyomo (appsi)",
                "heuristic": "H2/H1 + H3 local search with host moves",
                "uncapacitated": "HiGHS (matrix path), capacities dropped",
                "proximity": "proximity baseline (cheapest host)"}


def tidy(value):
    """A derived float without its binary noise (``90.00000000000001`` -> ``90.0``): 12
    significant digits, far below any cost or percentage that matters; arrays element-wise,
    non-finite values unchanged."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind != "f":
            return value
        out = value.astype(float).copy()
        fin = np.isfinite(out)
        out[fin] = [float(f"{v:.12g}") for v in out[fin]] if out.size <= 10_000 else out[fin]
        return out
    if isinstance(value, float | np.floating) and math.isfinite(value):
        return float(f"{float(value):.12g}")
    return value


def baselines(prob, assignment=None) -> dict:
    """Flat FL, proximity HFL and (when given) the assignment's costs per round and in total,
    with the savings vs flat FL. Pass no assignment for a plan that does not
    exist (an infeasible heuristic result): then no totals or savings are reported."""
    acc = prob.accounting
    kw = dict(model_size_mb=acc.model_size_mb, unit_costs=acc.unit_costs)
    parts = None if acc.fl_participants == "all" else prob.T
    flat_round = hm.flat_fl_cost_per_round(prob.cd, prob.ce, participants=parts,
                                           unit_costs=acc.unit_costs)
    flat_total = hm.flat_total_cost(prob.cd, prob.ce, rounds=acc.rounds_fl,
                                    participants=parts, **kw)
    prox = hm.proximity_assignment(prob.cd)
    prox_total = hm.hfl_total_cost(prox, prob.cd, prob.ce, prob.l, rounds=acc.rounds_hfl, **kw)
    out = {
        "flat_cost_per_round": flat_round, "flat_total_mb": flat_total,
        "proximity_cost_per_round": hm.per_round_cost(prox, prob.cd, prob.ce, prob.l),
        "proximity_total_mb": prox_total,
        "proximity_saving_pct": hm.saving_percent(flat_total, prox_total),
        "proximity_overload": np.maximum(0.0, hm.host_loads(prob.workload, prox, prob.M)
                                         - prob.capacities),
    }
    if assignment is not None:
        tot = hm.hfl_total_cost(assignment, prob.cd, prob.ce, prob.l, rounds=acc.rounds_hfl,
                                **kw)
        out["hfl_total_mb"] = tot
        out["saving_pct"] = hm.saving_percent(flat_total, tot)
        out["edge_cloud_mb"] = hm.edge_cloud_mb(assignment, prob.M,
                                                model_size_mb=acc.model_size_mb,
                                                rounds=acc.rounds_hfl)
    return {k: tidy(v) for k, v in out.items()}


def package(prob, method, out, seconds, options) -> HFLResult:
    """The result object. A result without a plan (status ``infeasible``: fewer
    than ``T`` devices placed) carries the partial association and why, but no objective,
    bound, gap, totals or savings."""
    a = out.assignment
    ev = prob.evaluate(a)
    used = np.flatnonzero(ev.used)
    plan = out.status != "infeasible"
    ub = out.objective if plan else math.nan
    lb = out.lower_bound if plan else math.nan
    gap = (ub - lb) / max(abs(ub), 1e-9) if math.isfinite(lb) and math.isfinite(ub) else math.inf
    if math.isfinite(gap) and ub == lb:
        gap = 0.0
    on = a >= 0
    dev_cost = np.where(on, prob.l * prob.cd[np.arange(prob.N), np.maximum(a, 0)], 0.0)
    diag = {
        "participants": ev.participants, "required": prob.T, "feasible": ev.feasible,
        "load": ev.loads, "capacity": prob.capacities, "overload": ev.overload,
        "device_cost": dev_cost, "times": {k: round(float(v), 6) for k, v in out.times.items()},
        "method": method,
        **{k: v for k, v in out.info.items() if k != "history"},
    }
    if plan:
        diag = {"per_round_cost": tidy(ev.objective), "lower_bound": tidy(lb),
                "upper_bound": tidy(ub), "mip_gap": tidy(max(0.0, gap)),
                "used_hosts": int(ev.used.sum()), **diag, **baselines(prob, a)}
        if "bounds" in diag:
            diag["bounds"] = {k: tidy(v) for k, v in diag["bounds"].items()}
    else:
        diag["reason"] = ev.reason
        diag.update(baselines(prob))
    if prob.latency is not None and plan:
        lam = ev.loads
        host = hm.host_latency(lam, prob.service_rate)
        diag.update({"mean_latency_s": tidy(prob.mean_latency(a)),
                     "host_sojourn_s": tidy(host["sojourn"]),
                     "utilisation": tidy(host["utilisation"]), "service_rate": prob.service_rate,
                     "history": out.info.get("history", [])})
    return HFLResult(
        kind=prob.kind, scenario=prob.name, status=out.status, objective=tidy(float(ub)),
        solver=SOLVER_NAMES[method], solve_time_s=round(float(seconds), 6),
        iterations=int(out.info.get("iterations", out.info.get("nodes", 0)) or 0),
        decisions={"association": a.astype(np.int64), "placement": used.astype(np.int64)},
        diagnostics=diag)
