"""The planner's hierarchical topology: edge aggregation from the HFL placement.

Devices train with their edge aggregator every (edge) round and the aggregators exchange
the model with the cloud every ``l`` edge rounds [project choice, the planner's contract
with the placement solver]: the placement is the ``hfl`` kind's own solver (or the fixed
association of ``hierarchy.association``, evaluated by hfl's evaluator); the planner's
rounds count edge rounds, so there are ``R / l`` global rounds.

* Round time: each edge round adds the edge hosts' aggregation step ``edge_agg_s`` (they
  aggregate in parallel) and one ``l``-th of a global step: every used host uploads its
  aggregate and downloads the global model over the backbone
  (``8 (S_d + S_u) / backbone rate + backbone_rtt_s``), and the cloud aggregates the used
  hosts' models (``agg_cpu_s_per_step + used * agg_cpu_s_per_update / cores``).
* Bytes and cost: the backbone carries ``used (S_d + S_u)`` per global round (the
  edge-cloud bytes of the placement), charged at ``cost_rates.backbone_gb_usd``;
  device-edge bytes are the flat accounting's.
* Reported: the placement's communication cost per global round (hfl's objective), the
  open aggregators, the per-host capacity overflow (0 for a capacity-aware placement).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from jointopt.models.errors import InfeasibleError


@dataclass
class HierarchyPlan:
    """The placement and what it adds to a round."""

    association: np.ndarray
    open_hosts: np.ndarray
    cost_per_global_round: float
    overflow: np.ndarray
    status: str
    method: str
    l: float  # noqa: E741 - edge rounds per global round, hfl's symbol

    @property
    def used(self) -> int:
        return int(self.open_hosts.size)

    def global_step_s(self, s_d: float, s_u: float, server, spec) -> float:
        """Seconds of one global aggregation (backbone transfer, latency, cloud step)."""
        transfer = 8.0 * (s_d + s_u) / (spec.backbone_mbps * 1e6) + spec.backbone_rtt_s
        cloud = server.agg_cpu_s_per_step + self.used * server.agg_cpu_s_per_update \
            / server.cores_per_instance
        return transfer + cloud

    def edge_round_overhead_s(self, s_d: float, s_u: float, server, spec) -> float:
        """What each edge round adds after the devices' tasks: the edge step plus one
        ``l``-th of a global step."""
        return spec.edge_agg_s + self.global_step_s(s_d, s_u, server, spec) / self.l

    def backbone_bytes_per_global_round(self, s_d: float, s_u: float) -> float:
        return self.used * (s_d + s_u)


def hfl_problem(spec, model_size_mb: float):
    """The ``hfl`` problem of the hierarchy section."""
    from jointopt.solvers.hfl.problem import HFLProblem

    data = {"name": "planner/hierarchy", "workload": spec.group_demand,
            "capacities": spec.capacities, "edge_costs": spec.edge_costs,
            "local_to_global_ratio": spec.local_to_global_ratio,
            "participation_ratio": spec.participation_ratio,
            "accounting": {"model_size_mb": model_size_mb}}
    if spec.group_costs is not None:
        data["device_costs"] = spec.group_costs
    else:
        data["homes"] = spec.homes
    return HFLProblem.from_dict(data)


_CACHE: dict[str, HierarchyPlan] = {}


def place(problem, s_d: float) -> HierarchyPlan:
    """The placement of ``problem.hierarchy`` (cached by the section: the what-if grid and
    the tornado change no placement input). An infeasible placement is a hard error."""
    spec = problem.hierarchy
    key = json.dumps(spec.model_dump(), sort_keys=True)
    if key in _CACHE:
        return _CACHE[key]
    prob = hfl_problem(spec, s_d / 1e6)
    if spec.association is not None:
        a = np.asarray(spec.association, dtype=np.int64)
        ev = prob.evaluate(a)
        status, method = ("given" if ev.participants >= prob.T else "infeasible"), "given"
        cost, overflow = float(ev.objective), np.asarray(ev.overload, float)
    else:
        res = prob.solve(method=spec.method, time_limit=spec.time_limit)
        a = np.asarray(res.decisions["association"], dtype=np.int64)
        status, method = res.status, spec.method
        cost = float(res.diagnostics["per_round_cost"])
        overflow = np.asarray(res.diagnostics["overload"], float)
        if not res.diagnostics["feasible"]:
            raise prob.infeasible_by_solver()
    if status == "infeasible":
        raise InfeasibleError("participation", f"hierarchy.association places fewer than the "
                                               f"{prob.T} groups participation needs",
                              field="hierarchy.association")
    plan = HierarchyPlan(a, np.unique(a[a >= 0]), cost, overflow, status, method,
                         float(spec.local_to_global_ratio))
    if len(_CACHE) > 64:
        _CACHE.clear()
    _CACHE[key] = plan
    return plan


def record(put, plan: HierarchyPlan, spec, s_d: float, s_u: float, server, rounds: dict
           ) -> None:
    """The hierarchy's estimates (``put(name, value, paths, method, unit)``); ``rounds``:
    the P50 / P90 edge rounds to target."""
    paths = ["hierarchy.group_demand", "hierarchy.capacities", "hierarchy.edge_costs"]
    put("hfl_cost_per_global_round", plan.cost_per_global_round, paths, "analytic", "")
    put("open_aggregators", plan.used, paths, "analytic", "hosts")
    put("capacity_overflow", float(plan.overflow.max(initial=0.0)), paths, "analytic", "1/s")
    put("edge_round_overhead_s", plan.edge_round_overhead_s(s_d, s_u, server, spec),
        ["hierarchy.edge_agg_s", "hierarchy.backbone_mbps"], "analytic", "s")
    g = {q: rounds[q] / plan.l for q in ("p50", "p90")}
    put("global_rounds", g, ["hierarchy.local_to_global_ratio"], "analytic", "rounds")
    per = plan.backbone_bytes_per_global_round(s_d, s_u)
    put("backbone_bytes", {q: per * g[q] for q in g}, ["model.n_params"] + paths,
        "analytic", "B")
