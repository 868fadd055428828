"""Hierarchical FL orchestration, user-facing helpers (``docs/kinds/hfl.md``).

Tidy DataFrames and figures around :class:`~jointopt.solvers.hfl.problem.HFLProblem`:
cost comparison of flat FL / proximity HFL / inference-unaware HFLOP / HFLOP, the
cost-vs-edge-density study (F1), the latency simulator as a DataFrame (F2/F3),
the Pareto sweep of the latency extension (F5) and the host-load figure used by
``jointopt solve <hfl scenario> --out DIR``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from jointopt.errors import InfeasibleError
from jointopt.models import hfl as hm
from jointopt.solvers.hfl import generators as gen
from jointopt.solvers.hfl.problem import HFLProblem


def compare_costs(problem: HFLProblem) -> pd.DataFrame:
    """One row per configuration: per-round cost, total MB over training, saving vs flat FL
    [%], used hosts, capacity overload. HFLOP rows are NaN when infeasible."""
    acc = problem.accounting
    kw = dict(model_size_mb=acc.model_size_mb, unit_costs=acc.unit_costs)
    flat_total = hm.flat_total_cost(problem.cd, problem.ce, rounds=acc.rounds_fl, **kw)
    rows = [{"configuration": "flat FL",
             "cost_per_round": hm.flat_fl_cost_per_round(problem.cd, problem.ce,
                                                         unit_costs=acc.unit_costs),
             "total_mb": flat_total, "saving_pct": 0.0, "used_hosts": 0, "overload": 0.0}]

    def hfl_row(name, a):
        tot = hm.hfl_total_cost(a, problem.cd, problem.ce, problem.l, rounds=acc.rounds_hfl,
                                **kw)
        over = np.maximum(0, hm.host_loads(problem.workload, a, problem.M) - problem.capacities)
        return {"configuration": name,
                "cost_per_round": hm.per_round_cost(a, problem.cd, problem.ce, problem.l),
                "total_mb": tot, "saving_pct": hm.saving_percent(flat_total, tot),
                "used_hosts": int(hm.used_hosts(a, problem.M).sum()),
                "overload": float(over.sum())}

    rows.append(hfl_row("proximity HFL", hm.proximity_assignment(problem.cd)))
    rows.append(hfl_row("uncapacitated HFLOP",
                        np.asarray(problem.solve(uncapacitated=True).decisions["association"])))
    try:
        rows.append(hfl_row("HFLOP", np.asarray(problem.solve().decisions["association"])))
    except InfeasibleError:
        rows.append({"configuration": "HFLOP", "cost_per_round": np.nan, "total_mb": np.nan,
                     "saving_pct": np.nan, "used_hosts": np.nan, "overload": np.nan})
    return pd.DataFrame(rows)


def density_study(xs=(2, 4, 8, 16, 32, 64), seeds=range(50), *, n=200,
                  model_size_mb=0.593) -> pd.DataFrame:
    """F1 data: savings vs flat FL of uncapacitated HFLOP and HFLOP per density 1:x;
    infeasible HFLOP instances are kept as rows with ``feasible = False`` (skipped, counted)."""
    rows = []
    for x in xs:
        for seed in seeds:
            p = gen.density_instance(x, seed, n=n,
                                     accounting={"unit_costs": True,
                                                 "model_size_mb": model_size_mb})
            unc = p.solve(uncapacitated=True)
            row = {"x": x, "M": p.M, "seed": seed,
                   "uncapacitated_saving_pct": unc.diagnostics["saving_pct"],
                   "used_homes": unc.diagnostics["used_hosts"]}
            try:
                cap = p.solve()
                row.update(feasible=True, hflop_saving_pct=cap.diagnostics["saving_pct"])
            except InfeasibleError:
                row.update(feasible=False, hflop_saving_pct=np.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def simulate(problem: HFLProblem, configs=("flat", "proximity", "hflop"), *,
             multiplier: float = 1.0, rounds: int = 100, seed: int = 0, assignment=None,
             **model) -> pd.DataFrame:
    """Latency samples as a tidy DataFrame, one row per (configuration, client, round).

    ``hflop`` uses ``assignment`` or the HFLOP optimum of ``problem`` at multiplier 1 (the
    overloaded multipliers are infeasible for the MILP; the simulator still accepts the
    assignment)."""
    homes = problem.home
    if "hflop" in configs and assignment is None:
        assignment = np.asarray(problem.solve().decisions["association"])
    frames = []
    for cfg in configs:
        s = hm.simulate_latency(problem.workload, problem.capacities, homes, cfg,
                                assignment=assignment, multiplier=multiplier, rounds=rounds,
                                seed=seed, **model)
        df = pd.DataFrame(s)
        df.insert(0, "multiplier", multiplier)
        df.insert(0, "configuration", cfg)
        df["where"] = df["where"].map({0: "edge", 1: "cloud", 2: "overflow"})
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def latency_summary(samples: pd.DataFrame) -> pd.DataFrame:
    """Mean, population std, median, p95 and component means per configuration/multiplier."""
    def agg(g):
        s = hm.latency_summary(g["total_ms"].to_numpy())
        s.update(net_mean=g["net_ms"].mean(), proc_mean=g["proc_ms"].mean(), samples=len(g))
        return pd.Series(s)

    return samples.groupby(["configuration", "multiplier"]).apply(agg, include_groups=False
                                                                  ).reset_index()


def pareto(problem: HFLProblem, betas=(0.0, 10.0, 100.0, 1000.0, 10000.0),
           **latency) -> pd.DataFrame:
    """F5: (O) vs exact mean latency over a beta sweep of the latency extension."""
    rows = []
    for beta in betas:
        p = problem.replace(latency={**latency, "beta": float(beta)})
        r = p.solve()
        rows.append({"beta": beta, "cost_per_round": r.diagnostics["per_round_cost"],
                     "mean_latency_ms": 1e3 * r.diagnostics["mean_latency_s"],
                     "used_hosts": r.diagnostics["used_hosts"], "status": r.status})
    return pd.DataFrame(rows)


def plot_solution(result, problem: HFLProblem, path: str | Path) -> Path:
    """Host loads of the returned association against capacities, and of proximity HFL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = np.asarray(result.decisions["association"])
    loads = hm.host_loads(problem.workload, a, problem.M)
    prox = hm.host_loads(problem.workload, hm.proximity_assignment(problem.cd), problem.M)
    x = np.arange(problem.M)
    fig, ax = plt.subplots(figsize=(max(5, 0.4 * problem.M + 3), 3.8))
    ax.bar(x - 0.2, loads, 0.4, label="HFLOP load")
    ax.bar(x + 0.2, prox, 0.4, label="proximity HFL load", alpha=0.6)
    ax.step(np.append(x, x[-1] + 1) - 0.5, np.append(problem.capacities, problem.capacities[-1]),
            where="post", color="k", lw=1, label="capacity R_j")
    ax.set(xlabel="edge host", ylabel="inference load (req/s)",
           title=f"{result.scenario}: objective {result.objective:.4g} ({result.status})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
