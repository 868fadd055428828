"""Stage G: the deployment gates of a system plan, by the ``deployment_plan`` kind with the
hierarchical topology the placement gives [project choice].

The planner scenario is the user's ``deployment.base`` (fleet telemetry, convergence
calibration, server, cost rates, budgets: what the system does not describe) with the
system's plan written over it: ``training_plan.topology = "hierarchical"``; the
``hierarchy`` of the plan (each device a group with its edge load as demand, the hosts'
capacities and costs, the device-host costs, ``l`` and ``rho``, and the plan's association,
which the planner evaluates with hfl's evaluator rather than re-solving); the results per
edge round ``K`` = the expected participants ``sum_n q_n`` of the allocation (at least 1);
the model's parameter count; the requests per device-day of the devices' mean rate.
"""

from __future__ import annotations

import copy

import numpy as np


def deployment_problem(problem, result, base: dict):
    """The ``deployment_plan`` problem of ``problem``'s plan ``result`` over ``base``."""
    from jointopt.solvers.planner.problem import DeploymentPlanProblem

    data = copy.deepcopy(base)
    data["kind"] = DeploymentPlanProblem.kind
    data["name"] = f"{problem.name}/deployment"
    data["description"] = (f"hierarchical deployment of the {problem.name} plan over "
                           f"{base.get('name', 'the base scenario')}")
    dec = result.decisions
    a = np.asarray(dec["association"], dtype=int)
    q = np.asarray(dec["q"], float)
    K = max(1, int(round(float(q[a >= 0].sum()))))
    data["training_plan"] = {**data.get("training_plan", {}), "topology": "hierarchical",
                             "K": K}
    params = float(problem.net.params.sum())
    data["model"] = {**data.get("model", {}), "n_params": params, "n_params_trainable": params}
    n_classes = len(data.get("device_classes", [])) or 1
    lam_day = float(problem.devices.arrival_rate.mean()) * 86400.0
    data["inference"] = {**data.get("inference", {}),
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
    return DeploymentPlanProblem.from_dict(data)
