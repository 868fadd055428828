"""Packaging HFLOP outcomes as :class:`HFLResult` (result object)."""

from __future__ import annotations

import math

import numpy as np
from jointopt.models import hfl as hm
from jointopt.solvers.hfl.problem import HFLResult

SOLVER_NAMES = {"highs": "HiGHS (matrix path)", "pyomo": "HiGHS via Pyomo (appsi)",
                "heuristic": "H2/H1 + H3 local search with host moves"}


def baselines(prob, assignment=None) -> dict:
    """Flat FL, proximity HFL and (when given) the assignment's costs per round and in total,
    with the savings vs flat FL."""
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
    return out


def package(prob, method, out, seconds, options) -> HFLResult:
    a = out.assignment
    ev = prob.evaluate(a)
    used = np.flatnonzero(ev.used)
    ub = out.objective
    lb = out.lower_bound
    gap = (ub - lb) / max(abs(ub), 1e-9) if math.isfinite(lb) and math.isfinite(ub) else math.inf
    if math.isfinite(gap) and ub == lb:
        gap = 0.0
    on = a >= 0
    dev_cost = np.where(on, prob.l * prob.cd[np.arange(prob.N), np.maximum(a, 0)], 0.0)
    diag = {
        "per_round_cost": ev.objective, "lower_bound": lb, "upper_bound": ub,
        "mip_gap": max(0.0, gap), "used_hosts": int(ev.used.sum()),
        "participants": ev.participants, "required": prob.T, "feasible": ev.feasible,
        "load": ev.loads, "capacity": prob.capacities, "overload": ev.overload,
        "device_cost": dev_cost, "times": out.times, "method": method,
        **{k: v for k, v in out.info.items() if k != "history"},
        **baselines(prob, a),
    }
    if prob.latency is not None:
        lam = ev.loads
        host = hm.host_latency(lam, prob.service_rate)
        diag.update({"mean_latency_s": prob.mean_latency(a), "host_sojourn_s": host["sojourn"],
                     "utilisation": host["utilisation"], "service_rate": prob.service_rate,
                     "history": out.info.get("history", [])})
    return HFLResult(
        kind=prob.kind, scenario=prob.name, status=out.status, objective=float(ub),
        solver=SOLVER_NAMES[method], solve_time_s=float(seconds),
        iterations=int(out.info.get("iterations", out.info.get("nodes", 0)) or 0),
        decisions={"association": a.astype(np.int64), "placement": used.astype(np.int64)},
        diagnostics=diag)
