"""What-if grids with the Pareto front, and tornado sensitivity (project choice).

Every point is a full plan estimated with the same Monte-Carlo sizes and the *same seed*
(common random numbers), so differences between points reflect the levers, not noise. Given
the base plan's own estimates (``base``), the point equal to the base plan shows exactly
those numbers: one plan, one number in the gate table, the grid and the tornado. Without
it, sizes default to ``monte_carlo.n_mc_grid``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
from jointopt.models.errors import InfeasibleError, ValidationError
from jointopt.solvers.planner.estimate import Estimates, estimate
from jointopt.solvers.planner.gates import gates
from jointopt.solvers.planner.problem import DeploymentPlanProblem

PARETO_COLUMNS = ("days_p90", "cloud_usd_p90", "co2e_kg_p90", "worst_cpu_s_per_day_p90")


def _row(problem: DeploymentPlanProblem, n_mc: int, n_outer: int, seed: int,
         est: Estimates | None = None) -> dict:
    if est is None:
        est = estimate(problem, n_mc=n_mc, n_outer=n_outer, seed=seed)
    gs = gates(problem, est)
    V = est.values
    row = {f"gate.{g}": r["status"] for g, r in gs.items()}
    if V.get("no_fleet"):
        return row
    row.update({
        "days_p50": V["days_to_target"]["p50"], "days_p90": V["days_to_target"]["p90"],
        "cloud_usd_p50": V["cloud_usd"]["p50"], "cloud_usd_p90": V["cloud_usd"]["p90"],
        "co2e_kg_p50": V["co2e_kg"]["p50"], "co2e_kg_p90": V["co2e_kg"]["p90"],
        "worst_cpu_s_per_day_p90": float(max(est.per_class["cpu_s_per_day_p90"])),
        "tasks_per_device_day_p90": V["tasks_per_device_day"]["p90"], "C": V["C"],
        "extrapolated": bool(est.extrapolated),
        "extrapolated_inputs": ",".join(x["input"] for x in est.extrapolated),
    })
    row["any_fail"] = any(s == "fail" for k, s in row.items() if k.startswith("gate."))
    return row


def _sizes(problem: DeploymentPlanProblem, n_mc, n_outer, seed, base: Estimates | None):
    mc = problem.monte_carlo
    if base is not None:
        return base.n_mc, base.n_outer, base.seed
    return (n_mc or mc.n_mc_grid, n_outer or min(mc.n_outer, 200),
            mc.seed if seed is None else seed)


def what_if(problem: DeploymentPlanProblem, grid: dict[str, list[Any]], *,
            n_mc: int | None = None, n_outer: int | None = None,
            seed: int | None = None, base: Estimates | None = None) -> pd.DataFrame:
    """Tidy table, one row per grid point (the product of ``grid``'s dotted-path values):
    the point's values, gate statuses and key estimates. Invalid points get ``error``.
    With ``base`` (the plan's own estimates), every point uses its Monte-Carlo sizes and
    seed, and the point equal to the plan shows ``base`` itself."""
    n_mc, n_outer, seed = _sizes(problem, n_mc, n_outer, seed, base)
    keys = list(grid)
    rows = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values, strict=True))
        row = {f"param.{k}": (str(v) if isinstance(v, list) else v) for k, v in point.items()}
        try:
            alt = problem.with_changes(point)
            row.update(_row(alt, n_mc, n_outer, seed,
                            base if base is not None and alt == problem else None))
        except (ValidationError, InfeasibleError) as exc:
            row["error"] = str(exc)
        rows.append(row)
    return pd.DataFrame(rows)


def pareto_front(table: pd.DataFrame, columns=PARETO_COLUMNS, *,
                 include_extrapolated: bool = False) -> pd.DataFrame:
    """Rows with no ``fail`` gate that no other such row dominates (all columns minimised)."""
    ok = table.copy()
    if "any_fail" in ok:
        ok = ok[~ok["any_fail"].fillna(True).astype(bool)]
    if not include_extrapolated and "extrapolated" in ok:
        ok = ok[~ok["extrapolated"].fillna(False).astype(bool)]
    ok = ok.dropna(subset=list(columns))
    if ok.empty:
        return ok
    X = ok[list(columns)].to_numpy(float)
    le = (X[:, None, :] <= X[None, :, :]).all(-1)
    lt = (X[:, None, :] < X[None, :, :]).any(-1)
    dominated = (le & lt).any(0)
    return ok[~dominated]


#: default tornado inputs: (label, list of dotted paths scaled together)
TORNADO_INPUTS: dict[str, list[str]] = {
    "static eligibility": ["population.static_eligibility"],
    "availability scale": ["population.regions[*].availability"],
    "train time per sample": ["device_classes[*].train_s_per_sample"],
    "download bandwidth": ["device_classes[*].bw_down_mbps"],
    "upload bandwidth": ["device_classes[*].bw_up_mbps"],
    "dwell time": ["population.dwell_mean_s"],
    "rounds scale": ["convergence.rounds_scale"],
    "agg CPU per update": ["server.agg_cpu_s_per_update"],
    "network J per bit": ["cost_rates.net_j_per_bit"],
    "cost rates": ["cost_rates.instance_hour_usd", "cost_rates.egress_gb_usd",
                   "cost_rates.cpu_hour_usd", "cost_rates.ingress_gb_usd"],
}


def _scaled(problem: DeploymentPlanProblem, paths: list[str], factor: float) -> dict:
    data = problem.to_dict()
    for path in paths:
        parts = path.split(".")
        nodes = [data]
        for part in parts[:-1]:
            nxt = []
            for node in nodes:
                if part.endswith("[*]"):
                    nxt += list(node[part[:-3]])
                else:
                    nxt.append(node[part])
            nodes = nxt
        last = parts[-1]
        for node in nodes:
            v = node[last]
            if v is None:
                continue
            if isinstance(v, list):
                node[last] = [min(1.0, x * factor) for x in v]
            elif last in ("static_eligibility", "u_max"):
                node[last] = min(1.0, v * factor)
            else:
                node[last] = v * factor
    return data


def tornado(problem: DeploymentPlanProblem, inputs: dict[str, list[str]] | None = None,
            ranges: dict[str, tuple[float, float]] | None = None, *, n_mc: int | None = None,
            n_outer: int | None = None, seed: int | None = None,
            base: Estimates | None = None) -> pd.DataFrame:
    """One row per input: P50/P90 days, USD, CO2e at its low and high multiplier (default
    x0.8 / x1.2), all else at base, same seed and sizes; sorted by the swing of P90 days;
    ``flips`` lists gates whose status differs from the base at either end. With ``base``
    (the plan's own estimates) the base row is the plan's and every end uses its sizes."""
    inputs = inputs or TORNADO_INPUTS
    ranges = ranges or {}
    n_mc, n_outer, seed = _sizes(problem, n_mc, n_outer, seed, base)
    est_base = base
    base = _row(problem, n_mc, n_outer, seed, est_base)
    rows = []
    for label, paths in inputs.items():
        lo_f, hi_f = ranges.get(label, (0.8, 1.2))
        row = {"input": label, "low_factor": lo_f, "high_factor": hi_f}
        flips = set()
        for end, f in (("low", lo_f), ("high", hi_f)):
            try:
                alt = type(problem).from_dict(_scaled(problem, paths, f))
                r = _row(alt, n_mc, n_outer, seed)
            except (ValidationError, InfeasibleError) as exc:
                row[f"{end}_error"] = str(exc)
                continue
            for key in ("days_p50", "days_p90", "cloud_usd_p50", "cloud_usd_p90",
                        "co2e_kg_p90"):
                row[f"{key}_{end}"] = r.get(key, np.nan)
            flips |= {k[5:] for k in r if k.startswith("gate.") and r[k] != base.get(k)}
        row["flips"] = ",".join(sorted(flips))
        row["swing_days_p90"] = abs(row.get("days_p90_high", np.nan)
                                    - row.get("days_p90_low", np.nan))
        rows.append(row)
    out = pd.DataFrame(rows).sort_values("swing_days_p90", ascending=False,
                                         na_position="last").reset_index(drop=True)
    out.attrs["base"] = base
    return out
