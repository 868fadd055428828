"""One edge system, one plan (kind ``edge_system``): reductions to the kinds it composes,
consistency of the returned plan, joint >= siloed, determinism, random small systems."""

from __future__ import annotations

import contextlib
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jointopt.solvers.hfl.problem import HFLProblem
from jointopt.solvers.jti import JointTrainingInferenceProblem
from jointopt.solvers.split import SplitProblem
from jointopt.solvers.system import EdgeSystemProblem
from jointopt.solvers.system.stages import early_exit_network

import jointopt
from jointopt import scenarios
from jointopt.cli import main
from jointopt.errors import InfeasibleError, ValidationError

ENTROPY = {"main_a": 1.3, "main_b": 4.0, "ood_a": 5.0, "ood_b": 1.5, "client_acc_main": 0.93,
           "client_acc_ood": 0.05, "server_acc_main": 0.96, "server_acc_ood": 0.85}


def system(n: int = 6, m: int = 2, seed: int = 0, **sections) -> dict:
    """A small random edge system (a scenario dict); ``sections`` replace or extend."""
    rng = np.random.default_rng(seed)
    lam = rng.uniform(1.0, 8.0, n)
    data = {
        "kind": "edge_system", "name": f"small-{n}-{m}-{seed}",
        "devices": {"count": n, "arrival_rate": lam.tolist(), "deadline": 0.1,
                    "data_weight": rng.uniform(0.5, 1.5, n).tolist(),
                    "f_device": rng.uniform(5e7, 2e8, n).tolist(),
                    "uplink_rate": rng.uniform(5e6, 5e7, n).tolist(),
                    "ood_ratio": rng.uniform(0.2, 1.0, n).tolist(),
                    "cost_train": 4.0, "cost_download": 1.0, "cost_service": 0.25,
                    "cap": 8.0, "budget": 4.0, "mu_max": 40.0, "q_min": 0.05,
                    "home": rng.integers(0, m, n).tolist()},
        "hosts": {"count": m, "capacity": rng.uniform(5.0, 30.0, m).tolist(), "f_host": 6e7},
        "model": {"exits": [2, 4], "cloud_acc_main": 0.98, "cloud_acc_ood": 0.92,
                  "entropy": ENTROPY, "threshold_grid": 33},
        "training": {"participation_ratio": 0.8, "state": {"K": 0.5, "Z": 0.5},
                     "controller": {"V": 10.0}},
        "loop": {"max_iters": 4, "w_grid": 30},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def check_plan(problem: EdgeSystemProblem, result) -> None:
    """The plan's invariants, recomputed from its decisions alone."""
    dec, diag = result.decisions, result.diagnostics
    dev = problem.devices
    a = np.asarray(dec["association"])
    lam = dev.arrival_rate
    on = a >= 0
    # every associated device joins an open host; participation
    assert set(a[on]) <= set(np.asarray(dec["placement"]).tolist())
    assert on.sum() >= diag["required_participants"]
    # served + forwarded = arrived, at every device; hosts serve what they receive
    served, edge, cloud = (np.asarray(dec[k]) for k in ("served_on_device", "edge_load",
                                                        "cloud_load"))
    np.testing.assert_allclose(served + edge + cloud, lam, rtol=1e-12, atol=1e-12)
    assert (cloud[on] == 0).all() and (served[~on] == 0).all() and (edge[~on] == 0).all()
    load = np.bincount(a[on], weights=edge[on], minlength=problem.M)
    np.testing.assert_allclose(load, diag["host_load"], rtol=1e-12, atol=1e-12)
    # the allocation serves what the device keeps, within its cap
    q, d, mu = (np.asarray(dec[k]) for k in ("q", "d", "mu"))
    margin = 1 + problem.training.controller.service_margin
    assert (mu[on] >= served[on] * margin - 1e-9).all()
    use = dev.cost_train * q + dev.cost_download * d + dev.cost_service * mu
    assert (use[on] <= dev.cap[on] * (1 + 1e-9)).all()
    if result.status == "feasible":
        assert (load <= problem.hosts.capacity * (1 + 1e-9) + 1e-9).all()
        assert diag["edge_overload"] == 0.0
    # the objective is the request-weighted timely accuracy of the per-device values
    timely = np.asarray(diag["device_timely"])
    if lam.sum() == 0:
        assert np.isnan(result.objective)
        return
    assert result.objective == pytest.approx(float(lam @ timely / lam.sum()), rel=1e-12)
    assert 0.0 <= result.objective <= 1.0


# -- the built-in example, through the CLI ---------------------------------------------------
@pytest.fixture(scope="module")
def example():
    """``jointopt solve system_example --json``, in this process (the CLI's own tests check
    that nothing but the JSON object reaches file descriptor 1)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["solve", "system_example", "--json"])
    return code, out.getvalue()


def test_solve_system_example_json(example):
    code, text = example
    assert code == 0
    doc = json.loads(text)  # one JSON object, nothing else
    dec, diag = doc["decisions"], doc["diagnostics"]
    n = 40
    for key in ("association", "q", "d", "mu", "edge_load"):
        assert len(dec[key]) == n
    assert doc["kind"] == "edge_system" and doc["status"] == "feasible"
    siloed = diag["siloed"]
    assert {"timely_accuracy", "edge_overload", "comm_per_round", "feasible"} <= siloed.keys()
    assert doc["objective"] >= siloed["timely_accuracy"]
    assert diag["edge_overload"] == 0.0
    # the example's siloed placement assumes every request at the edge: no placement fits,
    # the inference-unaware one overloads hosts, and the joint plan does not
    assert siloed["edge_overload"] > 0 and not siloed["feasible"]
    assert siloed["notes"]
    rows = diag["trajectory"]
    assert rows[0]["plan"] == "siloed" and len(rows) == doc["iterations"] + 1
    assert all(r["timely_accuracy"] <= doc["objective"] + 1e-12 for r in rows if r["feasible"])
    assert "no optimality claim" in diag["heuristic"]


def test_system_example_plan_is_consistent(example):
    problem = jointopt.load_scenario("system_example")
    assert problem.N == 40 and problem.M == 4 and problem.mode == "early_exit"
    doc = json.loads(example[1])
    result = SimpleNamespace(**{k: doc[k] for k in ("decisions", "diagnostics", "status")},
                             objective=doc["objective"])
    check_plan(problem, result)
    w = result.diagnostics["exit_weights"]
    assert len(w) == 3 and abs(sum(w) - 1) < 1e-9


def scaled_example(capacity: float) -> EdgeSystemProblem:
    """system_example with every host's capacity times ``capacity``."""
    data = scenarios.read_scenario("system_example")
    data["hosts"] = {**data["hosts"],
                     "capacity": [c * capacity for c in data["hosts"]["capacity"]]}
    return scenarios.from_dict(data)


def test_more_edge_capacity_never_lowers_the_joint_plan(example):
    """Raising every host's capacity (x1, x1.5, x2.5 on system_example) never lowers the
    joint plan's timely accuracy, and every plan fits its hosts. (The loop is a heuristic:
    this is measured on this grid, not proved in general.)"""
    values = [json.loads(example[1])["objective"]]
    for factor in (1.5, 2.5):
        result = scaled_example(factor).solve()
        assert result.status == "feasible" and result.diagnostics["edge_overload"] == 0.0
        values.append(result.objective)
    # 1e-6: well above the resolution of the serving stage's scan (plans equal up to it)
    assert all(b >= a - 1e-6 for a, b in zip(values, values[1:], strict=False)), values


# -- reductions ----------------------------------------------------------------------------------
def test_one_ample_host_allocation_is_the_joint_allocator_on_the_same_devices():
    """One host that takes everything, zero edge cost: the allocation stage equals
    joint_training_inference on the devices, each with the requests it serves itself (and,
    where the plan's allocation was handed them, the requests answered upstream)."""
    data = system(6, 1, seed=3, hosts={"count": 1, "capacity": 1e6, "edge_cost": 0.0},
                  training={"participation_ratio": 1.0, "state": {"K": 0.5, "Z": 0.5},
                            "controller": {"V": 10.0}})
    problem = EdgeSystemProblem.from_dict(data)
    result = problem.solve()
    check_plan(problem, result)
    dev = problem.devices
    served = np.asarray(result.decisions["served_on_device"])
    clients = {k: getattr(dev, k).tolist() for k in (
        "data_weight", "deadline", "cost_train", "cost_download", "cost_service", "cap",
        "budget", "mu_max", "q_min")}
    # the upstream requests the plan's allocation was handed (0: the allocator alone): one
    # more client that holds the newest model, costs nothing and weighs nothing in training
    upstream = result.diagnostics["trajectory"][result.diagnostics["best_iterate"]]["upstream"]
    extra = {"data_weight": 1e-9 * sum(clients["data_weight"]), "deadline": float("inf"),
             "cost_train": 0.0, "cost_download": 0.0, "cost_service": 0.0,
             "cap": float("inf"), "budget": 1.0, "mu_max": 1e12, "q_min": 1.0}
    for key, value in extra.items():
        clients[key].append(value)
    by_hand = JointTrainingInferenceProblem.from_dict({
        "clients": {"count": 7, "arrival_rate": [*served.tolist(), upstream], **clients},
        "convergence": {"a": 0.8, "b": 0.3, "c": 0.02}, "controller": {"V": 10.0},
        "state": {"K": 0.5, "Z": 0.5}}).solve()
    for key in ("q", "d", "mu"):
        np.testing.assert_allclose(result.decisions[key], by_hand.decisions[key][:6],
                                   rtol=1e-9)


def test_zero_requests_placement_is_the_hflop_optimum():
    data = system(7, 3, seed=5, devices={"arrival_rate": 0.0},
                  hosts={"count": 3, "capacity": [4.0, 0.0, 9.0], "edge_cost": [1.0, 2.0, 3.0]})
    problem = EdgeSystemProblem.from_dict(data)
    result = problem.solve()
    check_plan(problem, result)
    hflop = HFLProblem.from_dict({
        "workload": 0.0, "capacities": [4.0, 0.0, 9.0], "edge_costs": [1.0, 2.0, 3.0],
        "homes": data["devices"]["home"], "local_to_global_ratio": 4.0,
        "participation_ratio": 0.8}).solve()
    assert result.diagnostics["comm_per_round"] == pytest.approx(hflop.objective)
    assert np.isnan(result.objective)  # no request: no timely accuracy to speak of


@pytest.mark.parametrize("mode", ["early_exit", "split"])
def test_fixed_association_serving_is_split_learning_per_host(mode):
    """A user-given association: the siloed serving stage equals split_learning solved by
    hand per host over the devices associated with it."""
    assoc = [0, 1, 0, -1, 1, 0]
    data = system(6, 2, seed=2, placement={"association": assoc}, inference={"mode": mode})
    if mode == "split":
        data["model"] = {**data["model"], "cuts": [2, 3]}
    problem = EdgeSystemProblem.from_dict(data)
    result = problem.solve(method="siloed")
    check_plan(problem, result)
    dev = data["devices"]
    network = early_exit_network(problem) if mode == "early_exit" else \
        {"preset": "digits_cnn", "cuts": [2, 3]}
    home = dev["home"]
    for m in (0, 1):
        idx = [i for i, h in enumerate(assoc) if h == m]
        # a device away from home pays the longer network delay out of its deadline
        budget = [0.1 - (0.012 - 0.005) * (home[i] != m) for i in idx]
        by_hand = SplitProblem.from_dict({
            "network": network, "entropy": ENTROPY,
            "server": {"f_server": 6e7, "tau0": 0.005},
            "clients": {"count": len(idx), "f_client": [dev["f_device"][i] for i in idx],
                        "uplink_rate": [dev["uplink_rate"][i] for i in idx],
                        "request_rate": [dev["arrival_rate"][i] for i in idx],
                        "latency_budget": budget,
                        "ood_ratio": [dev["ood_ratio"][i] for i in idx]},
            "optimizer": {"w_grid": 30, "n_threshold_grid": 33}}).solve()
        np.testing.assert_allclose(np.asarray(result.decisions["offload"])[idx],
                                   np.maximum(by_hand.decisions["q"],
                                              problem.forced_offload[idx]), rtol=1e-12)
        cut = by_hand.diagnostics["split"] if mode == "split" else 2
        assert (np.asarray(result.decisions["cut"])[idx] == cut).all()
    assert result.decisions["offload"][3] == 1.0 and result.decisions["cloud_load"][3] > 0


# -- joint against siloed ----------------------------------------------------------------------
def test_joint_is_at_least_the_feasible_siloed_plan():
    data = system(8, 2, seed=4, hosts={"count": 2, "capacity": 200.0})
    problem = EdgeSystemProblem.from_dict(data)
    result = problem.solve()
    siloed = result.diagnostics["siloed"]
    assert siloed["feasible"]  # ample capacity: the siloed plan fits
    assert result.objective >= siloed["timely_accuracy"] - 1e-12
    check_plan(problem, result)
    # hfl needs floor(0.8 * 8) = 6 participants; with room at their zero-cost home hosts the
    # joint plan associates all 8 (no request left to the cloud) at no extra communication
    assert siloed["participants"] >= 6 and result.diagnostics["participants"] == 8
    assert result.diagnostics["share_cloud"] == 0.0
    assert result.diagnostics["comm_per_round"] <= siloed["comm_per_round"] + 1e-12


def test_same_scenario_same_plan():
    data = system(8, 3, seed=9)
    a = EdgeSystemProblem.from_dict(data).solve()
    b = EdgeSystemProblem.from_dict(data).solve()
    for key, value in a.decisions.items():
        np.testing.assert_array_equal(value, b.decisions[key])
    assert a.objective == b.objective or (np.isnan(a.objective) and np.isnan(b.objective))


@settings(max_examples=6, deadline=None)
@given(n=st.integers(2, 8), m=st.integers(1, 3), seed=st.integers(0, 10_000),
       mode=st.sampled_from(["early_exit", "split", "device_only"]))
def test_random_small_systems_keep_the_invariants(n, m, seed, mode):
    data = system(n, m, seed, inference={"mode": mode}, loop={"max_iters": 2, "w_grid": 20})
    if mode == "device_only":
        data["devices"]["arrival_rate"] = np.minimum(data["devices"]["arrival_rate"],
                                                     10.0).tolist()
    try:
        problem = EdgeSystemProblem.from_dict(data)
    except InfeasibleError as exc:  # a random system may be beyond any plan: named family
        assert exc.constraint in ("capacity", "participation", "latency", "device capacity")
        return
    result = problem.solve()
    check_plan(problem, result)
    siloed = result.diagnostics["siloed"]
    if siloed["feasible"] and np.isfinite(siloed["timely_accuracy"]):
        assert result.objective >= siloed["timely_accuracy"] - 1e-12
    if siloed["edge_overload"] > 0:
        assert result.status == "feasible" or result.diagnostics["notes"]


# -- validation -----------------------------------------------------------------------------------
def test_errors_name_the_field_and_index():
    data = system(5, 2)
    data["devices"]["arrival_rate"][3] = -1.0
    with pytest.raises(ValidationError, match=r"devices\[3\]\.arrival_rate"):
        EdgeSystemProblem.from_dict(data)
    with pytest.raises(ValidationError, match=r"devices\[1\]\.home"):
        EdgeSystemProblem.from_dict(system(5, 2, devices={"home": [0, 2, 0, 1, 1]}))
    with pytest.raises(ValidationError, match=r"placement\.association\[0\]"):
        EdgeSystemProblem.from_dict(system(5, 2, placement={"association": [5, 0, 0, 1, 1]}))
    with pytest.raises(ValidationError, match=r"model\.exits"):
        EdgeSystemProblem.from_dict(system(5, 2, model={"exits": [4, 2]}))
    with pytest.raises(ValidationError, match=r"devices\.speed"):
        EdgeSystemProblem.from_dict(system(5, 2, devices={"speed": 1.0}))


def test_infeasible_systems_name_the_family():
    with pytest.raises(InfeasibleError, match="deadline") as exc:
        EdgeSystemProblem.from_dict(system(5, 2, devices={"deadline": 0.001}))
    assert exc.value.constraint == "latency"
    # devices that cannot serve their requests and hosts too small for what they must forward
    with pytest.raises(InfeasibleError) as exc:
        EdgeSystemProblem.from_dict(system(5, 2, devices={"cost_service": 2.0},
                                           hosts={"count": 2, "capacity": 0.5},
                                           training={"participation_ratio": 1.0}))
    assert exc.value.constraint in ("capacity", "participation")
    assert exc.value.field in ("hosts.capacity", "devices.arrival_rate")
    with pytest.raises(InfeasibleError) as exc:
        EdgeSystemProblem.from_dict(system(5, 2, devices={"cap": 0.1}))
    assert exc.value.constraint == "hard cap" and exc.value.field == "devices[0].cap"


def test_scenario_round_trips_and_is_registered(tmp_path):
    assert "system_example" in scenarios.builtin_names()
    problem = jointopt.load_scenario("system_example")
    again = jointopt.load_scenario(jointopt.dump(problem, tmp_path / "s.toml"))
    assert again == problem
    np.testing.assert_array_equal(again.homes, problem.homes)


def test_out_writes_result_tables_report_and_figure(tmp_path):
    from jointopt.system import write_outputs

    problem = EdgeSystemProblem.from_dict(system(7, 2, seed=6))
    result = problem.solve()
    paths = write_outputs(result, problem, tmp_path)
    names = {p.name for p in paths}
    assert names == {"result.json", "devices.csv", "hosts.csv", "trajectory.csv",
                     "report.md", "system.png"}
    import pandas as pd

    devices = pd.read_csv(tmp_path / "devices.csv")
    hosts = pd.read_csv(tmp_path / "hosts.csv")
    assert len(devices) == 7 and len(hosts) == 2
    np.testing.assert_allclose(hosts["load"], result.diagnostics["host_load"])
    np.testing.assert_allclose(devices["edge_load"], result.decisions["edge_load"])
    report = (tmp_path / "report.md").read_text()
    assert "Joint against siloed" in report and "no optimality" in report
    assert (tmp_path / "system.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "result.json").read_text())["kind"] == "edge_system"


def test_the_result_reports_the_placement_method_and_its_gap():
    """placement.method = 'auto' runs hfl's exact MILP up to placement.exact_limit
    device-host pairs and its heuristic (with its staged lower bounds) beyond; the result says
    which ran, why, its status, bound and gap."""
    def placement(**section):
        problem = EdgeSystemProblem.from_dict(system(6, 2, seed=3, placement=section))
        return problem.solve(method="siloed").diagnostics["placement"]

    exact = placement()
    assert exact["method"] == "highs" and exact["pairs"] == 12
    assert "exact_limit = 5000" in exact["rule"] and exact["status"] == "optimal"
    assert exact["lower_bound"] <= exact["objective"] + 1e-9 and 0.0 <= exact["gap"] <= 1e-4
    beyond = placement(exact_limit=10)
    assert beyond["method"] == "heuristic" and "heuristic beyond" in beyond["rule"]
    assert np.isfinite(beyond["gap"]) and beyond["gap"] >= 0.0
    assert beyond["lower_bound"] <= beyond["objective"] + 1e-9
    assert placement(method="heuristic")["rule"] == "placement.method = 'heuristic'"
    assert placement(association=[0, 1, 0, 1, -1, 0])["method"] == "given"


# -- the deployment gates' inputs in the system scenario --------------------------------------
def fake_plan(problem) -> SimpleNamespace:
    """The decisions the deployment stage reads, of a plan that keeps every device home."""
    return SimpleNamespace(decisions={"association": problem.homes, "q": problem.devices.q_min,
                                      "edge_load": problem.devices.arrival_rate},
                           diagnostics={"share_device": 0.0})


def test_budgets_and_costs_of_the_system_override_its_base():
    from jointopt.system import deployment_plan

    problem = jointopt.load_scenario("system_example")
    base = scenarios.read_scenario("system_deployment")
    dp = deployment_plan(problem, fake_plan(problem))
    assert dp.budgets.max_cloud_usd == problem.budgets.max_cloud_usd == 10.0
    assert base["budgets"]["max_cloud_usd"] != 10.0
    assert dp.budgets.deadline_days == base["budgets"]["deadline_days"]  # the base's own
    assert dp.cost_rates.egress_gb_usd == 0.08 != base["cost_rates"]["egress_gb_usd"]
    assert dp.cost_rates.instance_hour_usd == base["cost_rates"]["instance_hour_usd"]
    assert dp.inference.latency_slo_p95_ms == 100.0
    assert dp.population.n_devices == problem.N


def test_budgets_costs_and_deployment_sections_are_validated():
    from jointopt.system import deployment_plan

    bad = [({"budgets": {"deadline_days": -1.0}}, r"budgets\.deadline_days"),
           ({"budgets": {"max_crash_rate": 2.0}}, r"budgets\.max_crash_rate"),
           ({"budgets": {"latency_slo_p95_ms": 0.0}}, r"budgets\.latency_slo_p95_ms"),
           ({"budgets": {"max_dollars": 1.0}}, r"budgets\.max_dollars"),
           ({"costs": {"egress_gb_usd": -0.1}}, r"costs\.egress_gb_usd"),
           ({"costs": {"dollars_per_hour": 1.0}}, r"costs\.dollars_per_hour"),
           ({"deployment": {"server": {"n_instances": 1}}}, r"deployment\.device_classes")]
    for sections, field in bad:
        with pytest.raises(ValidationError, match=field):
            EdgeSystemProblem.from_dict(system(5, 2, **sections))
    # sections written in the system scenario are named there when the planner rejects them
    split = scenarios.read_scenario("system_split")
    data = system(5, 2, budgets=split["budgets"], costs=split["costs"],
                  deployment={**split["deployment"],
                              "server": {**split["deployment"]["server"], "pue": 0.5}})
    problem = EdgeSystemProblem.from_dict(data)
    with pytest.raises(ValidationError, match=r"deployment\.server\.pue"):
        deployment_plan(problem, fake_plan(problem))
    data["costs"] = {k: v for k, v in split["costs"].items() if k != "egress_gb_usd"}
    data["deployment"]["server"]["pue"] = 1.2
    problem = EdgeSystemProblem.from_dict(data)
    with pytest.raises(ValidationError, match=r"cost_rates\.egress_gb_usd"):
        deployment_plan(problem, fake_plan(problem))  # no base to take it from


def test_cost_rates_list_every_rate_field():
    from jointopt.solvers.planner.problem import CostRates

    assert set(CostRates.RATES) == set(CostRates.model_fields) - {"measured_runs",
                                                                  "proxy_gap_warn"}


# -- online run ----------------------------------------------------------------------------------
def test_online_run_of_the_joint_and_siloed_plans(tmp_path, capsys):
    import tomli_w

    path = tmp_path / "system.toml"
    path.write_text(tomli_w.dumps(system(6, 2, seed=8)))
    assert main(["simulate", str(path), "--rounds", "6", "--seed", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["plans"]) == {"joint", "siloed"} and doc["rounds"] == 6
    run = doc["plans"]["joint"]["online"]
    assert 0.0 <= run["avg_timely_accuracy"] <= 1.0 and run["rounds"] == 6
    # same seed, same numbers
    assert main(["simulate", str(path), "--rounds", "6", "--seed", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == doc


def test_host_queue_grows_when_offloads_exceed_its_service_rate():
    from jointopt.system import simulate_plan

    problem = EdgeSystemProblem.from_dict(system(4, 1, seed=1, hosts={
        "count": 1, "capacity": 1e3, "f_host": 2e6}, training={"participation_ratio": 1.0}))
    cut = problem.cuts[0]
    mu = float(problem.host_service_rate(cut)[0])
    plan = {"association": [0, 0, 0, 0], "offload": [1.0] * 4, "cut": [cut] * 4,
            "host_cut": [cut]}
    lam = float(problem.devices.arrival_rate.sum())
    assert lam > mu  # offloads beyond what the host serves
    run = simulate_plan(problem, plan, rounds=40, seed=0)
    backlog = run.table["max_host_backlog"].to_numpy()
    assert backlog[-1] == pytest.approx(40 * (lam - mu), rel=0.25)
    assert run.summary["edge_on_time"] == 0.0  # an unstable queue is never on time


def test_simulate_names_the_kinds_it_takes(capsys):
    assert main(["simulate", "cis_tree7"]) == 2
    err = capsys.readouterr().err
    assert "edge_system" in err and "cis_early_exit" in err


def test_benchmark_runs(tmp_path, capsys, benchmark_script):
    """benchmarks/bench_system.py runs end to end on a small size (timings not checked)."""
    import pandas as pd

    out = tmp_path / "system.csv"
    bench = benchmark_script("bench_system")
    assert bench.main(["--sizes", "30x3", "--seeds", "0", "--out", str(out)]) == 0
    assert "Targets" in capsys.readouterr().out
    table = pd.read_csv(out)
    assert list(table[["N", "M"]].iloc[0]) == [30, 3]
    for column in ("iterations", "placement_s", "serving_s", "allocation_s", "joint_acc",
                   "siloed_acc", "joint_overload", "siloed_overload", "placement", "pl_gap"):
        assert column in table.columns
    assert (table["joint_overload"] == 0).all()
    assert (table["placement"] == "highs").all()  # 90 device-host pairs: the exact path


# -- entry points the edge system added to the kinds it composes ---------------------------------
def test_batch_envelopes_equal_the_hull_of_each_curve():
    from jointopt.models import split as sm

    rng = np.random.default_rng(4)
    curves = [sm.OffloadCurve(e=rng.random(k), q=np.round(rng.random(k), 1), acc=rng.random(k))
              for k in rng.integers(1, 30, 60)]
    for one, many in zip((c.envelope() for c in curves), sm.envelopes(curves), strict=True):
        for key in ("intercepts", "slopes", "vertices_q", "vertices_acc", "vertices_e"):
            np.testing.assert_allclose(getattr(one, key), getattr(many, key), rtol=1e-12)


def test_split_admission_cap_and_subset():
    base = SplitProblem.from_dict(scenarios.read_scenario("split_default"))
    free = base.solve()
    cap = 0.5 * free.diagnostics["load"]
    capped = base.replace(server={**base.server.model_dump(), "max_load": cap}).solve()
    assert capped.diagnostics["load"] <= cap * (1 + 1e-9)
    assert capped.objective <= free.objective + 1e-12
    sub = base.subset([1, 3])
    assert sub.n == 2 and sub.clients.request_rate.tolist() == \
        base.clients.request_rate[[1, 3]].tolist()
    with pytest.raises(ValidationError, match="server.max_load"):
        base.replace(server={**base.server.model_dump(), "max_load": 1.0}).solve(
            method="decoupled")


def test_allocation_subset_and_tree_from_association():
    from jointopt.solvers.cis import CooperativeInferenceProblem

    full = jointopt.load_scenario("default")
    sub = full.subset([0, 5, 7], arrival_rate=[0.0, 1.0, 2.0])
    assert sub.n == 3 and sub.clients.arrival_rate.tolist() == [0.0, 1.0, 2.0]
    assert sub.clients.cap.tolist() == full.clients.cap[[0, 5, 7]].tolist()
    cis = CooperativeInferenceProblem.from_association(
        [1, 1, -1, 3], [2.0, 1.0, 4.0, 3.0], [1.0, 0.5, 4.0, 3.0], device_data=10.0)
    tree = cis.serving_tree
    assert tree.parent.tolist() == [-1, 0, 0, 1, 1, 0, 2] and tree.exits.tolist() == \
        [3, 2, 2, 1, 1, 1, 1]
    np.testing.assert_allclose(tree.exit_rates, [1.5, 4.5, 4.0])  # devices, hosts, cloud


@pytest.mark.parametrize("scenario", ["default", "split_default"])
def test_subset_refuses_unknown_fields_and_bad_lengths(scenario):
    """Both kinds build a group's problem through one function: an unknown field or an
    override of the wrong length is named."""
    full = jointopt.load_scenario(scenario)
    with pytest.raises(ValidationError, match="clients.nonsense"):
        full.subset([0, 1], nonsense=[1.0, 2.0])
    field = "arrival_rate" if scenario == "default" else "request_rate"
    with pytest.raises(ValidationError, match=f"clients.{field}"):
        full.subset([0, 1], **{field: [1.0, 2.0, 3.0]})
    with pytest.raises(ValidationError, match="clients"):
        full.subset([0, full.n])


def test_latency_aware_placement_and_siloed_method():
    """placement.beta > 0 places with hfl's latency-aware objective; method siloed stops
    after the siloed plan."""
    problem = EdgeSystemProblem.from_dict(system(6, 2, seed=7, placement={"beta": 5.0},
                                                 loop={"max_iters": 2, "w_grid": 20}))
    result = problem.solve()
    check_plan(problem, result)
    siloed = problem.solve(method="siloed")
    assert siloed.iterations == 0 and siloed.diagnostics["loop_status"] == "siloed only"
    assert siloed.objective == pytest.approx(result.diagnostics["siloed"]["timely_accuracy"])
