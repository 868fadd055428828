"""Check a plan's estimates against the SimPy simulation of the same plan, and whether the
verdict survives the simulated values (**project choice**: the tolerances, the scaling and
the substitution).

The simulation (:mod:`.des`) runs a scaled-down campaign: ``rounds`` sync rounds or
``updates`` accepted async updates, ``replications`` times. Per quantity a check passes if
``|planner - DES| <= max(tol, 3 SE)`` (``tol`` relative to the DES value, or absolute for a
probability), with SE from the spread of the replications. The planner's side is computed
for the same scaled-down campaign from the plan's own estimates: per-round (per-update)
means times the number of rounds (updates), calendar days on a clock from UTC 0
(:func:`jointopt.models.planner.clock_days` / :func:`~jointopt.models.planner.async_days`),
tasks per device-day over those days, unique participants from the same number of tasks.

Verdict under the simulated values: each checked quantity's DES/planner ratio rescales the
plan's estimates that are built from it (days and everything billed or powered per day;
tasks per device-day and the per-class burden; unique participants; bytes; device energy;
the round-failure probability and its confidence bound shift by the simulated minus the
planner's per-attempt failure rate: a scaled-down run has too few attempts for a bound of
its own). The gates are re-evaluated on those values. The verdict cannot change when no gate
status changes; when one does, the verdict is the rule of the gates alone (the lever search
is not re-run, ``levers_rerun = False``). The joint-inference gate G7 keeps the planner's
allocation. A gate whose value lies within its quantity's tolerance of the threshold is
marked ``marginal``: a verdict change there is within the agreement the check can show.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from jointopt.models import planner as pm
from jointopt.solvers.planner.estimate import Estimates
from jointopt.solvers.planner.gates import _verdict_core, gates
from jointopt.solvers.planner.problem import DeploymentPlanProblem

#: relative tolerance of each gate's value for the ``marginal`` mark
GATE_TOLERANCE = {"G3": 0.01, "G4": 0.05, "G5": 0.03, "G6": 0.03}


@dataclass
class DESCheck:
    """Agreement table (one row per quantity) and the verdict under the simulated values."""

    table: pd.DataFrame
    verdict_planner: str
    verdict_des: str
    gates_planner: dict[str, str]
    gates_des: dict[str, str]
    marginal: list[str] = field(default_factory=list)
    levers_rerun: bool = True
    rounds: int | None = None
    updates: int | None = None
    replications: int = 0

    @property
    def ok(self) -> bool:
        return bool(self.table["ok"].all())

    @property
    def verdict_changes(self) -> bool:
        return self.verdict_des != self.verdict_planner

    def to_dict(self) -> dict:
        return {"checks": self.table.to_dict(orient="records"), "ok": self.ok,
                "scale": {"rounds": self.rounds, "updates": self.updates,
                          "replications": self.replications},
                "verdict": {"planner": self.verdict_planner, "des": self.verdict_des,
                            "changes": self.verdict_changes, "marginal_gates": self.marginal,
                            "levers_rerun": self.levers_rerun},
                "gates": {g: {"planner": self.gates_planner[g], "des": self.gates_des[g]}
                          for g in self.gates_planner}}


def _row(name, planner_v, samples, tol, *, absolute=False, des_v=None):
    s = np.asarray(samples, dtype=float)
    se = float(s.std(ddof=1) / np.sqrt(len(s))) if len(s) > 1 else 0.0
    d = float(s.mean()) if des_v is None else float(des_v)
    allowed = max(tol if absolute else tol * abs(d), 3 * se)
    return {"quantity": name, "planner": float(planner_v), "des": d, "se": se,
            "tolerance": tol, "tolerance_kind": "absolute" if absolute else "relative",
            "ok": bool(abs(planner_v - d) <= allowed)}


def _ratio(des, planner):
    return des / planner if planner not in (0, 0.0) and np.isfinite(planner) else 1.0


def des_check(problem: DeploymentPlanProblem, est: Estimates, verdict: str, *,
              rounds: int = 30, updates: int = 1000, replications: int = 5,
              seed: int = 12345) -> DESCheck:
    """Run the DES on ``problem`` (scaled down) and compare with ``est`` (its estimates) and
    ``verdict`` (its verdict); see the module docstring."""
    from jointopt.solvers.planner.des import replicate

    V, pu, pop = est.values, est.values["per_unit"], problem.population
    sync = problem.training_plan.mode == "sync"
    if sync and problem.training_plan.C is None:
        problem = problem.with_changes({"training_plan.C": int(V["C"]),
                                        "training_plan.omega": None})
    elig = pop.n_devices * pop.static_eligibility * V["coverage_in_pool"]
    e_day = elig * pop.daily_unique_frac
    camp = pop.campaign_unique_frac if pop.campaign_unique_frac is not None \
        else pop.daily_unique_frac
    if sync:
        reps = replicate(problem, replications, rounds=rounds, seed=seed)
        n = [rounds] * len(reps)
        days_p = float(pm.clock_days(rounds * V["round_time"]["mean"], est.hourly["ok"]))
        rts = [np.asarray(r.round_times) for r in reps]
        fail = [r.failed_attempts / r.attempts for r in reps]
        rows = [_row("mean round time (s)", V["round_time"]["mean"], [x.mean() for x in rts],
                     0.02),
                _row("P90 round time (s)", V["round_time"]["p90"],
                     [np.percentile(x, 90) for x in rts], 0.03,
                     des_v=np.percentile(np.concatenate(rts), 90)),
                _row("round failure probability", V["round_failure_prob"], fail, 0.01,
                     absolute=True)]
    else:
        reps = replicate(problem, replications, updates=updates, seed=seed)
        n = [r.accepted for r in reps]
        days_p = float(pm.async_days(updates, est.hourly["accepted_per_hour"]))
        rows = [_row("success rate (1/s)", V["async_rate_per_s"],
                     [r.successes / r.elapsed_s for r in reps], 0.03),
                _row("accepted rate (1/s)", V["async_accepted_rate_per_s"],
                     [r.accepted / r.elapsed_s for r in reps], 0.05)]
    units = float(np.mean(n))
    tasks_p = pu["tasks"] * units
    rows += [
        _row("calendar days", days_p, [r.elapsed_days for r in reps], 0.05),
        _row("tasks per device-day", tasks_p / days_p / e_day,
             [r.tasks_started / r.elapsed_days / e_day for r in reps], 0.03),
        _row("unique participants", pm.unique_participants(tasks_p, elig * camp),
             [r.unique_participants for r in reps], 0.03),
        _row("bytes per unit", pu["bytes_down"] + pu["bytes_up"],
             [(r.bytes_down + r.bytes_up) / k for r, k in zip(reps, n, strict=True)], 0.02),
        _row("device-seconds per unit", pu["dev_s"],
             [r.device_s / k for r, k in zip(reps, n, strict=True)], 0.03),
        _row("device energy J per unit", pu["e_dn"] + pu["e_cmp"] + pu["e_up"],
             [r.energy_j / k for r, k in zip(reps, n, strict=True)], 0.03)]
    table = pd.DataFrame(rows)
    q = {r["quantity"]: r for r in rows}
    f = {"days": _ratio(q["calendar days"]["des"], days_p),
         "tpd": _ratio(q["tasks per device-day"]["des"], q["tasks per device-day"]["planner"]),
         "uniq": _ratio(q["unique participants"]["des"], q["unique participants"]["planner"]),
         "bytes": _ratio(q["bytes per unit"]["des"], q["bytes per unit"]["planner"]),
         "energy": _ratio(q["device energy J per unit"]["des"],
                          q["device energy J per unit"]["planner"]),
         "tasks": _ratio(np.mean([r.tasks_started / k for r, k in zip(reps, n, strict=True)]),
                         pu["tasks"])}
    if sync:
        f["rt"] = _ratio(q["mean round time (s)"]["des"], V["round_time"]["mean"])
        f["fail"] = q["round failure probability"]["des"] - V["round_failure_prob"]
    else:
        f["rt"] = 1.0 / _ratio(q["accepted rate (1/s)"]["des"], V["async_accepted_rate_per_s"])
    des_est = simulated_estimates(est, f)
    g_plan = gates(problem, est)
    g_des = gates(problem, des_est)
    st_plan = {g: r["status"] for g, r in g_plan.items()}
    st_des = {g: r["status"] for g, r in g_des.items()}
    if st_plan == st_des:
        verdict_des, levers_rerun = verdict, True
    else:
        verdict_des, _ = _verdict_core(g_des, des_est)
        levers_rerun = False
    marginal = []
    for g, tol in GATE_TOLERANCE.items():
        r = g_plan[g]
        thr, v = r.get("threshold"), r.get("p90")
        if thr not in (None, 0) and v is not None and abs(v - thr) <= tol * abs(thr):
            marginal.append(g)
    return DESCheck(table, verdict, verdict_des, st_plan, st_des, marginal, levers_rerun,
                    rounds if sync else None, None if sync else updates, replications)


def simulated_estimates(est: Estimates, f: dict) -> Estimates:
    """A copy of ``est`` with the quantities the DES checked rescaled by their DES/planner
    ratios ``f`` (``days``, ``tpd``, ``uniq``, ``bytes``, ``energy``, ``tasks``, ``rt``; and for
    sync plans ``fail``, the simulated minus the planner's per-attempt failure probability,
    which shifts the binomial estimate and its confidence bound)."""
    out = copy.deepcopy(est)
    V = out.values

    def scale(name, k):
        v = V[name]
        V[name] = {q: x * k for q, x in v.items()} if isinstance(v, dict) else v * k

    scale("days_to_target", f["days"])
    V["days_p90"] = V["days_to_target"]["p90"]
    scale("days_p90_time_model_only", f["days"])
    scale("server_reserved_hours", f["days"])
    scale("tasks_per_device_day", f["tpd"])
    scale("unique_participants", f["uniq"])
    scale("participant_coverage", f["uniq"])
    for key in ("bytes_down", "bytes_up"):
        scale(key, f["bytes"])
    pc = out.per_class
    per_task_bytes = f["bytes"] / f["tasks"]
    per_task_energy = f["energy"] / f["tasks"]
    for q in ("p50", "p90"):
        pc[f"cpu_s_per_day_{q}"] = [x * f["tpd"] for x in pc[f"cpu_s_per_day_{q}"]]
        pc[f"mb_per_day_{q}"] = [x * f["tpd"] * per_task_bytes for x in pc[f"mb_per_day_{q}"]]
        pc[f"battery_pct_per_day_{q}"] = [x * f["tpd"] * per_task_energy
                                          for x in pc[f"battery_pct_per_day_{q}"]]
    eb = V["energy_breakdown_kwh"]
    k_energy = {"device_download": f["energy"], "device_compute": f["energy"],
                "device_upload": f["energy"], "network": f["bytes"], "server": f["days"]}
    old = sum(eb.values())
    V["energy_breakdown_kwh"] = {k: v * k_energy[k] for k, v in eb.items()}
    scale("energy_kwh", sum(V["energy_breakdown_kwh"].values()) / old if old else 1.0)
    co2 = V["co2e_breakdown_kg"]
    old = sum(co2.values())
    V["co2e_breakdown_kg"] = {"device": co2["device"] * f["energy"],
                              "network": co2["network"] * f["bytes"],
                              "server": co2["server"] * f["days"]}
    scale("co2e_kg", sum(V["co2e_breakdown_kg"].values()) / old if old else 1.0)
    usd = V["cloud_usd_breakdown"]
    k_usd = {"instances": f["days"], "storage": f["days"], "cloud_inference": f["days"],
             "egress": f["bytes"], "ingress": f["bytes"]}
    old = sum(usd.values())
    V["cloud_usd_breakdown"] = {k: v * k_usd.get(k, 1.0) for k, v in usd.items()}
    scale("cloud_usd", sum(V["cloud_usd_breakdown"].values()) / old if old else 1.0)
    scale("server_cpu_util", 1.0 / f["rt"])
    if "fail" in f:
        rf = V["round_failure_binomial"]
        V["round_failure_binomial"] = {
            **rf, "estimate": min(1.0, max(0.0, rf["estimate"] + f["fail"])),
            "upper_bound": min(1.0, max(0.0, rf["upper_bound"] + f["fail"]))}
    return out


__all__ = ["DESCheck", "des_check", "simulated_estimates"]
