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

from jointopt.errors import InfeasibleError, ValidationError
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
                  model_size_mb=0.593, progress=False) -> pd.DataFrame:
    """F1 data: savings vs flat FL of uncapacitated HFLOP and HFLOP per density 1:x;
    infeasible HFLOP instances are kept as rows with ``feasible = False`` (skipped, counted).
    ``progress`` prints one line per density to stderr."""
    import sys

    rows = []
    seeds = list(seeds)
    for x in xs:
        for seed in seeds:
            p = gen.density_instance(x, seed, n=n,
                                     accounting={"unit_costs": True,
                                                 "model_size_mb": model_size_mb})
            unc = p.solve(method="uncapacitated")
            row = {"x": x, "M": p.M, "seed": seed,
                   "uncapacitated_saving_pct": unc.diagnostics["saving_pct"],
                   "used_homes": unc.diagnostics["used_hosts"]}
            try:
                cap = p.solve()
                row.update(feasible=True, hflop_saving_pct=cap.diagnostics["saving_pct"])
            except InfeasibleError:
                row.update(feasible=False, hflop_saving_pct=np.nan)
            rows.append(row)
        if progress:
            print(f"density 1:{x}: {len(seeds)} instances", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def density_summary(study: pd.DataFrame, *, n=200) -> pd.DataFrame:
    """Per density: mean savings of uncapacitated HFLOP and HFLOP with 95% half-widths
    (normal with >= 30 samples, else Student t; infeasible HFLOP instances skipped and
    counted) and the closed form for the uncapacitated case, ``1 - (R_g/R_FL) E[M_used]/N``
    with ``E[M_used] = M (1 - (1 - 1/M)^N)``."""
    from scipy import stats

    def ci(values):
        v = np.asarray(values, float)
        v = v[np.isfinite(v)]
        if len(v) < 2:
            return np.nan
        q = stats.norm.ppf(0.975) if len(v) >= 30 else stats.t.ppf(0.975, len(v) - 1)
        return q * v.std(ddof=1) / np.sqrt(len(v))

    out = study.groupby("x").agg(
        M=("M", "first"),
        uncapacitated_mean=("uncapacitated_saving_pct", "mean"),
        uncapacitated_ci=("uncapacitated_saving_pct", ci),
        hflop_mean=("hflop_saving_pct", "mean"), hflop_ci=("hflop_saving_pct", ci),
        infeasible=("feasible", lambda f: int((~f.astype(bool)).sum())),
        instances=("seed", "count")).reset_index()
    out["closed_form"] = [100 * hm.closed_form_uncapacitated_saving(
        n, hm.expected_used_hosts(n, m)) for m in out["M"]]
    return out


def plot_density(summary: pd.DataFrame, path: str | Path) -> Path:
    """F1: savings vs edge density with 95% intervals and the T6 closed form."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = summary["x"].to_numpy()
    ax.errorbar(x, summary["uncapacitated_mean"], yerr=summary["uncapacitated_ci"],
                marker="o", capsize=3, label="uncapacitated (inference-unaware) HFLOP")
    ax.errorbar(x, summary["hflop_mean"], yerr=summary["hflop_ci"], marker="s", capsize=3,
                label="HFLOP")
    ax.plot(x, summary["closed_form"], "k--", lw=1, label="closed form (T6)")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="edge density 1:x (devices per host)", ylabel="saving vs flat FL [%]",
           title="communication-cost savings vs flat FL")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save_figure(fig, path)


def simulate(problem: HFLProblem, configs=("flat", "proximity", "hflop"), *,
             multiplier: float = 1.0, rounds: int = 100, seed: int = 0, assignment=None,
             overflow="scaled", **model) -> pd.DataFrame:
    """Latency samples as a tidy DataFrame, one row per (configuration, client, round).

    ``hflop`` uses ``assignment`` or the HFLOP optimum of ``problem`` at multiplier 1 (the
    overloaded multipliers are infeasible for the MILP; the simulator still accepts the
    assignment). ``overflow`` picks the proximity devices served by the cloud: ``"scaled"``
    applies the overflow rule at the simulated load, ``"base"`` pins those that overflow at
    multiplier 1 (the source kept its two base-load overflows at x10), or a list of device
    indices. ``model``: the processing model of
    :func:`jointopt.models.hfl.simulate_latency` (``proc_scale``, ``cloud_scale``,
    ``kappa``, ``fifo``, ``fwd_ms``, ...)."""
    for cfg in configs:
        if cfg not in ("flat", "proximity", "hflop"):
            raise ValidationError("config", f"must be flat, proximity or hflop, got {cfg!r}")
    if not multiplier > 0:
        raise ValidationError("multiplier", f"must be > 0, got {multiplier!r}")
    if rounds < 1:
        raise ValidationError("rounds", f"must be >= 1, got {rounds}")
    for key in ("proc_scale", "cloud_scale", "kappa"):
        if key in model and not model[key] >= 0:
            raise ValidationError(key, f"must be >= 0, got {model[key]!r}")
    homes = problem.home
    pinned = _overflow_set(problem, overflow)
    if "hflop" in configs and assignment is None:
        assignment = np.asarray(problem.solve().decisions["association"])
    frames = []
    for cfg in configs:
        s = hm.simulate_latency(problem.workload, problem.capacities, homes, cfg,
                                assignment=assignment, multiplier=multiplier, rounds=rounds,
                                seed=seed, overflow=pinned, **model)
        df = pd.DataFrame(s)
        df.insert(0, "multiplier", multiplier)
        df.insert(0, "configuration", cfg)
        df["where"] = df["where"].map({0: "edge", 1: "cloud", 2: "overflow"})
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _overflow_set(problem: HFLProblem, overflow):
    """Devices pinned to the cloud in the proximity configuration (None: the rule decides
    at the simulated load)."""
    if isinstance(overflow, str):
        if overflow == "scaled":
            return None
        if overflow == "base":
            served = hm.overflow_rule(problem.workload, problem.capacities, problem.home)
            return np.flatnonzero(served < 0)
        raise ValidationError("overflow", f"must be 'scaled', 'base' or a list of device "
                                          f"indices, got {overflow!r}")
    idx = np.asarray(overflow)
    if idx.ndim != 1 or (idx.size and (idx.dtype.kind not in "iu" or idx.min() < 0
                                       or idx.max() >= problem.N)):
        raise ValidationError("overflow", f"device indices must be integers in 0..{problem.N - 1},"
                                          f" got {overflow!r}")
    return idx.astype(np.int64)


def latency_summary(samples: pd.DataFrame) -> pd.DataFrame:
    """Mean, population std, median, p95 and component means per configuration/multiplier."""
    def agg(g):
        s = hm.latency_summary(g["total_ms"].to_numpy())
        s.update(net_mean=g["net_ms"].mean(), proc_mean=g["proc_ms"].mean(), samples=len(g))
        return pd.Series(s)

    out = samples.groupby(["configuration", "multiplier"]).apply(agg, include_groups=False
                                                                 ).reset_index()
    out["samples"] = out["samples"].astype(int)
    return out


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
    return _save_figure(fig, path)


def plot_latency(samples: pd.DataFrame, path: str | Path) -> Path:
    """Box plots of end-to-end latency per configuration, one panel per multiplier (F2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mults = sorted(samples["multiplier"].unique())
    fig, axes = plt.subplots(1, len(mults), figsize=(4.2 * len(mults), 3.6), squeeze=False)
    for ax, k in zip(axes[0], mults, strict=True):
        part = samples[samples["multiplier"] == k]
        cfgs = list(dict.fromkeys(part["configuration"]))
        ax.boxplot([part.loc[part["configuration"] == c, "total_ms"] for c in cfgs],
                   tick_labels=cfgs, showfliers=False)
        ax.set(title=f"workload x{k:g}", ylabel="end-to-end latency (ms)")
        ax.grid(alpha=0.3, axis="y")
    return _save_figure(fig, path)


def simulate_command(problem: HFLProblem, args) -> tuple[dict, str]:
    """``jointopt simulate`` for hfl scenarios: the testbed latency simulator for the
    chosen configurations and workload multipliers; ``(JSON object, text table)``. The
    ``hflop`` configuration uses the HFLOP optimum at multiplier 1."""
    if args.policy is not None:
        raise ValidationError("--policy", "hfl scenarios simulate configurations "
                                          "(--config), not policies")
    configs = [c for item in (args.config or ["flat,proximity,hflop"])
               for c in item.split(",") if c]
    try:
        mults = [float(v) for v in str(args.multiplier).split(",") if v]
    except ValueError:
        raise ValidationError("--multiplier", f"expects X1,X2,..., got {args.multiplier!r}"
                              ) from None
    if not mults:
        raise ValidationError("--multiplier", "needs at least one value")
    if not 0 <= args.cloud_increase < 100:
        raise ValidationError("--cloud-increase", f"must be in [0, 100), got "
                                                  f"{args.cloud_increase}")
    rounds = 100 if args.rounds is None else args.rounds
    assignment = None
    if "hflop" in configs:
        assignment = np.asarray(problem.solve().decisions["association"])
    samples = pd.concat([simulate(problem, configs, multiplier=k, rounds=rounds, seed=args.seed,
                                  assignment=assignment, overflow=args.overflow,
                                  proc_scale=args.proc_scale,
                                  cloud_scale=1.0 - args.cloud_increase / 100.0)
                         for k in mults], ignore_index=True)
    summary = latency_summary(samples)
    written = _write_tables(args.out, {"samples.csv": samples, "summary.csv": summary},
                            lambda d: plot_latency(samples, d / "latency.png")
                            ) if args.out else []
    doc = {"scenario": problem.name, "rounds": rounds, "seed": args.seed,
           "proc_scale": args.proc_scale, "cloud_increase_pct": args.cloud_increase,
           "overflow": args.overflow,
           "summary": [{k: _json_value(v) for k, v in row.items()}
                       for row in summary.to_dict("records")]}
    lines = [summary.to_string(index=False, float_format=lambda v: f"{v:.4g}")]
    lines += [f"wrote {p}" for p in written]
    return doc, "\n".join(lines)


def _json_value(v):
    """A plain JSON value; floats to 6 decimals (ms and counts: finer is noise)."""
    v = v.item() if isinstance(v, np.generic) else v
    return round(v, 6) if isinstance(v, float) else v


def _save_figure(fig, path: str | Path) -> Path:
    """Lay out, write as PNG (110 dpi) and close ``fig``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _write_tables(out: str | Path, frames: dict, plot) -> list[Path]:
    """``frames`` (file name -> DataFrame) as CSV under ``out`` and the figure ``plot(dir)``
    writes; the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in frames.items():
        frame.to_csv(out / name, index=False)
        written.append(out / name)
    written.append(plot(out))
    return written


def density_command(args) -> tuple[dict, str]:
    """``jointopt bench density``: the cost-vs-edge-density study (F1 data);
    ``(JSON object, text table)``."""
    import sys

    try:
        xs = [int(v) for v in args.x.split(",") if v]
    except ValueError:
        raise ValidationError("--x", f"expects X1,X2,... (integers), got {args.x!r}") from None
    if not xs or min(xs) < 1:
        raise ValidationError("--x", f"needs integers >= 1, got {args.x!r}")
    if args.seeds < 1:
        raise ValidationError("--seeds", f"must be >= 1, got {args.seeds}")
    if args.devices < 1:
        raise ValidationError("--devices", f"must be >= 1, got {args.devices}")
    study = density_study(xs, range(args.seeds), n=args.devices,
                          progress=sys.stderr.isatty() and not args.no_progress)
    summary = density_summary(study, n=args.devices)
    written = _write_tables(args.out, {"density.csv": study, "density_summary.csv": summary},
                            lambda d: plot_density(summary, d / "density.png")
                            ) if args.out else []
    doc = {"study": "density", "devices": args.devices, "seeds": args.seeds,
           "summary": [{k: _json_value(v) for k, v in r.items()}
                       for r in summary.to_dict("records")]}
    lines = [summary.to_string(index=False, float_format=lambda v: f"{v:.4g}")]
    lines += [f"wrote {p}" for p in written]
    return doc, "\n".join(lines)
