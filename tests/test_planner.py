"""Deployment planner: scenario validation, gates and verdict, report and CLI."""

from __future__ import annotations

import copy
import json

import pytest
from jointopt.solvers.planner.gates import check_status, evaluate
from jointopt.solvers.planner.problem import (
    BudgetInfeasibleError,
    DeploymentPlanProblem,
    PlannerInputError,
)
from jointopt.solvers.planner.whatif import pareto_front, tornado, what_if

from jointopt import scenarios
from jointopt.cli import main
from jointopt.errors import InfeasibleError, ValidationError
from jointopt.planner import plan

ALL_WINDOWS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 22, 23]
_BASE = scenarios.read_scenario("planner_example")


def _data(**sections) -> dict:
    """The example scenario, small Monte Carlo, with dotted-path changes."""
    d = copy.deepcopy(_BASE)
    d["monte_carlo"] = {"n_mc": 300, "n_outer": 100, "n_mc_grid": 150, "seed": 0,
                        "n_seeds": 1}
    # fewer single-task draws widen the confidence bound the over-selection count is solved
    # at, so the small plan selects more and runs faster than the example at full size: a
    # tighter deadline keeps its time gate failing as the example's does
    d["budgets"]["deadline_days"] = 1.4
    for path, value in sections.items():
        node = d
        parts = path.split("__")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is _DROP:
            del node[parts[-1]]
        elif isinstance(node, list):
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return d


_DROP = object()


def _problem(**sections) -> DeploymentPlanProblem:
    return DeploymentPlanProblem.from_dict(_data(**sections))


# -- scenario ----------------------------------------------------------------------------
def test_example_loads_round_trips_and_keeps_tags(tmp_path):
    p = scenarios.load("planner_example")
    assert isinstance(p, DeploymentPlanProblem) and p.kind == "deployment_plan"
    assert p.tag("device_classes[0].train_s_per_sample") == "measured"
    assert p.tag("device_classes[0].bw_sigma") == "assumed"  # bare number
    again = scenarios.load(scenarios.dump(p, tmp_path / "copy.toml"))
    assert again == p and again.provenance == p.provenance


@pytest.mark.parametrize("changes, field, words", [
    ({"device_classes__0__share": 0.2}, "device_classes[*].share", "sums to"),
    ({"device_classes__2__bw_up_mbps": -1.5}, "device_classes[2].bw_up_mbps", "must be > 0"),
    ({"population__regions__0__availability": [0.1] * 23},
     "population.regions[0].availability", "need 24"),
    ({"training_plan__C": 80, "training_plan__K": 100}, "training_plan.C", "must be >= K"),
    ({"training_plan__omega": 0.5}, "training_plan.omega", ">= 1"),
    ({"model__compression_up": 0.5}, "model.compression_up", ">= 1"),
    ({"training_plan__windows": [0, 25]}, "training_plan.windows[1]", "0..23"),
    ({"convergence__calibration": []}, "convergence", "no calibration record"),
    ({"budgets__min_fleet_coverage": 1.2}, "budgets.min_fleet_coverage", "<= 1"),
    ({"budgets__deadline_days": 0}, "budgets.deadline_days", "must be > 0"),
    ({"population__u_max": 2.0}, "population.u_max", "<= 1"),
    ({"training_plan__topology": "hierarchical"}, "hierarchy", "is required"),
])
def test_bad_inputs_name_the_field(changes, field, words):
    with pytest.raises(ValidationError) as exc:
        _problem(**changes)
    assert field in str(exc.value) and words in str(exc.value)


def test_all_problems_are_reported_together():
    with pytest.raises(PlannerInputError) as exc:
        _problem(device_classes__1__bw_down_mbps=-1.0, budgets__deadline_days=-2.0)
    fields = [f for f, _ in exc.value.problems]
    assert "device_classes[1].bw_down_mbps" in fields and "budgets.deadline_days" in fields


def test_calibration_needs_three_k_values_with_two_seeds():
    runs = _BASE["convergence"]["calibration"][:4]  # K = 50, 100 only
    with pytest.raises(ValidationError, match=r"convergence.calibration.*need >= 3"):
        _problem(convergence__calibration=runs)


def test_unknown_keys_and_bad_tags_are_errors():
    d = _data()
    d["population"]["colour"] = "blue"
    with pytest.raises(ValidationError, match=r"population.colour"):
        DeploymentPlanProblem.from_dict(d)
    with pytest.raises(ValidationError, match=r"population.dwell_mean_s.tag"):
        _problem(population__dwell_mean_s={"value": 100.0, "tag": "guessed"})


def test_budget_infeasible_whatever_the_plan():
    with pytest.raises(BudgetInfeasibleError) as exc:
        _problem(budgets__max_cpu_s_per_device_day=1.0)
    assert exc.value.field == "budgets.max_cpu_s_per_device_day"
    assert "inference alone" in str(exc.value) and exc.value.shortfall > 0


def test_unreachable_convergence_target_is_a_hard_error():
    with pytest.raises(InfeasibleError, match=r"convergence.target_error"):
        evaluate(_problem(convergence__target_error=0.01))


# -- gates and verdict -------------------------------------------------------------------
def test_check_status_sides():
    assert check_status(1.0, 2.0, 3.0) == "pass"
    assert check_status(1.0, 4.0, 3.0) == "fail_p90"
    assert check_status(5.0, 6.0, 3.0) == "fail"
    assert check_status(0.9, 0.8, 0.85, upper=False) == "fail_p90"
    assert check_status(1.0, 2.0, None) == "not_evaluated"


def test_example_is_conditional_with_the_window_lever():
    ev = evaluate(_problem())
    assert ev.gates["G4"]["status"] == "fail"
    assert ev.verdict == "CONDITIONAL"
    assert any(c["lever"] == "training_plan.windows" and c["to"] == ALL_WINDOWS
               for c in ev.conditions)
    assert all(s != "fail" for s in ev.conditions[0]["gates_after"].values())
    assert any(r.startswith("G4 fail") and "budgets.deadline_days" in r for r in ev.reasons)


def test_go_when_every_gate_passes():
    ev = evaluate(_problem(training_plan__windows=ALL_WINDOWS))
    assert {g: r["status"] for g, r in ev.gates.items()} == {
        "G1": "pass", "G2": "pass", "G3": "pass", "G4": "pass", "G5": "pass", "G6": "pass",
        "G7": "pass", "G8": "not_applicable"}
    assert ev.verdict == "GO" and not ev.conditions


def test_no_go_without_a_lever_that_fixes_the_failing_gate():
    ev = evaluate(_problem(levers={"K": [100, 400]}))
    assert ev.gates["G4"]["status"] == "fail" and ev.verdict == "NO-GO"
    assert any("no single lever" in r for r in ev.reasons)


def test_fitness_failure_is_no_go_with_a_next_step():
    ev = evaluate(_problem(training_plan__windows=ALL_WINDOWS, budgets__min_fleet_coverage=0.95))
    assert ev.gates["G1"]["status"] == "fail" and ev.verdict == "NO-GO"
    assert any("G1 fail" in r and "next step" in r for r in ev.reasons)


def test_missing_threshold_is_not_evaluated_and_caps_at_conditional():
    d = _data(training_plan__windows=ALL_WINDOWS)
    del d["budgets"]["deadline_days"]
    ev = evaluate(DeploymentPlanProblem.from_dict(d))
    assert ev.gates["G4"]["status"] == "not_evaluated"
    assert ev.verdict == "CONDITIONAL"


def test_extrapolated_k_caps_at_conditional():
    ev = evaluate(_problem(training_plan__windows=ALL_WINDOWS, training_plan__K=500,
                           levers={}))
    assert ev.estimates.extrapolated and ev.verdict == "CONDITIONAL"


def test_privacy_gate_fails_below_dp_k_min():
    ev = evaluate(_problem(training_plan__windows=ALL_WINDOWS,
                           training_plan__dp={"enabled": True, "K_min": 1000},
                           convergence__dp_enabled=True))
    assert ev.gates["G8"]["status"] == "fail" and ev.verdict == "NO-GO"


def test_tight_inference_budget_fails_g7():
    ev = evaluate(_problem(training_plan__windows=ALL_WINDOWS, inference__latency_slo_p95_ms=60.0))
    assert ev.gates["G7"]["status"] == "fail"
    assert ev.gates["G7"]["threshold_field"] == "inference.latency_slo_p95_ms"


@pytest.mark.parametrize("deadline", [1.0, 1.6, 3.0])
def test_a_looser_budget_never_worsens_the_verdict(deadline):
    rank = {"NO-GO": 0, "CONDITIONAL": 1, "GO": 2}
    tight = evaluate(_problem(budgets__deadline_days=deadline, levers={}), search_levers=False)
    loose = evaluate(_problem(budgets__deadline_days=deadline * 2, levers={}),
                     search_levers=False)
    assert rank[loose.verdict] >= rank[tight.verdict]


def test_more_rounds_never_shorten_time_and_cost_grows_with_k():
    a = evaluate(_problem(), search_levers=False).estimates.values
    b = evaluate(_problem(convergence__rounds_scale=1.5), search_levers=False).estimates.values
    assert b["days_to_target"]["p90"] > a["days_to_target"]["p90"]
    assert b["cloud_usd"]["p50"] > a["cloud_usd"]["p50"]


# -- tags, determinism, what-if ----------------------------------------------------------
def test_every_estimate_is_tagged_and_assumed_inputs_propagate():
    res = plan(_problem(), with_tornado=False, with_whatif=False)
    d = res.to_dict()
    for name, rec in d["estimates"].items():
        if "p50" in rec:
            assert rec["p50"]["tag"] in ("measured", "simulated", "assumed"), name
        else:
            assert rec["tag"] in ("measured", "simulated", "assumed"), name
    days = d["estimates"]["days_to_target"]
    assert days["p90"]["tag"] == "assumed"
    assert "population.daily_unique_frac" not in days["assumed_inputs"]
    assert "device_classes[0].bw_sigma" in days["assumed_inputs"]
    # convergence outputs are simulated, weakened to assumed by the bare plan knob K
    assert d["estimates"]["rounds_to_target"]["p50"]["tag"] == "assumed"
    assert d["estimates"]["rounds_to_target"]["assumed_inputs"] == ["training_plan.K"]
    tagged_k = plan(_problem(training_plan__K={"value": 200, "tag": "measured"}),
                    with_tornado=False, with_whatif=False).to_dict()
    assert tagged_k["estimates"]["rounds_to_target"]["p50"]["tag"] == "simulated"
    # tagging dwell as measured removes it from the assumed inputs
    measured = plan(_problem(population__dwell_mean_s={"value": 2400.0, "tag": "measured"}),
                    with_tornado=False, with_whatif=False).to_dict()
    assert "population.dwell_mean_s" not in \
        measured["estimates"]["days_to_target"]["assumed_inputs"]


def test_same_seed_gives_identical_json():
    a = plan(_problem(), with_tornado=False, with_whatif=False).to_dict()
    b = plan(_problem(), with_tornado=False, with_whatif=False).to_dict()
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_what_if_pareto_and_tornado():
    p = _problem()
    table = what_if(p, {"training_plan.windows": [[0, 1, 2, 3], ALL_WINDOWS],
                        "model.compression_up": [4.0, 8.0]}, n_mc=100, n_outer=50)
    assert len(table) == 4 and {"days_p90", "cloud_usd_p90", "gate.G4"} <= set(table)
    front = pareto_front(table)
    assert len(front) >= 1 and not front["any_fail"].any()
    # every front point is non-dominated by the other no-fail points
    tor = tornado(p, {"rounds scale": ["convergence.rounds_scale"],
                      "network J per bit": ["cost_rates.net_j_per_bit"]}, n_mc=100, n_outer=50)
    assert list(tor["input"]) == ["rounds scale", "network J per bit"]  # sorted by swing
    assert tor.loc[0, "days_p90_high"] > tor.loc[0, "days_p90_low"]
    assert "G4" in tor.loc[0, "flips"]


# -- solve, report, CLI ---------------------------------------------------------------------
def test_solve_reports_the_verdict_as_status():
    res = _problem().solve()
    assert res.status == "conditional" and res.ok
    assert res.diagnostics["gates"]["G4"] == "fail"
    assert res.objective == pytest.approx(res.diagnostics["days_p90"])


def test_cli_plan_json_shape_and_report_files(tmp_path, capsys):
    path = tmp_path / "plan.toml"
    scenarios.dump(_problem(), path)
    out = tmp_path / "report"
    assert main(["plan", str(path), "--json", "--out", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"verdict", "gates", "estimates"}
    assert doc["verdict"]["value"] == "CONDITIONAL"
    assert set(doc["gates"]) == {f"G{i}" for i in range(1, 9)}
    g4 = doc["gates"]["G4"]
    assert g4["pass"] is False and g4["status"] == "fail" and g4["p90"] > g4["threshold"]
    assert g4["threshold_field"] == "budgets.deadline_days"
    assert doc["estimates"]["days_to_target"]["p90"]["tag"] == "assumed"
    for name in ("report.md", "report.json", "round_time.png", "pool.png", "energy.png",
                 "burden.png", "tornado.png", "pareto.png"):
        assert (out / name).stat().st_size > 0, name
    md = (out / "report.md").read_text()
    assert "## 1. Verdict: **CONDITIONAL**" in md and "[m]" in md and "[a]" in md
    full = json.loads((out / "report.json").read_text())
    assert full["schema"] == "jointopt.planner.report/1"
    assert len(full["repro"]["inputs_sha256"]) == 64


def test_cli_plan_bad_scenario_is_one_line(tmp_path, capsys):
    d = _data(device_classes__0__share=0.2)
    bad = tmp_path / "bad.toml"
    import tomli_w

    bad.write_text(tomli_w.dumps(d))
    assert main(["plan", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "device_classes[*].share" in err and "Traceback" not in err
    assert main(["plan", "default"]) == 2
    assert "deployment_plan" in capsys.readouterr().err


def _async_runs(pairs=((100, 500), (200, 1000), (400, 2000))) -> list[dict]:
    """Async calibration runs: (K, C) pairs, two seeds each."""
    return [{"id": f"sim-async-K{k}-C{c}-s{s}", "mode": "async", "K": k, "C": c, "seed": s,
             "rounds_to_target": 450.0} for k, c in pairs for s in (0, 1)]


def test_async_plan_estimates_and_throttled_windows_are_extrapolated():
    runs = _BASE["convergence"]["calibration"] + _async_runs(((50, 200), (100, 400),
                                                              (400, 4000)))
    ev = evaluate(_problem(training_plan__mode="async", training_plan__C=400,
                           training_plan__max_staleness=3, convergence__calibration=runs,
                           levers={}))
    V = ev.estimates.values
    assert 0 < V["async_accepted_rate_per_s"] <= V["async_rate_per_s"]
    assert 0 <= V["async_discard_share"] < 1 and V["async_mean_staleness"] > 0
    assert all(r["status"] != "not_evaluated" for r in ev.gates.values())
    assert not ev.estimates.extrapolated
    # capacity in daytime hours is below C: throttled concurrency is flagged
    day = evaluate(_problem(training_plan__mode="async", training_plan__C=3000,
                            training_plan__windows=list(range(24)),
                            convergence__calibration=runs, levers={}), search_levers=False)
    assert [x["input"] for x in day.estimates.extrapolated] == ["training_plan.windows"]
    assert day.verdict != "GO"


def test_normalise_shares_rescales_and_tags_assumed():
    p = _problem(device_classes__0__share=0.7, normalise_shares=True)
    shares = [c.share for c in p.device_classes]
    assert sum(shares) == pytest.approx(1.0)
    assert shares[0] == pytest.approx(0.7 / 1.35)
    assert p.tag("device_classes[0].share") == "assumed"


def test_carbon_proxy_from_measured_runs():
    with pytest.raises(ValidationError, match=r"cost_rates.proxy_gap_warn"):
        _problem(cost_rates__measured_runs=[{"co2e_kg": 1.0, "C": 100, "R": 100},
                                            {"co2e_kg": 2.0, "C": 100, "R": 200}])
    runs = [{"co2e_kg": 1.0, "C": 100, "R": 100}, {"co2e_kg": 3.0, "C": 100, "R": 300}]
    ev = evaluate(_problem(cost_rates__measured_runs=runs, cost_rates__proxy_gap_warn=0.01),
                  search_levers=False)
    V = ev.estimates.values
    # alpha = 1e-4 kg per (C*R): proxy = 1e-4 * C * R_p50
    R50 = V["rounds_to_target"]["p50"]
    assert V["co2e_proxy_kg"] == pytest.approx(1e-4 * V["C"] * R50, rel=1e-9)
    assert V["co2e_proxy_gap"] >= 0
    assert any("carbon proxy" in f for f in ev.estimates.flags) == (V["co2e_proxy_gap"] > 0.01)


def test_verify_des_cli_reports_agreement_and_the_verdict_under_simulation(tmp_path,
                                                                          capsys):
    path = tmp_path / "small.toml"
    scenarios.dump(_problem(training_plan__K=50, training_plan__C=65), path)
    rc = main(["plan", str(path), "--json", "--no-tornado", "--no-whatif", "--verify-des"])
    doc = json.loads(capsys.readouterr().out)
    check = doc["des_check"]
    rows = {r["quantity"]: r for r in check["checks"]}
    assert set(rows) == {"mean round time (s)", "P90 round time (s)",
                         "round failure probability", "calendar days", "tasks per device-day",
                         "unique participants", "bytes per unit", "device-seconds per unit",
                         "device energy J per unit"}
    assert rows["round failure probability"]["tolerance"] == 0.01
    assert rows["round failure probability"]["tolerance_kind"] == "absolute"
    assert rc == (0 if all(r["ok"] for r in rows.values()) else 1) and check["ok"] == (rc == 0)
    assert rows["bytes per unit"]["ok"] and rows["calendar days"]["ok"]
    v = check["verdict"]
    assert v["planner"] == doc["verdict"]["value"] and v["des"] in ("GO", "CONDITIONAL", "NO-GO")
    assert v["changes"] == (v["des"] != v["planner"])
    assert set(check["gates"]) == set(doc["gates"])
