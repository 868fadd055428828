"""The siloed plan and the joint loop of the edge system [project choice].

**Siloed plan**: the stages once, one after the other, each with the fixed guesses a user
planning them separately would make: the placement assumes every request reaches the edge
(``D_n = lambda_n``, as HFLOP does; where no placement fits that, the inference-unaware
placement that ignores capacity); each host's split problem is solved alone, with the split
kind's own offload curves and no admission cap; the allocation serves what that leaves.

**Joint loop**: block-coordinate over the stages from the siloed plan: placement with the
current edge loads ``D_n``; serving per host given the association, the hosts' capacities
and the timely offload curves of the current allocation; allocation given what each device
serves; recompute ``D_n``. It stops when the association and every ``D_n`` change by less
than the tolerance, when the association holds and the system objective moves by less than
``loop.objective_tol`` or ``loop.patience`` iterates in a row bring no gain (stalled), after
``max_iters`` iterates, or when an iterate repeats an earlier one (a cycle, reported).
When the current loads fit no placement, the placement takes each device's offload above
what it must forward scaled down (0.75, 0.5, 0.25, 0) until one fits. Every iterate and the
siloed plan are scored by the one function
:func:`jointopt.solvers.system.evaluate.evaluate_plan`; the best feasible one (highest
request-weighted timely accuracy, then least training communication) is returned, so the
joint plan is never worse than a feasible siloed plan.

The loop is a **heuristic over exact stage solvers**: each stage is solved by its kind's own
solver (exactly where that kind solves exactly), but the joint problem is not convex and the
loop claims no optimality for it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from jointopt.models.errors import InfeasibleError
from jointopt.solvers.base import SolveResult
from jointopt.solvers.system import stages
from jointopt.solvers.system.evaluate import Plan, evaluate_plan, host_on_time, scalars

HEURISTIC = ("block-coordinate loop over exact stage solvers (hfl, split_learning, "
             "cis_early_exit, joint_training_inference); no optimality claim for the joint "
             "problem")


@dataclass
class SystemResult(SolveResult):
    """The plan of an edge system. Its decisions mix per-device arrays and the list of open
    hosts (``placement``); the decisions frame is the per-device table. Status ``feasible``
    (every host within capacity, participation and caps met) or ``infeasible`` (the loop
    found no feasible plan; the least overloaded one is returned). Never ``optimal``."""

    OK_STATUSES: ClassVar[tuple[str, ...]] = ("feasible",)

    def decisions_frame(self):
        import pandas as pd

        n = len(self.decisions["association"])
        cols = {k: np.asarray(v) for k, v in self.decisions.items()
                if np.ndim(v) == 1 and len(v) == n}
        return pd.DataFrame(cols).rename_axis("device").reset_index()


def _assemble(ctx, association, serving, alloc, exits, placement) -> Plan:
    return Plan(association=association, offload=serving.offload, cut=serving.cut,
                threshold=serving.threshold, host_cut=serving.host_cut, alloc=alloc,
                exit_weights=exits, serving=serving.results, placement=placement)


def _stages_after_placement(ctx, association, placement, *, capacity, factors, log) -> Plan:
    serving = stages.run_serving(ctx, association, capacity=capacity, factors=factors, log=log)
    exits = stages.run_exit_weights(ctx, association, serving.offload, log)
    alloc = stages.run_allocation(ctx, association, serving.offload, log)
    return _assemble(ctx, association, serving, alloc, exits, placement)


def siloed_plan(ctx, log: stages.StageLog, notes: list[str]) -> Plan:
    """The siloed plan (module docstring)."""
    p = ctx.problem
    t0 = time.perf_counter()
    try:
        association, placement = stages.run_placement(p, ctx.lam, capacitated=True)
        status = "capacity-aware (D = lambda)"
    except InfeasibleError as exc:
        notes.append("siloed placement: HFLOP with every request at the edge (D = lambda) "
                     f"is infeasible ({stages.infeasible_note(exc)}); the siloed plan uses "
                     "the inference-unaware placement, which ignores host capacity")
        association, placement = stages.run_placement(p, ctx.lam, capacitated=False)
        status = "inference-unaware (capacity ignored)"
    log.add("placement", status, time.perf_counter() - t0)
    return _stages_after_placement(ctx, association, placement, capacity=False, factors=None,
                                   log=log)


def edge_workload(ctx, plan: Plan) -> np.ndarray:
    """``D_n`` for the next placement: what each device sends to its host now; for a
    device without a host, its requests times the request-weighted offload share of the
    devices with one (at least what it cannot serve itself)."""
    lam, on = ctx.lam, plan.association >= 0
    sent = lam * plan.offload
    share = float(sent[on].sum() / lam[on].sum()) if on.any() and lam[on].sum() > 0 else 1.0
    return np.where(on, sent, lam * np.maximum(ctx.problem.forced_offload, share))


#: scalings of the offloads above the forced ones tried when the current loads fit no placement
SCALES = (1.0, 0.75, 0.5, 0.25, 0.0)


def fitting_placement(ctx, plan: Plan):
    """The placement for the current edge loads; when they fit no placement, for the loads
    with each device's offload above what it must forward scaled by 0.75, 0.5, 0.25, 0 in
    turn (the serving stage then keeps each host within its capacity). Returns
    ``(association, hfl result, workload, scale)``; raises ``InfeasibleError`` when even
    the forced offloads fit no placement."""
    base = edge_workload(ctx, plan)
    forced = ctx.lam * ctx.problem.forced_offload
    for theta in SCALES:
        workload = forced + theta * np.maximum(base - forced, 0.0)
        try:
            association, placement = stages.run_placement(ctx.problem, workload,
                                                          current=plan.association)
        except InfeasibleError:
            if theta == SCALES[-1]:
                raise
            continue
        return association, placement, workload, theta
    raise AssertionError("unreachable")


def _factors(ctx, plan: Plan, association, workload) -> dict:
    """The timely-curve factors of the next serving stage, from the current plan: each
    device's copy freshness, the weight and price of its service-rate block in the current
    allocation (a device without a host: its state, no cap multiplier), and the upper
    tier's freshness times the on-time fraction at its host under the new association (host
    loads from the current offloads, capped at the host's capacity)."""
    p = ctx.problem
    al = plan.alloc
    acc0 = ctx.acc_top
    device_factor = np.asarray(ctx.acc_map(al.ebar_next), float) / acc0
    tr = p.training
    K = tr.state.K
    alpha, kappa = ctx.acc_map.linearize(K)
    member = plan.association >= 0
    d = np.where(member, al.d, 1.0)
    value = tr.controller.V * (alpha - kappa * (d * al.K_next + (1 - d) * K))
    price = (tr.state.Z + np.where(member, al.nu, 0.0)) * p.devices.cost_service
    host_cut = np.where(plan.host_cut >= 0, plan.host_cut, p.cuts[0])
    cut = np.where(association >= 0, host_cut[np.maximum(association, 0)], -1)
    lam = np.where(ctx.lam > 0, ctx.lam, 1.0)
    offload = np.clip(workload / lam, 0.0, 1.0)
    on_time, _, _ = host_on_time(ctx, association, cut, offload, host_cut,
                                 load_cap=p.hosts.capacity)
    up = float(ctx.acc_map(al.K_next)) / acc0 * on_time
    return {"device_factor": device_factor, "up_factor": up, "value": value, "price": price}


def _row(k: int, kind: str, metrics: dict, log: stages.StageLog, prev: Plan | None,
         plan: Plan, ctx) -> dict:
    row = {"iterate": k, "plan": kind, **{key: metrics[key] for key in (
        "timely_accuracy", "comm_per_round", "edge_overload", "feasible", "participants",
        "share_device", "share_edge", "share_cloud")}}
    if prev is None:
        row.update(association_changes=0, max_load_change=0.0)
    else:
        row.update(association_changes=int((prev.association != plan.association).sum()),
                   max_load_change=float(np.max(np.abs(edge_workload(ctx, prev)
                                                       - edge_workload(ctx, plan)),
                                                initial=0.0)))
    row.update({f"{stage}_s": sec for stage, sec in log.seconds.items()})
    return row


def _better(a: tuple[Plan, dict, int], b: tuple[Plan, dict, int]) -> bool:
    """Whether iterate ``a`` beats ``b``: feasible first, then timely accuracy, then less
    training communication; among infeasible ones, less overload."""
    (_, ma, _), (_, mb, _) = a, b
    if ma["feasible"] != mb["feasible"]:
        return ma["feasible"]
    if not ma["feasible"] and ma["edge_overload"] != mb["edge_overload"]:
        return ma["edge_overload"] < mb["edge_overload"]

    def obj(m):
        v = m["timely_accuracy"]
        return v if math.isfinite(v) else -math.inf

    if abs(obj(ma) - obj(mb)) > 1e-12:
        return obj(ma) > obj(mb)
    return ma["comm_per_round"] < mb["comm_per_round"] - 1e-12


def solve_system(problem, method: str, *, max_iters: int | None = None, progress=None
                 ) -> SystemResult:
    """The siloed plan, then (``method="joint"``) the joint loop from it."""
    t_start = time.perf_counter()
    ctx = stages.Context(problem)
    notes: list[str] = []
    totals: dict[str, float] = {}

    def account(log):
        for key, sec in log.seconds.items():
            totals[key] = totals.get(key, 0.0) + sec

    log = stages.StageLog()
    silo = siloed_plan(ctx, log, notes)
    t0 = time.perf_counter()
    silo_m = evaluate_plan(ctx, silo)
    log.add("evaluate", "ok", time.perf_counter() - t0)
    account(log)
    trajectory = [_row(0, "siloed", silo_m, log, None, silo, ctx)]
    logs = [log]
    say = progress or (lambda line: None)
    say(f"siloed: timely accuracy {silo_m['timely_accuracy']:.4f}, overload "
        f"{silo_m['edge_overload']:.3g}, comm {silo_m['comm_per_round']:.4g}")
    iterates = [(silo, silo_m, 0)]
    loop_status = "siloed only"
    limit = problem.loop.max_iters if max_iters is None else int(max_iters)
    if method == "joint":
        loop_status = "max_iters"
        cur = silo
        lam_max = float(ctx.lam.max()) if ctx.lam.size else 0.0
        step = problem.loop.tol * max(lam_max, 1e-12)
        seen = {}
        best_value = silo_m["timely_accuracy"] if silo_m["feasible"] else -math.inf
        since_best = 0
        for k in range(1, limit + 1):
            log = stages.StageLog()
            t0 = time.perf_counter()
            try:
                association, placement, workload, theta = fitting_placement(ctx, cur)
                log.add("placement", "optimal" if placement is None else placement.status,
                        time.perf_counter() - t0)
            except InfeasibleError as exc:
                notes.append(f"iterate {k}: no placement fits even the requests the devices "
                             f"must forward ({stages.infeasible_note(exc)}); the loop stops")
                loop_status = "placement infeasible"
                break
            if theta < 1.0:
                notes.append(f"iterate {k}: the current edge loads fit no placement; the "
                             f"placement took the devices' offloads above what they must "
                             f"forward scaled by {theta:g}")
            factors = _factors(ctx, cur, association, workload)
            plan = _stages_after_placement(ctx, association, placement, capacity=True,
                                           factors=factors, log=log)
            t0 = time.perf_counter()
            metrics = evaluate_plan(ctx, plan)
            log.add("evaluate", "ok", time.perf_counter() - t0)
            account(log)
            logs.append(log)
            trajectory.append(_row(k, "joint", metrics, log, cur, plan, ctx))
            iterates.append((plan, metrics, k))
            say(f"iterate {k}: timely accuracy {metrics['timely_accuracy']:.4f}, overload "
                f"{metrics['edge_overload']:.3g}, comm {metrics['comm_per_round']:.4g}, "
                f"{trajectory[-1]['association_changes']} moves")
            new_load = edge_workload(ctx, plan)
            value = metrics["timely_accuracy"] if metrics["feasible"] else -math.inf
            if value > best_value + problem.loop.objective_tol:
                best_value, since_best = value, 0
            else:
                since_best += 1
            if trajectory[-1]["association_changes"] == 0:
                if np.max(np.abs(new_load - edge_workload(ctx, cur)), initial=0.0) <= step:
                    loop_status = "converged"
                    break
                moved = abs(metrics["timely_accuracy"] - trajectory[-2]["timely_accuracy"])
                if moved <= problem.loop.objective_tol:
                    loop_status = "stalled"
                    break
            if since_best >= problem.loop.patience:
                loop_status = (f"stalled (no gain above {problem.loop.objective_tol:g} in "
                               f"{since_best} iterates)")
                break
            key = (association.tobytes(), np.round(new_load / max(step, 1e-300)).tobytes())
            if key in seen:
                loop_status = f"cycle (iterate {k} repeats iterate {seen[key]})"
                notes.append(f"the loop cycles: iterate {k} repeats iterate {seen[key]}; the "
                             "best iterate is returned")
                break
            seen[key] = k
            cur = plan
    best = iterates[0]
    for it in iterates[1:]:
        if _better(it, best):
            best = it
    plan, metrics, k_best = best
    if not metrics["feasible"]:
        notes.append("no feasible plan found: the returned plan is the least overloaded one")
    return _result(problem, method, plan, metrics, k_best, silo, silo_m, trajectory, logs,
                   totals, notes, loop_status, time.perf_counter() - t_start)


def _result(problem, method, plan: Plan, metrics, k_best, silo_plan: Plan, silo_m, trajectory,
            logs, totals, notes, loop_status, seconds) -> SystemResult:
    al = plan.alloc
    on = plan.association >= 0
    decisions = {
        "association": plan.association.astype(np.int64),
        "placement": np.unique(plan.association[on]).astype(np.int64),
        "q": al.q, "d": al.d, "mu": al.mu,
        "offload": np.where(on, plan.offload, 1.0),
        "edge_load": metrics["device_to_edge"],
        "cloud_load": metrics["device_to_cloud"],
        "served_on_device": metrics["device_served"],
        "cut": plan.cut.astype(np.int64), "threshold": plan.threshold,
    }
    diag = {**scalars(metrics),
            "siloed": {**scalars(silo_m), "host_load": silo_m["host_load"],
                       "association": silo_plan.association,
                       "offload": np.where(silo_plan.association >= 0, silo_plan.offload, 1.0),
                       "cut": silo_plan.cut, "host_cut": silo_plan.host_cut,
                       "notes": [n for n in notes if n.startswith("siloed")]},
            "gain_over_siloed": metrics["timely_accuracy"] - silo_m["timely_accuracy"],
            "loop_status": loop_status, "best_iterate": k_best,
            "trajectory": trajectory, "stage_status": logs[k_best].status,
            "stage_time_s": totals, "notes": notes, "heuristic": HEURISTIC,
            "mode": problem.mode,
            **{k: v for k, v in metrics.items() if isinstance(v, np.ndarray)}}
    diag["host_cut"] = plan.host_cut
    if plan.exit_weights is not None:
        diag["exit_weights"] = plan.exit_weights.decisions["weight"]
        diag["exit_target_weights"] = plan.exit_weights.decisions["target_weight"]
        diag["exit_rule"] = problem.training.exit_rule
    if plan.placement is not None:
        pd = plan.placement.diagnostics
        diag["placement_bound"] = pd.get("lower_bound")
        diag["placement_status"] = plan.placement.status
    return SystemResult(
        kind=problem.kind, scenario=problem.name,
        status="feasible" if metrics["feasible"] else "infeasible",
        objective=float(metrics["timely_accuracy"]),
        solver="edge-system joint loop" if method == "joint" else "edge-system siloed",
        solve_time_s=float(seconds), iterations=len(trajectory) - 1,
        decisions=decisions, diagnostics=diag)
