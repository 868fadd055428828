"""Gates G1-G8, the GO / CONDITIONAL / NO-GO verdict and the levers.

**Project choice** throughout; every threshold comes from the scenario's ``budgets`` (a
missing one leaves its check ``not_evaluated``). "P90" is the unfavourable side: the 90th
percentile of a cost or duration, the 10th of a benefit. Gate status: ``pass`` (at P90),
``fail_p90`` (passes at P50 only), ``fail`` (fails at P50), ``not_evaluated``,
``not_applicable``.

Verdict: GO when every applicable gate passes, none is unevaluated and nothing is
extrapolated; CONDITIONAL when no gate fails, or exactly one of G3-G7 fails and one single
change from the user's lever space gives a plan with no failing gate; NO-GO otherwise
(including any failure of G1, G2 or G8, which need new benchmarks or simulations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jointopt.models.errors import InfeasibleError, ValidationError
from jointopt.solvers.planner.estimate import THRESHOLD_SECTIONS, Estimates, estimate
from jointopt.solvers.planner.problem import TAGS, DeploymentPlanProblem

SEVERITY = {"not_applicable": 0, "pass": 1, "not_evaluated": 2, "fail_p90": 3, "fail": 4}
GATE_NAMES = {"G1": "device fitness", "G2": "quality", "G3": "population", "G4": "time",
              "G5": "device burden", "G6": "cloud", "G7": "inference", "G8": "privacy"}
NEXT_STEP = {"G1": "new device-farm benchmarks (memory, crash rate) or a smaller model",
             "G2": "new convergence simulations covering the plan (K, compression, DP)",
             "G8": "DP accounting at the plan's K, or a measured secure-aggregation expansion"}


def check_status(p50, p90, threshold, *, upper: bool = True) -> str:
    """Status of one check: ``value <= threshold`` (``upper``) or ``>=``, at P90 and P50."""
    if threshold is None or p50 is None or p90 is None:
        return "not_evaluated"
    if isinstance(p50, float) and np.isnan(p50):
        return "not_evaluated"
    ok = (lambda v: v <= threshold) if upper else (lambda v: v >= threshold)
    if ok(p90):
        return "pass"
    return "fail_p90" if ok(p50) else "fail"


def _check(name, p50, p90, thr, field_, unit, meta, *, upper=True, status=None):
    st = status or check_status(p50, p90, thr, upper=upper)
    return {"check": name, "status": st, "p50": p50, "p90": p90, "threshold": thr,
            "threshold_field": field_, "unit": unit, "upper": upper,
            "tag": meta.get("tag", "assumed"), "method": meta.get("method", "input"),
            "assumed_inputs": meta.get("assumed_inputs", [])}


def _config_meta(problem: DeploymentPlanProblem, fields: list[str]) -> dict:
    """Tag of a check read straight from scenario fields: the weakest of theirs."""
    tags = [problem.tag(f) for f in fields]
    return {"tag": min(tags, key=TAGS.index), "method": "config",
            "assumed_inputs": [f for f, t in zip(fields, tags, strict=True) if t == "assumed"]}


def _tag_thresholds(problem: DeploymentPlanProblem, checks: list[dict]) -> list[dict]:
    """A check's status depends on its value and its threshold: its tag is the weaker of the
    two, and an assumed threshold (a bare budget) joins its assumed inputs."""
    for c in checks:
        f = c["threshold_field"]
        if c["threshold"] is None or not f or not f.startswith(THRESHOLD_SECTIONS):
            continue
        t = problem.tag(f)
        c["tag"] = min(c["tag"], t, key=TAGS.index)
        if t == "assumed" and f not in c["assumed_inputs"]:
            c["assumed_inputs"] = sorted([*c["assumed_inputs"], f])
    return checks


def _gate(checks: list[dict]) -> dict:
    if not checks:
        return {"status": "not_applicable", "p50": None, "p90": None, "threshold": None,
                "threshold_field": None, "unit": "", "tag": "measured", "method": "config",
                "assumed_inputs": [], "check": None, "upper": True, "checks": []}

    def util(c):
        if c["threshold"] in (None, 0) or c["p90"] is None:
            return 0.0
        r = c["p90"] / c["threshold"]
        return r if c["upper"] else (1.0 / r if r else np.inf)

    worst = max(checks, key=lambda c: (SEVERITY[c["status"]], util(c)))
    out = {k: worst[k] for k in ("status", "p50", "p90", "threshold", "threshold_field", "unit",
                                 "tag", "method", "assumed_inputs")}
    out["check"] = worst["check"]
    out["upper"] = worst["upper"]
    out["checks"] = checks
    return out


def gates(problem: DeploymentPlanProblem, est: Estimates) -> dict[str, dict]:
    """The eight gates from the estimates and the user's budgets."""
    b, tp, V, M = problem.budgets, problem.training_plan, est.values, est.meta
    cv = problem.convergence
    out: dict[str, list[dict]] = {}
    cov = V["fleet_coverage"]
    out["G1"] = [_check("fleet_coverage", cov, cov, b.min_fleet_coverage,
                        "budgets.min_fleet_coverage", "fraction", M["fleet_coverage"],
                        upper=False)]
    if V.get("no_fleet"):
        for g in ("G2", "G3", "G4", "G5", "G6", "G7", "G8"):
            out[g] = [_check("no device class can train", None, None, None, "", "", {},
                             status="not_evaluated")]
        return {g: _gate(_tag_thresholds(problem, cs)) for g, cs in out.items()}
    mg = V["metric_gap"]
    thr = -b.max_metric_drop if b.max_metric_drop is not None else None
    g2 = [_check("metric_gap", mg["p50"], mg["p90"], thr, "budgets.max_metric_drop",
                 "relative", M["metric_gap"], upper=False)]
    if tp.dp.enabled != cv.dp_enabled:
        g2.append(_check("fit DP config matches plan", 0.0, 0.0, None, "convergence.dp_enabled",
                         "", {"tag": "simulated", "method": "config"}, status="fail"))
    out["G2"] = g2
    hours = V["hours_ok_per_day"]
    g3 = [_check("hours that can host C", hours, hours, 1, "training_plan.windows", "h/d",
                 M["hours_ok_per_day"], upper=False)]
    if b.min_participant_coverage is not None:
        pc = V["participant_coverage"]
        g3.append(_check("participant_coverage", pc, pc, b.min_participant_coverage,
                         "budgets.min_participant_coverage", "fraction",
                         M["participant_coverage"], upper=False))
    if tp.mode == "sync" and b.max_round_failure_prob is not None:
        rf = V["round_failure_binomial"]
        g3.append(_check("round_failure_prob", rf["estimate"], rf["upper_bound"],
                         b.max_round_failure_prob, "budgets.max_round_failure_prob", "fraction",
                         M["round_failure_binomial"]))
    out["G3"] = g3
    d = V["days_to_target"]
    out["G4"] = [_check("days_to_target", d["p50"], d["p90"], b.deadline_days,
                        "budgets.deadline_days", "d", M["days_to_target"])]
    pc = est.per_class
    tpd = V["tasks_per_device_day"]
    g5 = [_check("tasks_per_device_day", tpd["p50"], tpd["p90"], b.max_tasks_per_device_day,
                 "budgets.max_tasks_per_device_day", "tasks/d", M["tasks_per_device_day"])]
    for key, bud, fld, unit in (
            ("cpu_s_per_day", b.max_cpu_s_per_device_day, "budgets.max_cpu_s_per_device_day",
             "s/d"),
            ("mb_per_day", b.max_mb_per_device_day, "budgets.max_mb_per_device_day", "MB/d"),
            ("battery_pct_per_day", b.max_battery_pct_per_day, "budgets.max_battery_pct_per_day",
             "%/d")):
        for j, name in enumerate(pc["class"]):
            st = None
            if key == "battery_pct_per_day" and problem.population.policy_requires_charging:
                st = "not_applicable"
            g5.append(_check(f"{key}[{name}]", pc[f"{key}_p50"][j], pc[f"{key}_p90"][j], bud,
                             fld, unit, est.per_class_meta, status=st))
    out["G5"] = g5
    usd = V["cloud_usd"]
    co2 = V["co2e_kg"]
    sv = problem.server
    g6 = [_check("cloud_usd", usd["p50"], usd["p90"], b.max_cloud_usd, "budgets.max_cloud_usd",
                 "USD", M["cloud_usd"])]
    if b.max_co2e_kg is not None:
        g6.append(_check("co2e_kg", co2["p50"], co2["p90"], b.max_co2e_kg, "budgets.max_co2e_kg",
                         "kg", M["co2e_kg"]))
    g6.append(_check("server_cpu_util", V["server_cpu_util"], V["server_cpu_util"],
                     sv.max_cpu_util, "server.max_cpu_util", "fraction", M["server_cpu_util"]))
    g6.append(_check("aggregator_mem_gb", V["aggregator_mem_gb"], V["aggregator_mem_gb"],
                     sv.mem_gb, "server.mem_gb", "GB", M["aggregator_mem_gb"]))
    out["G6"] = g6
    al = est.allocator
    n_bad = int(sum(not f for f in al["feasible"]))
    g7 = [_check("allocator: classes that cannot fit training and inference", n_bad, n_bad,
                 0 if b.max_cpu_s_per_device_day is not None else None,
                 "budgets.max_cpu_s_per_device_day", "classes", M["on_device_share"])]
    od = V["on_device_share"]
    g7.append(_check("on_device_share", od, od, problem.inference.min_on_device_share,
                     "inference.min_on_device_share", "fraction", M["on_device_share"],
                     upper=False))
    lat = V["inference_p95_ms"]
    g7.append(_check("inference_p95_ms", lat, lat, problem.inference.latency_slo_p95_ms,
                     "inference.latency_slo_p95_ms", "ms", M["inference_p95_ms"]))
    out["G7"] = g7
    g8 = []
    if tp.dp.enabled:
        g8.append(_check("K >= dp.K_min", tp.K, tp.K, tp.dp.K_min, "training_plan.dp.K_min", "",
                         _config_meta(problem, ["training_plan.K", "training_plan.dp.K_min"]),
                         upper=False))
    if tp.secagg:
        measured = problem.provenance.get("model.secagg_expansion") == "measured"
        g8.append(_check("secagg_expansion is measured", float(measured), float(measured), 1.0,
                         "model.secagg_expansion", "",
                         _config_meta(problem, ["model.secagg_expansion"]), upper=False))
    out["G8"] = g8
    return {g: _gate(_tag_thresholds(problem, cs)) for g, cs in out.items()}


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def reasons_for(gs: dict[str, dict], est: Estimates) -> list[str]:
    out = []
    for g, rec in gs.items():
        if rec["status"] in ("pass", "not_applicable"):
            continue
        if rec["status"] == "not_evaluated":
            out.append(f"{g} not_evaluated: {rec.get('check')}: threshold "
                       f"{rec['threshold_field']} is not given (user budget)")
            continue
        op = ">" if rec.get("upper", True) else "<"
        side = "P90" if rec["status"] == "fail_p90" else "P50"
        val = rec["p90"] if rec["status"] == "fail_p90" else rec["p50"]
        text = (f"{g} {rec['status']}: {rec.get('check')} = {_fmt(val)} {rec['unit']} at {side} "
                f"{op} {rec['threshold_field']} = {_fmt(rec['threshold'])} (user budget)")
        if g == "G4":
            text += (f"; time model only: {_fmt(est.values['days_p90_time_model_only'])} d at "
                     "P90")
        if g in NEXT_STEP:
            text += f"; next step: {NEXT_STEP[g]}"
        out.append(text)
    for x in est.extrapolated:
        out.append(f"extrapolated {x['input']}: {x['text']}; the convergence calibration does "
                   "not cover it (caps the verdict at CONDITIONAL; next step: calibration runs "
                   "that cover the plan)")
    return out


@dataclass
class Evaluation:
    """Verdict, gates, reasons, conditions (levers) and the estimates behind them."""

    verdict: str
    gates: dict[str, dict]
    reasons: list[str]
    conditions: list[dict]
    estimates: Estimates
    n_mc: int
    levers_tried: list[dict] = field(default_factory=list)

    @property
    def per_class(self) -> dict[str, list]:
        return {k: v for k, v in self.estimates.per_class.items() if k != "class"}


def lever_candidates(problem: DeploymentPlanProblem) -> list[tuple[str, Any]]:
    """Single changes from the user-declared lever space (never invented values)."""
    lv, tp, out = problem.levers, problem.training_plan, []
    for v in lv.K:
        if v != tp.K:
            out.append(("training_plan.K", v))
    for v in lv.C:
        if v != tp.C:
            out.append(("training_plan.C", v))
    for v in lv.omega:
        out.append(("training_plan.omega", v))
    for v in lv.compression_up:
        if v != problem.model.compression_up:
            out.append(("model.compression_up", v))
    for v in lv.windows:
        if sorted(set(v)) != sorted(set(tp.windows)):
            out.append(("training_plan.windows", v))
    for v in lv.local_epochs:
        if v != tp.local_epochs:
            out.append(("training_plan.local_epochs", v))
    for v in lv.exclude_class:
        if v not in tp.exclude_classes:
            out.append(("training_plan.exclude_classes", [*tp.exclude_classes, v]))
    return out


def apply_lever(problem: DeploymentPlanProblem, path: str, value) -> DeploymentPlanProblem:
    changes = {path: value}
    if path == "training_plan.omega":
        changes["training_plan.C"] = None
    return problem.with_changes(changes)


def _verdict_core(gs: dict[str, dict], est: Estimates) -> tuple[str, list[str]]:
    fails = [g for g, r in gs.items() if r["status"] == "fail"]
    if not fails:
        if all(r["status"] in ("pass", "not_applicable") for r in gs.values()) \
                and not est.extrapolated:
            return "GO", fails
        return "CONDITIONAL", fails
    return "NO-GO", fails


def seed_spread(problem: DeploymentPlanProblem, est: Estimates,
                n_seeds: int) -> dict[str, dict] | None:
    """The plan re-estimated with seeds ``seed, seed+1, ..., seed+n_seeds-1`` (same
    Monte-Carlo sizes): per seed, the over-selection count C with its round-failure
    probability (binomial at the seed's p-bar, and at its confidence bound) for G3, and P50 /
    P90 days for G4. It shows how much of a number is Monte-Carlo noise; the gates
    themselves use the plan's own seed (one plan, one number)."""
    if n_seeds <= 1 or est.values.get("no_fleet"):
        return None
    seeds = [est.seed + i for i in range(n_seeds)]
    runs = [est] + [estimate(problem, n_mc=est.n_mc, n_outer=est.n_outer, seed=s)
                    for s in seeds[1:]]
    g4 = {"seeds": seeds,
          "days_p50": [e.values["days_to_target"]["p50"] for e in runs],
          "days_p90": [e.values["days_to_target"]["p90"] for e in runs]}
    out = {"G4": g4}
    if problem.training_plan.mode == "sync":
        out["G3"] = {"seeds": seeds, "C": [int(e.values["C"]) for e in runs],
                     "round_failure_prob": [e.values["round_failure_binomial"]["estimate"]
                                            for e in runs],
                     "round_failure_upper_bound": [
                         e.values["round_failure_binomial"]["upper_bound"] for e in runs]}
    return out


def evaluate(problem: DeploymentPlanProblem, *, n_mc: int | None = None,
             n_outer: int | None = None, seed: int | None = None,
             search_levers: bool = True, with_seed_spread: bool = True) -> Evaluation:
    """Estimates, gates and the verdict (with the lever search). Lever candidates are
    estimated with the plan's own Monte-Carlo sizes and seed; a candidate the convergence
    calibration does not cover is never a condition. ``G3`` / ``G4`` carry the spread
    across ``monte_carlo.n_seeds`` seeds (:func:`seed_spread`)."""
    est = estimate(problem, n_mc=n_mc, n_outer=n_outer, seed=seed)
    gs = gates(problem, est)
    spread = seed_spread(problem, est, problem.monte_carlo.n_seeds) if with_seed_spread \
        else None
    for g, rec in (spread or {}).items():
        gs[g]["seed_spread"] = rec
    verdict, fails = _verdict_core(gs, est)
    reasons = reasons_for(gs, est)
    conditions: list[dict] = []
    tried: list[dict] = []
    need = verdict != "GO"
    lever_ok = len(fails) == 1 and fails[0] in ("G3", "G4", "G5", "G6", "G7")
    if need and search_levers and (not fails or lever_ok):
        for path, value in lever_candidates(problem):
            try:
                alt = apply_lever(problem, path, value)
                e2 = estimate(alt, n_mc=est.n_mc, n_outer=est.n_outer, seed=est.seed)
            except (ValidationError, InfeasibleError) as exc:
                tried.append({"lever": path, "to": value, "error": str(exc)})
                continue
            g2 = gates(alt, e2)
            after = {g: r["status"] for g, r in g2.items()}
            rec = {"lever": path, "to": value, "gates_after": after,
                   "days_p90": e2.values.get("days_to_target", {}).get("p90"),
                   "cloud_usd_p90": e2.values.get("cloud_usd", {}).get("p90"),
                   "extrapolated": [x["input"] for x in e2.extrapolated]}
            tried.append(rec)
            no_fail = all(s != "fail" for s in after.values())
            all_pass = all(s in ("pass", "not_applicable") for s in after.values())
            if not e2.extrapolated and ((fails and no_fail) or (not fails and all_pass)):
                conditions.append(rec)
        if fails:
            verdict = "CONDITIONAL" if conditions else "NO-GO"
            if not conditions:
                reasons.append("no single lever in the declared lever space removes the "
                               f"failing gate {fails[0]}")
    if fails and not lever_ok:
        verdict = "NO-GO"
    return Evaluation(verdict, gs, reasons, conditions, est, est.n_mc, tried)
