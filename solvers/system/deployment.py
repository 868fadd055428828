"""Stage G: the deployment gates of a system plan, by the ``deployment_plan`` kind with the
hierarchical topology the placement gives [project choice].

The planner scenario is assembled from, lowest precedence first:

1. ``deployment.base``, a ``deployment_plan`` scenario (optional);
2. the ``deployment_plan`` sections the system scenario carries in ``[deployment]``
   (``device_classes``, ``population``, ``convergence``, ``server``, ...; field by field);
3. the system's ``[costs]`` over ``cost_rates`` and its ``[budgets]`` over ``budgets``
   (``budgets.latency_slo_p95_ms`` over ``inference.latency_slo_p95_ms``);
4. what the system itself knows, written over everything: ``population.n_devices`` = its
   devices; the model's parameter count (float32 payload and checkpoint unless given); the
   requests per device-day of the devices' mean rate; the inference SLO, where none is
   given, the largest device deadline; the least on-device share, where none is given, the
   plan's; ``training_plan.topology = "hierarchical"`` (mode ``sync`` unless given) with
   ``K`` = the expected participants ``sum_n q_n`` of the allocation (at least 1); and the
   ``hierarchy`` of the plan (each device a group with its edge load as demand, the hosts'
   capacities and costs, the device-host costs, ``l`` and ``rho``, and the plan's
   association, which the planner evaluates with hfl's evaluator rather than re-solving).

Errors of the assembled scenario name the system's fields where the value came from the
system scenario (``deployment.server.cores_per_instance``, ``costs.egress_gb_usd``).
"""

from __future__ import annotations

import copy

import numpy as np
from jointopt.models.errors import ValidationError


def _merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` written over it, tables merged key by key (lists replaced)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def deployment_data(problem, result, base: dict | None) -> dict:
    """The ``deployment_plan`` scenario (a dict) of ``problem``'s plan ``result`` (module
    docstring), before validation."""
    from jointopt.solvers.planner.problem import DeploymentPlanProblem

    data = copy.deepcopy(base) if base is not None else {}
    data = _merge(data, problem.deployment.sections())
    data["kind"] = DeploymentPlanProblem.kind
    data["name"] = f"{problem.name}/deployment"
    source = base.get("name", "the base scenario") if base is not None else "the system scenario"
    data["description"] = f"hierarchical deployment of the {problem.name} plan over {source}"
    data["cost_rates"] = {**data.get("cost_rates", {}), **problem.costs.given()}
    budgets = {k: v for k, v in problem.budgets.model_dump().items() if v is not None}
    slo = budgets.pop("latency_slo_p95_ms", None)
    data["budgets"] = {**data.get("budgets", {}), **budgets}
    dec, diag = result.decisions, result.diagnostics
    a = np.asarray(dec["association"], dtype=int)
    q = np.asarray(dec["q"], float)
    K = max(1, int(round(float(q[a >= 0].sum()))))
    data["training_plan"] = {"mode": "sync", **data.get("training_plan", {}),
                             "topology": "hierarchical", "K": K}
    params = float(problem.net.params.sum())
    data["model"] = {"bytes_per_param_down": 4.0, "bytes_per_param_up": 4.0,
                     "checkpoint_bytes": params * 4.0, **data.get("model", {}),
                     "n_params": params, "n_params_trainable": params}
    data["population"] = {**data.get("population", {}), "n_devices": problem.N}
    n_classes = len(data.get("device_classes", [])) or 1
    lam_day = float(problem.devices.arrival_rate.mean()) * 86400.0
    inference = data.get("inference", {})
    data["inference"] = {
        "latency_slo_p95_ms": float(problem.devices.deadline.max()) * 1e3,
        "min_on_device_share": float(diag["share_device"]), **inference,
        **({"latency_slo_p95_ms": slo} if slo is not None else {}),
        "requests_per_device_day": [lam_day] * n_classes}
    dep, tr = problem.deployment, problem.training
    data["hierarchy"] = {
        "group_demand": np.asarray(dec["edge_load"], float).tolist(),
        "capacities": problem.hosts.capacity.tolist(),
        "edge_costs": problem.hosts.edge_cost.tolist(),
        "group_costs": problem.device_costs.tolist(),
        "local_to_global_ratio": tr.local_to_global_ratio,
        "participation_ratio": tr.participation_ratio,
        "association": a.tolist(),
        "edge_agg_s": dep.edge_agg_s, "backbone_mbps": dep.backbone_mbps,
        "backbone_rtt_s": dep.backbone_rtt_s}
    return data


def system_field(problem, field: str) -> str:
    """The system scenario's name of a planner field, where the system scenario gave it."""
    head, _, rest = field.partition(".")
    section = head.split("[")[0]
    if section in problem.deployment.sections():
        return f"deployment.{field}"
    if section == "cost_rates" and rest.split(".")[0] in problem.costs.given():
        return f"costs.{rest}"
    if field == "inference.latency_slo_p95_ms" and problem.budgets.latency_slo_p95_ms is not None:
        return "budgets.latency_slo_p95_ms"
    return field


def deployment_problem(problem, result, base: dict | None):
    """The ``deployment_plan`` problem of ``problem``'s plan ``result`` over ``base`` (a
    ``deployment_plan`` scenario dict, or None: the system scenario then holds it all)."""
    from jointopt.solvers.planner.problem import DeploymentPlanProblem, PlannerInputError

    try:
        return DeploymentPlanProblem.from_dict(deployment_data(problem, result, base))
    except PlannerInputError as exc:
        raise PlannerInputError([(system_field(problem, f), m) for f, m in exc.problems]
                                ) from None
    except ValidationError as exc:
        raise type(exc)(system_field(problem, exc.field), exc.message) from None
