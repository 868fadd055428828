"""Deployment planner: numbers a platform team can sign off on.

Calibration coverage caps the verdict, the over-selection count keeps the round-failure
limit with stated confidence, provenance tags propagate through every number, the server
reservation is an input, and one plan shows one number in every table.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jointopt.models import planner as pm
from jointopt.solvers.planner.estimate import (
    _work_sampler,
    build_fleet,
    estimate,
    fleet_fitness,
)
from jointopt.solvers.planner.gates import evaluate, gates
from jointopt.solvers.planner.problem import DeploymentPlanProblem

from jointopt import scenarios
from jointopt.errors import ValidationError
from jointopt.planner import plan

ALL_WINDOWS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 22, 23]
_BASE = scenarios.read_scenario("planner_example")
MC = {"n_mc": 300, "n_outer": 100, "n_mc_grid": 150, "seed": 0, "n_seeds": 1}


def _data(changes: dict | None = None, **mc) -> dict:
    d = copy.deepcopy(_BASE)
    d["monte_carlo"] = {**MC, **mc}
    for path, value in (changes or {}).items():
        node = d
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if value is None:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    return d


def _problem(changes: dict | None = None, **mc) -> DeploymentPlanProblem:
    return DeploymentPlanProblem.from_dict(_data(changes, **mc))


def _async_runs(pairs) -> list[dict]:
    return [{"id": f"a-K{k}-C{c}-s{s}", "mode": "async", "K": k, "C": c, "seed": s,
             "rounds_to_target": 450.0} for k, c in pairs for s in (0, 1)]


ISSUE_ASYNC = {"training_plan.mode": "async", "training_plan.K": 200, "training_plan.C": 1000,
               "training_plan.windows": [0, 1, 2, 3], "training_plan.max_staleness": 20,
               "levers": {}}


# -- 1. a plan the calibration does not cover is never GO ---------------------------------
def test_async_plan_on_a_sync_calibration_is_never_go_and_names_the_inputs():
    ev = evaluate(_problem(ISSUE_ASYNC))
    assert ev.verdict != "GO"
    flagged = {x["input"]: x for x in ev.estimates.extrapolated}
    assert {"training_plan.mode", "training_plan.C"} <= set(flagged)
    assert flagged["training_plan.mode"]["fitted"] == ["sync"]
    assert any("training_plan.mode" in r and "sync" in r for r in ev.reasons)


def test_async_calibration_on_k_c_pairs_covers_the_plan():
    runs = _BASE["convergence"]["calibration"] + _async_runs(((100, 500), (200, 1000),
                                                              (400, 2000)))
    covered = evaluate(_problem({**ISSUE_ASYNC, "convergence.calibration": runs}),
                       search_levers=False)
    assert not covered.estimates.extrapolated
    # C outside the runs' C range is flagged, K inside is not
    wide = evaluate(_problem({**ISSUE_ASYNC, "convergence.calibration": runs,
                              "training_plan.C": 3000}), search_levers=False)
    assert [x["input"] for x in wide.estimates.extrapolated] == ["training_plan.C"]
    assert wide.verdict != "GO"


def test_calibration_runs_without_a_mode_cover_no_mode():
    runs = [{k: v for k, v in r.items() if k != "mode"}
            for r in _BASE["convergence"]["calibration"]]
    ev = evaluate(_problem({"training_plan.windows": ALL_WINDOWS,
                            "convergence.calibration": runs, "levers": {}}))
    assert [x["input"] for x in ev.estimates.extrapolated] == ["training_plan.mode"]
    assert ev.verdict == "CONDITIONAL"


def test_download_compression_outside_the_fit_is_extrapolated():
    base = evaluate(_problem({"training_plan.windows": ALL_WINDOWS, "levers": {}}))
    assert base.verdict == "GO"
    ev = evaluate(_problem({"training_plan.windows": ALL_WINDOWS, "levers": {},
                            "model.compression_down": 16.0}))
    assert [x["input"] for x in ev.estimates.extrapolated] == ["model.compression_down"]
    assert ev.verdict == "CONDITIONAL"


def test_async_runs_need_their_concurrency():
    runs = _async_runs(((100, 500), (200, 1000), (400, 2000)))
    del runs[3]["C"]
    with pytest.raises(ValidationError, match=r"convergence.calibration\[11\].C is required"):
        _problem({"convergence.calibration": _BASE["convergence"]["calibration"] + runs})


# -- 2. over-selection with stated confidence, spread across seeds -------------------------
def _true_success_rate(problem: DeploymentPlanProblem, n: int = 400_000) -> float:
    keep, _ = fleet_fitness(problem)
    fleet = build_fleet(problem, keep, set(), [])
    m, tp = problem.model, problem.training_plan
    s_d, s_u = pm.payload_bytes(m.n_params, m.n_params_trainable, m.bytes_per_param_down,
                                m.bytes_per_param_up, m.compression_down, m.compression_up,
                                m.secagg_expansion, m.header_bytes)
    sampler, _ = _work_sampler(problem)
    rng = np.random.default_rng(2024)
    d = pm.draw_tasks(rng, (n,), fleet, s_d, s_u, sampler(rng, (n,)), t_ovh=tp.t_ovh_s,
                      timeout=tp.timeout_s, dwell_mean=problem.population.dwell_mean_s)
    return float(d.success.mean())   # SE ~ 2e-4


def test_solved_c_keeps_the_round_failure_limit_at_the_true_success_rate():
    from scipy import stats

    p = _problem()
    delta, K = p.budgets.max_round_failure_prob, p.training_plan.K
    p_true = _true_success_rate(p)
    for seed in range(6):
        V = estimate(p, seed=seed).values
        C = V["C"]
        # P(fewer than K of C succeed) at the true success rate
        assert stats.binom.cdf(K - 1, C, p_true) <= delta, (seed, C)
        rf = V["round_failure_binomial"]
        assert rf["estimate"] <= rf["upper_bound"] <= delta and rf["confidence"] == 0.95


def test_success_lower_bound_is_clopper_pearson():
    from scipy import stats

    for k, n, conf in ((9825, 10000, 0.95), (3, 10, 0.9), (10, 10, 0.99)):
        assert pm.success_lower_bound(k, n, conf) == pytest.approx(
            stats.beta.ppf(1 - conf, k, n - k + 1), rel=1e-9)
    assert pm.success_lower_bound(0, 10, 0.95) == 0.0
    assert pm.round_failure_binomial(10, 12, 0.9) == pytest.approx(stats.binom.cdf(9, 12, 0.9))


def test_gates_report_the_round_failure_check_and_the_seed_spread():
    ev = evaluate(_problem(n_seeds=3), search_levers=False)
    g3, g4 = ev.gates["G3"], ev.gates["G4"]
    chk = {c["check"]: c for c in g3["checks"]}["round_failure_prob"]
    assert chk["threshold_field"] == "budgets.max_round_failure_prob" and chk["status"] == "pass"
    sp = g3["seed_spread"]
    assert sp["seeds"] == [0, 1, 2] and len(sp["C"]) == 3 and sp["C"][0] == ev.estimates["C"]
    assert all(u <= 0.01 for u in sp["round_failure_upper_bound"])
    assert g4["seed_spread"]["days_p90"][0] == g4["p90"]
    assert len(set(g4["seed_spread"]["days_p50"])) == 3   # the seeds do differ
    # an explicit C too small for the limit fails G3
    small = evaluate(_problem({"training_plan.C": 200}), search_levers=False)
    assert {c["check"]: c for c in small.gates["G3"]["checks"]}["round_failure_prob"][
        "status"] == "fail"


# -- 3. provenance: the weakest input tag, bare values assumed, defaults listed ------------
_NOT_INPUTS = {"kind", "name", "description", "convergence", "monte_carlo", "levers",
               "normalise_shares"}


def _tag_all(node, tag="measured"):
    if isinstance(node, dict):
        if "dist" in node:
            return {k: (v if k == "dist" else _tag_all(v, tag)) for k, v in node.items()}
        if "value" in node and set(node) <= {"value", "tag", "source"}:
            return {**node, "tag": tag}
        return {k: _tag_all(v, tag) for k, v in node.items()}
    if isinstance(node, list) and node and isinstance(node[0], dict):
        return [_tag_all(v, tag) for v in node]
    return {"value": node, "tag": tag}


def _all_measured() -> dict:
    p = _problem()
    d = _data()
    for path, value in p.defaults_applied():   # defaults written out explicitly
        if path.startswith(("convergence.", "monte_carlo.")):
            continue
        node = d
        parts = path.replace("]", "").replace("[", ".").split(".")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node[parts[-1]] = value
    d["device_classes"][1]["spread_sigma"] = 0.6   # else the planner's FedScale default
    d["device_classes"][2]["train_s_per_sample"] = 0.05   # else kappa x inference time
    return {k: (v if k in _NOT_INPUTS else _tag_all(v)) for k, v in d.items()}


def test_measured_inputs_give_measured_numbers_and_one_assumed_input_propagates():
    full = estimate(DeploymentPlanProblem.from_dict(_all_measured()))
    assert all(m["tag"] in ("measured", "simulated") and not m["assumed_inputs"]
               for n, m in full.meta.items() if n != "inference_p95_ms"), \
        {n: m["assumed_inputs"] for n, m in full.meta.items() if m["assumed_inputs"]}
    assert full.meta["inference_p95_ms"]["assumed_inputs"] == ["inference queueing"]
    d = _all_measured()
    d["population"]["dwell_mean_s"]["tag"] = "assumed"
    one = estimate(DeploymentPlanProblem.from_dict(d))
    # dwell drives task success, so round time, days, burden, energy, cost and the server
    # load computed from the round time all inherit its tag
    for name in ("p_success", "C", "round_time", "days_to_target", "tasks_per_device_day",
                 "energy_kwh", "cloud_usd", "server_cpu_util", "unique_participants"):
        assert one.meta[name]["tag"] == "assumed", name
        assert one.meta[name]["assumed_inputs"] == ["population.dwell_mean_s"], name
    for name in ("payload_up_bytes", "fleet_coverage", "metric_gap", "aggregator_mem_gb"):
        assert one.meta[name]["tag"] != "assumed", name


_FLIPPABLE = ("population.dwell_mean_s", "population.static_eligibility", "server.power_w",
              "cost_rates.egress_gb_usd", "model.n_params", "training_plan.timeout_s",
              "population.regions.0.carbon_g_per_kwh", "device_classes.0.bw_up_mbps",
              "server.agg_cpu_s_per_step", "budgets.deadline_days")


@settings(max_examples=8, deadline=None)
@given(assumed=st.sets(st.sampled_from(_FLIPPABLE), max_size=4))
def test_an_estimate_is_assumed_exactly_when_one_of_its_inputs_is(assumed):
    d = _all_measured()
    for path in assumed:
        node = d
        for part in path.split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        node["tag"] = "assumed"
    p = DeploymentPlanProblem.from_dict(d)
    est = estimate(p)
    fields = {a.replace(".0.", "[0].") for a in assumed}
    for name, m in est.meta.items():
        extra = {"inference queueing"} if name == "inference_p95_ms" else set()
        assert set(m["assumed_inputs"]) <= fields | extra, name
        assert (m["tag"] == "assumed") == bool(m["assumed_inputs"]), name
    gs = gates(p, est)
    for g, r in gs.items():
        assert (r["tag"] == "assumed") == bool(r["assumed_inputs"]), g
    if "budgets.deadline_days" in assumed:
        assert gs["G4"]["tag"] == "assumed"


def test_bare_plan_and_budget_values_are_assumed_and_registered():
    res = plan(_problem(), with_tornado=False, with_whatif=False).to_dict()
    reg = {a["field"]: a for a in res["assumptions"]}
    assert reg["training_plan.timeout_s"]["value"] == 600.0
    assert "bare" in reg["training_plan.timeout_s"]["origin"]
    assert reg["budgets.deadline_days"]["value"] == 1.5
    assert "training_plan.timeout_s" in res["estimates"]["days_to_target"]["assumed_inputs"]
    util = res["estimates"]["server_cpu_util"]
    assert util["tag"] == "assumed" and "server.agg_cpu_s_per_step" in util["assumed_inputs"]
    g4 = res["gates"]["G4"]
    assert g4["tag"] == "assumed" and "budgets.deadline_days" in g4["assumed_inputs"]


def test_every_default_applied_is_in_the_register():
    d = _data()
    for key in ("bw_sigma", "interference"):
        del d["device_classes"][0][key]
    res = plan(DeploymentPlanProblem.from_dict(d), with_tornado=False,
               with_whatif=False).to_dict()
    reg = {a["field"]: a for a in res["assumptions"]}
    for path in ("device_classes[0].bw_sigma", "device_classes[0].interference",
                 "device_classes[0].os_supported", "model.header_bytes",
                 "server.reservation", "monte_carlo.confidence"):
        assert reg[path]["origin"].startswith("default"), path
    assert reg["device_classes[0].bw_sigma"]["value"] == 0.0
    assert reg["server.reservation"]["value"] == "training_windows"
    assert "device_classes[0].bw_sigma" in res["estimates"]["round_time"]["assumed_inputs"]


# -- 5. server reservation and energy shares ------------------------------------------------
def test_server_reservation_defaults_to_the_training_windows():
    p = _problem()
    V = estimate(p).values
    sv, days = p.server, V["days_to_target"]["p50"]
    kwh = sv.power_w * sv.n_instances * sv.pue * 4 * days / 1000.0   # 4 window hours a day
    assert V["energy_breakdown_kwh"]["server"] == pytest.approx(kwh, rel=1e-12)
    assert V["cloud_usd_breakdown"]["instances"] == pytest.approx(
        p.cost_rates.instance_hour_usd * sv.n_instances * 4 * days, rel=1e-12)
    assert sum(V["energy_share"].values()) == pytest.approx(1.0)
    on = estimate(_problem({"server.reservation": "always_on"})).values
    assert on["energy_breakdown_kwh"]["server"] == pytest.approx(6 * kwh, rel=1e-12)
    assert on["energy_share"]["server"] > V["energy_share"]["server"]
    with pytest.raises(ValidationError, match=r"server.reservation"):
        _problem({"server.reservation": "sometimes"})


def test_report_shows_the_energy_share_per_component():
    res = plan(_problem(), with_tornado=False, with_whatif=False)
    share = res.to_dict()["estimates"]["energy_share"]["value"]
    assert set(share) == {"device_download", "device_compute", "device_upload", "network",
                          "server"}
    md = res.markdown()
    assert "Energy by component" in md and "training_windows" in md
    assert f"| server | {res.estimates['energy_breakdown_kwh']['server']:,.4g} |" in md


# -- 6. one plan, one number ----------------------------------------------------------------
def test_gate_table_tornado_and_what_if_show_the_same_base_numbers():
    grid = {"training_plan.windows": [[0, 1, 2, 3], ALL_WINDOWS]}
    res = plan(_problem(), whatif_grid=grid,
               tornado_inputs={"rounds scale": ["convergence.rounds_scale"]})
    g4 = res.gates["G4"]
    base_row = res.whatif[res.whatif["param.training_plan.windows"] == "[0, 1, 2, 3]"].iloc[0]
    assert base_row["days_p90"] == g4["p90"]
    assert res.tornado.attrs["base"]["days_p90"] == g4["p90"]
    assert base_row["cloud_usd_p90"] == res.estimates["cloud_usd"]["p90"]
    # every point at the plan's own sizes: the lever's condition matches its grid row
    cond = {c["lever"]: c for c in res.evaluation.levers_tried}["training_plan.windows"]
    wide = res.whatif[res.whatif["param.training_plan.windows"] == str(ALL_WINDOWS)].iloc[0]
    assert cond["days_p90"] == wide["days_p90"]


# -- 4. the verdict under simulated values ---------------------------------------------------
def test_simulated_values_that_double_the_days_change_the_gates():
    from jointopt.solvers.planner.verify import simulated_estimates

    p = _problem({"training_plan.windows": ALL_WINDOWS, "levers": {}})
    est = estimate(p)
    same = {"days": 1.0, "tpd": 1.0, "uniq": 1.0, "bytes": 1.0, "energy": 1.0, "tasks": 1.0,
            "rt": 1.0, "fail": 0.0}
    st = {g: r["status"] for g, r in gates(p, est).items()}
    assert {g: r["status"] for g, r in gates(p, simulated_estimates(est, same)).items()} == st
    slow = simulated_estimates(est, {**same, "days": 4.0, "tpd": 0.25})
    assert slow.values["days_to_target"]["p90"] == pytest.approx(
        4 * est.values["days_to_target"]["p90"])
    assert gates(p, slow)["G4"]["status"] == "fail" and st["G4"] == "pass"
    risky = simulated_estimates(est, {**same, "fail": 0.05})
    assert gates(p, risky)["G3"]["status"] == "fail"
