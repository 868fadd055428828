"""The deployment planner's hierarchical topology: the HFL placement and edge aggregation in
round time, bytes and cost; the edge system's deployment gates (``jointopt plan``)."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import tomli_w
from jointopt.solvers.hfl.problem import HFLProblem
from jointopt.solvers.planner.estimate import estimate
from jointopt.solvers.planner.problem import DeploymentPlanProblem
from test_system import system

from jointopt import scenarios
from jointopt.cli import main
from jointopt.errors import InfeasibleError, ValidationError

# the METR-LA testbed of hfl_orchestration: 20 sensors in 4 clusters
DEMAND = [2, 13, 3, 20, 23, 7, 26, 23, 14, 22, 15, 8, 6, 0, 12, 16, 2, 20, 8, 3]
HIER = {"group_demand": DEMAND, "capacities": [40, 120, 40, 120],
        "homes": [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5, "local_to_global_ratio": 2,
        "edge_agg_s": 2.0, "backbone_mbps": 1000.0, "backbone_rtt_s": 0.05}


def plan_data(hierarchy=None, **changes) -> dict:
    d = copy.deepcopy(scenarios.read_scenario("planner_example"))
    d["monte_carlo"] = {"n_mc": 300, "n_outer": 100, "n_mc_grid": 150, "seed": 0}
    d["cost_rates"]["backbone_gb_usd"] = 0.02
    if hierarchy is not None:
        d["training_plan"]["topology"] = "hierarchical"
        d["hierarchy"] = {**HIER, **hierarchy}
    for key, value in changes.items():
        d[key] = value
    return d


@pytest.fixture(scope="module")
def flat_and_hier():
    flat = DeploymentPlanProblem.from_dict(plan_data())
    hier = DeploymentPlanProblem.from_dict(plan_data({}))
    return flat, estimate(flat), hier, estimate(hier)


def test_hierarchical_plan_places_aggregators_with_the_hfl_solver(flat_and_hier):
    _, _, hier, est = flat_and_hier
    v = est.values
    hflop = HFLProblem.from_dict({"workload": DEMAND, "capacities": HIER["capacities"],
                                  "homes": HIER["homes"], "edge_costs": 1.0,
                                  "local_to_global_ratio": 2}).solve()
    assert v["hfl_cost_per_global_round"] == pytest.approx(hflop.objective)
    assert v["open_aggregators"] == len(hflop.decisions["placement"])
    assert v["capacity_overflow"] == 0.0


def test_edge_aggregation_enters_round_time_bytes_and_cost(flat_and_hier):
    flat, ef, hier, eh = flat_and_hier
    sv, h = hier.server, hier.hierarchy
    s_d, s_u = eh.values["payload_down_bytes"], eh.values["payload_up_bytes"]
    used = eh.values["open_aggregators"]
    global_step = (8 * (s_d + s_u) / (h.backbone_mbps * 1e6) + h.backbone_rtt_s
                   + sv.agg_cpu_s_per_step + used * sv.agg_cpu_s_per_update
                   / sv.cores_per_instance)
    overhead = h.edge_agg_s + global_step / h.local_to_global_ratio
    assert eh.values["edge_round_overhead_s"] == pytest.approx(overhead)
    # the same Monte-Carlo draws: the rounds differ by the aggregation step alone
    t_flat = sv.agg_cpu_s_per_step + flat.training_plan.K * sv.agg_cpu_s_per_update \
        / sv.cores_per_instance
    assert eh.values["round_time"]["mean"] - ef.values["round_time"]["mean"] == \
        pytest.approx(overhead - t_flat, rel=1e-9)
    R = eh.values["rounds_to_target"]
    g = eh.values["global_rounds"]
    assert g["p50"] == pytest.approx(R["p50"] / h.local_to_global_ratio)
    assert eh.values["backbone_bytes"]["p50"] == pytest.approx(used * (s_d + s_u) * g["p50"])
    assert eh.values["cloud_usd_breakdown"]["backbone"] == pytest.approx(
        0.02 * eh.values["backbone_bytes"]["p50"] / 1e9)
    assert ef.values["cloud_usd_breakdown"]["backbone"] == 0.0
    assert "backbone_bytes" not in ef.values


def test_a_given_association_is_evaluated_and_its_overflow_reported():
    homes = HIER["homes"]  # proximity: cluster 0 and 2 exceed their capacity of 40
    p = DeploymentPlanProblem.from_dict(plan_data({"association": homes}))
    v = estimate(p).values
    loads = np.bincount(homes, weights=DEMAND, minlength=4)
    assert v["capacity_overflow"] == pytest.approx(max(loads - HIER["capacities"]))
    assert v["open_aggregators"] == 4


def test_a_placement_that_cannot_fit_is_a_hard_error():
    p = DeploymentPlanProblem.from_dict(plan_data({"capacities": [10, 10, 10, 10]}))
    with pytest.raises(InfeasibleError) as exc:
        estimate(p)
    assert exc.value.constraint in ("capacity", "participation")


@pytest.mark.parametrize("hierarchy, topology, field", [
    ({"homes": [0] * 19 + [4]}, "hierarchical", "hierarchy.homes[19]"),
    ({"group_costs": [[0.0] * 4] * 20}, "hierarchical", "hierarchy.group_costs"),
    ({"capacities": [40, -1, 40, 120]}, "hierarchical", "hierarchy.capacities[1]"),
    ({"backbone_mbps": 0.0}, "hierarchical", "hierarchy.backbone_mbps"),
    ({}, "flat", "hierarchy"),
])
def test_bad_hierarchies_name_the_field(hierarchy, topology, field):
    d = plan_data(hierarchy)
    d["training_plan"]["topology"] = topology
    with pytest.raises(ValidationError) as exc:
        DeploymentPlanProblem.from_dict(d)
    assert field in str(exc.value)


# -- the edge system's deployment gates --------------------------------------------------------
def test_plan_an_edge_system_gives_a_verdict_for_its_hierarchical_deployment(tmp_path):
    data = system(6, 2, seed=1, deployment={"base": "system_deployment"})
    path = tmp_path / "system.toml"
    path.write_text(tomli_w.dumps(data))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["plan", str(path), "--json", "--no-tornado", "--no-whatif",
                     "--n-mc", "200"])
    assert code == 0
    doc = json.loads(out.getvalue())
    assert doc["verdict"]["value"] in ("GO", "CONDITIONAL", "NO-GO")
    # the base's calibration covers the mode (a 6-device system's K lies below its runs')
    assert "training_plan.mode" not in {e["input"] for e in doc["verdict"]["extrapolated"]}
    est = doc["estimates"]
    assert est["open_aggregators"]["value"] >= 1
    assert est["backbone_bytes"]["p50"]["value"] > 0
    from jointopt.system import deployment_plan

    problem = scenarios.load(path)
    dp = deployment_plan(problem)
    assert dp.training_plan.topology == "hierarchical"
    assert dp.hierarchy.association is not None and len(dp.hierarchy.association) == 6


def test_plan_an_edge_system_without_a_base_names_the_field(tmp_path, capsys):
    path = tmp_path / "system.toml"
    path.write_text(tomli_w.dumps(system(5, 2)))
    assert main(["plan", str(path), "--json"]) == 2
    assert "deployment.base" in capsys.readouterr().err
