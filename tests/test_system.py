"""One edge system, one plan (kind ``edge_system``): reductions to the kinds it composes,
consistency of the returned plan, joint >= siloed, determinism, random small systems."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
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
from jointopt.errors import InfeasibleError, ValidationError

SCRIPT = Path(sys.executable).with_name("jointopt")
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
    out = subprocess.run([str(SCRIPT), "solve", "system_example", "--json"],
                         capture_output=True, text=True)
    return out.returncode, out.stdout


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


# -- reductions ----------------------------------------------------------------------------------
def test_one_ample_host_allocation_is_the_joint_allocator_on_the_same_devices():
    """One host that takes everything, zero edge cost: the allocation stage equals
    joint_training_inference on the devices, each with the requests it serves itself."""
    data = system(6, 1, seed=3, hosts={"count": 1, "capacity": 1e6, "edge_cost": 0.0},
                  training={"participation_ratio": 1.0, "state": {"K": 0.5, "Z": 0.5},
                            "controller": {"V": 10.0}})
    problem = EdgeSystemProblem.from_dict(data)
    result = problem.solve()
    check_plan(problem, result)
    dev = problem.devices
    served = np.asarray(result.decisions["served_on_device"])
    by_hand = JointTrainingInferenceProblem.from_dict({
        "clients": {"count": 6, "arrival_rate": served.tolist(),
                    **{k: getattr(dev, k).tolist() for k in (
                        "data_weight", "deadline", "cost_train", "cost_download",
                        "cost_service", "cap", "budget", "mu_max", "q_min")}},
        "convergence": {"a": 0.8, "b": 0.3, "c": 0.02}, "controller": {"V": 10.0},
        "state": {"K": 0.5, "Z": 0.5}}).solve()
    for key in ("q", "d", "mu"):
        np.testing.assert_allclose(result.decisions[key], by_hand.decisions[key], rtol=1e-9)


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
    for m in (0, 1):
        idx = [i for i, h in enumerate(assoc) if h == m]
        by_hand = SplitProblem.from_dict({
            "network": network, "entropy": ENTROPY,
            "server": {"f_server": 6e7, "tau0": 0.005},
            "clients": {"count": len(idx), "f_client": [dev["f_device"][i] for i in idx],
                        "uplink_rate": [dev["uplink_rate"][i] for i in idx],
                        "request_rate": [dev["arrival_rate"][i] for i in idx],
                        "latency_budget": 0.1,
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


# -- online run ----------------------------------------------------------------------------------
def test_online_run_of_the_joint_and_siloed_plans(tmp_path, capsys):
    import tomli_w

    from jointopt.cli import main

    path = tmp_path / "system.toml"
    path.write_text(tomli_w.dumps(system(6, 2, seed=8)))
    assert main(["simulate", str(path), "--rounds", "12", "--seed", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["plans"]) == {"joint", "siloed"} and doc["rounds"] == 12
    run = doc["plans"]["joint"]["online"]
    assert 0.0 <= run["avg_timely_accuracy"] <= 1.0 and run["rounds"] == 12
    # same seed, same numbers
    assert main(["simulate", str(path), "--rounds", "12", "--seed", "3", "--json"]) == 0
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
    from jointopt.cli import main

    assert main(["simulate", "cis_tree7"]) == 2
    err = capsys.readouterr().err
    assert "edge_system" in err and "cis_early_exit" in err


def test_benchmark_runs_quick(tmp_path):
    """benchmarks/bench_system.py runs end to end (timings are not checked)."""
    import pandas as pd

    out = tmp_path / "system.csv"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_system.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Targets" in proc.stdout
    table = pd.read_csv(out)
    assert list(table[["N", "M"]].iloc[0]) == [100, 5]
    for column in ("iterations", "placement_s", "serving_s", "allocation_s", "joint_acc",
                   "siloed_acc", "joint_overload", "siloed_overload"):
        assert column in table.columns
    assert (table["joint_overload"] == 0).all()


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
