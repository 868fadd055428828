"""HFL models: evaluator, cost accounting, closed forms, simulator, testbed data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from jointopt.models import hfl as hm
from jointopt.solvers.hfl import generators as gen
from jointopt.solvers.hfl.problem import HFLProblem

import jointopt
from jointopt import report
from jointopt.errors import ValidationError


def test_evaluate_recomputes_cost_and_feasibility():
    cd = np.array([[0.0, 2.0], [1.0, 0.0], [3.0, 3.0]])
    ce = np.array([5.0, 7.0])
    ev = hm.evaluate([0, 0, -1], [1, 2, 3], [3, 1], cd, ce, 2.0, 2)
    assert ev.feasible and ev.objective == 5 + 2 * 1 and ev.used.tolist() == [True, False]
    bad = hm.evaluate([1, 1, -1], [1, 2, 3], [3, 1], cd, ce, 2.0, 3)
    assert not bad.feasible and "capacity" in bad.reason and "participation" in bad.reason
    assert bad.overload.tolist() == [0.0, 2.0]


def test_flat_fl_and_totals():
    cd = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    ce = np.array([2.0, 3.0])
    assert hm.flat_fl_cost_per_round(cd, ce) == 2 + 3 + 2
    assert hm.flat_fl_cost_per_round(cd, ce, participants=2) == 4
    assert hm.flat_total_cost(cd, ce, model_size_mb=1.0, rounds=10) == 2 * 10 * 7
    a = np.array([0, 1, 0])
    assert hm.hfl_total_cost(a, cd, ce, 2.0, model_size_mb=1.0, rounds=5) == 2 * 5 * 5
    # unit costs cap every cost at 1
    assert hm.hfl_total_cost(a, cd, ce, 2.0, model_size_mb=1.0, rounds=5,
                             unit_costs=True) == 2 * 5 * 2


@pytest.mark.parametrize("seed", range(3))
def test_closed_forms_T6(seed):
    prob = gen.density_instance(16, seed)
    n, homes = prob.N, prob.homes.astype(int)
    unc = prob.solve(uncapacitated=True)
    used = len(np.unique(homes))
    assert unc.objective == pytest.approx(used)          # uncapacitated = distinct homes
    s = unc.diagnostics["saving_pct"] / 100
    assert s == pytest.approx(hm.closed_form_uncapacitated_saving(n, used))
    assert unc.diagnostics["flat_total_mb"] == pytest.approx(2 * 0.593 * 100 * n)
    try:
        cap = prob.solve()
    except jointopt.errors.InfeasibleError:
        return
    a = np.asarray(cap.decisions["association"])
    off = int(((a >= 0) & (a != homes)).sum())
    per_round = cap.diagnostics["used_hosts"] + prob.l * off
    assert cap.objective == pytest.approx(per_round)
    assert cap.diagnostics["saving_pct"] <= unc.diagnostics["saving_pct"] + 1e-9


def test_expected_used_hosts_matches_sampling():
    rng = np.random.default_rng(0)
    sims = [len(np.unique(rng.integers(0, 25, 200))) for _ in range(400)]
    assert np.mean(sims) == pytest.approx(hm.expected_used_hosts(200, 25), rel=0.01)


# -- T11 testbed data ----------------------------------------------------------------------
def test_testbed_table_checksums():
    tb = jointopt.load_scenario("hfl_testbed")
    assert tb.N == 20 and tb.M == 4 and tb.capacities.tolist() == [40, 120, 40, 120]
    assert np.bincount(tb.homes.astype(int)).tolist() == [5, 5, 5, 5]
    assert tb.workload.sum() == 61 + 92 + 41 + 49
    loads = np.bincount(tb.homes.astype(int), weights=tb.workload)
    assert loads.tolist() == [61, 92, 41, 49]
    prox = tb.solve().diagnostics["proximity_overload"]
    assert (np.asarray(prox) > 0).tolist() == (loads > tb.capacities).tolist()
    assert len(set(tb.labels)) == 20


def test_testbed_solution_and_cli_json():
    proc = subprocess.run([sys.executable, "-m", "jointopt.cli", "solve", "hfl_testbed",
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "optimal" and out["objective"] == 8.0
    a = out["decisions"]["association"]
    assert len(a) == 20 and min(a) >= -1
    assert sorted(set(x for x in a if x >= 0)) == out["decisions"]["placement"]


def test_text_report_and_outputs(tmp_path):
    prob = jointopt.load_scenario("hfl_testbed")
    r = prob.solve()
    text = report.text_report(r)
    assert "association" in text and "optimal" in text
    hosts = " ".join(str(h) for h in r.decisions["placement"])
    assert f"open hosts         {hosts}\n" in text
    assert f"saving vs flat FL  {r.diagnostics['saving_pct']:.1f} %" in text
    paths = report.write_outputs(r, prob, tmp_path)
    assert all(p.exists() for p in paths)


def test_scenario_round_trip(tmp_path):
    prob = jointopt.load_scenario("hfl_testbed")
    again = jointopt.load_scenario(jointopt.dump(prob, tmp_path / "tb.toml"))
    assert again == prob
    rnd = gen.runtime_instance(30, 4, 3)
    assert jointopt.load_scenario(jointopt.dump(rnd, tmp_path / "r.yaml")) == rnd


@pytest.mark.parametrize("change, field, words", [
    ({"workload": [1, -2, 3]}, "workload[1]", ">= 0"),
    ({"capacities": [1, float("nan")]}, "capacities[1]", "NaN"),
    ({"device_costs": [[0, 1], [1, -1], [0, 0]]}, "device_costs[1][1]", ">= 0"),
    ({"device_costs": [[0, 1], [1, 1]]}, "device_costs", "3 x 2"),
    ({"participation_ratio": 1.5}, "participation_ratio", "<= 1"),
    ({"local_to_global_ratio": 0}, "local_to_global_ratio", "> 0"),
])
def test_bad_input_names_the_culprit(change, field, words):
    data = {"workload": [1, 2, 3], "capacities": [5, 5],
            "device_costs": [[0, 1], [1, 0], [0, 0]], **change}
    with pytest.raises(ValidationError) as exc:
        HFLProblem.from_dict(data)
    assert exc.value.field == field and words in str(exc.value)


def test_homes_out_of_range():
    with pytest.raises(ValidationError) as exc:
        HFLProblem.from_dict({"workload": [1, 2], "capacities": [5, 5], "homes": [0, 2]})
    assert exc.value.field == "homes[1]"


# -- T10 simulator --------------------------------------------------------------------------
def _tb():
    return jointopt.load_scenario("hfl_testbed")


def test_simulator_deterministic_and_protocol():
    tb = _tb()
    a = np.asarray(tb.solve().decisions["association"])
    kw = dict(rounds=50, seed=3)
    s1 = hm.simulate_latency(tb.workload, tb.capacities, tb.homes, "hflop", assignment=a, **kw)
    s2 = hm.simulate_latency(tb.workload, tb.capacities, tb.homes, "hflop", assignment=a, **kw)
    assert all(np.array_equal(s1[k], s2[k]) for k in s1)
    assert len(s1["total_ms"]) == 20 * 50
    net = s1["net_ms"].reshape(20, 50)
    assert (net == net[:, :1]).all()                   # constant per client across rounds
    assert ((net >= 0.8) & (net <= 10)).all() and (s1["where"] == 0).all()   # no overflow
    flat = hm.simulate_latency(tb.workload, tb.capacities, tb.homes, "flat", **kw)
    assert (flat["where"] == 1).all()
    assert ((flat["net_ms"] >= 50) & (flat["net_ms"] <= 100)).all()
    big = hm.simulate_latency(tb.workload, tb.capacities, tb.homes, "hflop", assignment=a,
                              rounds=400, seed=1)
    many = hm.simulate_latency(np.ones(2000), [1e9], np.zeros(2000, int), "proximity",
                               rounds=1, seed=0)
    assert many["net_ms"].mean() == pytest.approx(5.4, abs=0.2)
    assert big["total_ms"].size == 8000


def test_overflow_rule_keeps_hosts_within_capacity():
    tb = _tb()
    served = hm.overflow_rule(tb.workload, tb.capacities, tb.homes)
    loads = hm.host_loads(tb.workload, served, tb.M)
    assert (loads <= tb.capacities).all() and (served == -1).any()
    prox = hm.simulate_latency(tb.workload, tb.capacities, tb.homes, "proximity", rounds=5)
    over = prox["where"] == 2
    assert over.any() and (prox["net_ms"][over] >= 50.8).all()


def test_compute_increase_changes_only_cloud_samples():
    tb = _tb()
    base = hm.simulate_latency(tb.workload, tb.capacities, tb.homes, "proximity", seed=2)
    fast = hm.simulate_latency(tb.workload, tb.capacities, tb.homes, "proximity", seed=2,
                               cloud_scale=0.5)
    edge = base["where"] == 0
    assert np.array_equal(base["total_ms"][edge], fast["total_ms"][edge])
    assert (fast["proc_ms"][~edge] < base["proc_ms"][~edge] + 1e-12).all()
