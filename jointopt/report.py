"""Human-facing output of results: readable tables, files, figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jointopt.solvers import ProblemBase, SolveResult


def headline(result: SolveResult) -> list[tuple[str, str]]:
    """``(label, value)`` pairs summarising a result."""
    rows = [("scenario", result.scenario), ("status", result.status),
            ("objective", f"{result.objective:.6g}"), ("solver", result.solver),
            ("solve time", f"{result.solve_time_s * 1e3:.2f} ms"),
            ("iterations", str(result.iterations))]
    diag = result.diagnostics
    if result.kind in HEADLINES:
        return rows + HEADLINES[result.kind](result)
    if "timely_accuracy" in diag:
        rows += [("K now -> next", f"{diag['K']:.4g} -> {diag['K_next']:.4g}"),
                 ("timely accuracy", f"{diag['timely_accuracy']:.4f}"),
                 ("caps binding", f"{int(np.sum(diag['cap_binding']))} of "
                                  f"{len(diag['cap_binding'])} clients")]
    if result.kind == "hfl" and "placement" in result.decisions:
        hosts = " ".join(str(h) for h in np.asarray(result.decisions["placement"]))
        n = len(result.decisions["association"])
        rows.append(("open hosts", hosts))
        if {"participants", "required"} <= diag.keys():
            rows.append(("participants", f"{diag['participants']} of {n} "
                                         f"(required {diag['required']})"))
        if {"lower_bound", "mip_gap"} <= diag.keys():
            rows.append(("bound / gap",
                         f"{diag['lower_bound']:.6g} / {100 * diag['mip_gap']:.3g} %"))
        if diag.get("proved_by"):
            rows.append(("proved by", diag["proved_by"]))
        if diag.get("infeasibility"):
            rows.append(("infeasibility", diag["infeasibility"]))
        if "saving_pct" in diag:
            rows.append(("saving vs flat FL", f"{diag['saving_pct']:.1f} % of training traffic"))
    return rows


def text_report(result: SolveResult, max_rows: int = 25) -> str:
    """A readable summary plus the per-client decisions table (truncated past ``max_rows``)."""
    width = max(len(k) for k, _ in headline(result))
    lines = [f"{k:<{width}}  {v}" for k, v in headline(result)]
    frame = result.decisions_frame()
    for extra in ("resource_use", "cap_multiplier"):
        if extra in result.diagnostics:
            frame[extra] = result.diagnostics[extra]
    shown = frame if len(frame) <= max_rows else frame.head(max_rows)
    lines += ["", shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")]
    if len(frame) > max_rows:
        lines.append(f"... {len(frame) - max_rows} more rows (use --out to write them all)")
    return "\n".join(lines)


def plot_allocation(result: SolveResult, problem: ProblemBase, path: str | Path) -> Path:
    """Per-client allocation against request rate: q, d, mu and the resource use vs cap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lam = problem.clients.arrival_rate
    order = np.argsort(lam)
    dec, diag = result.decisions, result.diagnostics
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    panels = [("q", "participation probability q"), ("d", "download probability d"),
              ("mu", "service rate mu"), ("resource_use", "resource use per round")]
    for ax, (key, label) in zip(axes.flat, panels, strict=True):
        y = dec[key] if key in dec else diag[key]
        ax.plot(lam[order], np.asarray(y)[order], "o-", ms=3)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1, 0].plot(lam[order], lam[order], "k:", lw=1, label="arrival rate")
    axes[1, 0].legend()
    cap = problem.clients.cap[order]
    if np.isfinite(cap).any():
        axes[1, 1].plot(lam[order], cap, "r--", lw=1, label="hard cap R")
    budget = problem.clients.budget[order]
    if np.isfinite(budget).any():
        axes[1, 1].plot(lam[order], budget, "g:", lw=1, label="average budget")
    axes[1, 1].legend()
    for ax in axes[1]:
        ax.set_xlabel("request arrival rate lambda")
    fig.suptitle(f"{result.scenario}: per-client allocation ({result.solver}, "
                 f"objective {result.objective:.4g})")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_simulation(results, path: str | Path) -> Path:
    """Timely accuracy, K, resource use and the AoM distribution per policy over a run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for r in results:
        t = r.table
        smooth = max(1, len(t) // 50)
        axes[0, 0].plot(t["round"], t["expected_timely_accuracy"].rolling(smooth).mean(),
                        label=r.policy)
        axes[0, 1].plot(t["round"], t["K"], label=r.policy)
        axes[1, 0].plot(t["round"], t["resource_use"].expanding().mean(), label=r.policy)
        pmf = r.aom_pmf()
        ages = np.arange(len(pmf))
        axes[1, 1].step(ages[:60], pmf[:60], where="mid", label=r.policy)
    budget = results[0].summary["budget"]
    if np.isfinite(budget):
        axes[1, 0].axhline(budget, color="k", ls=":", lw=1, label="budget")
    axes[0, 0].set(title="expected timely accuracy", xlabel="round")
    axes[0, 1].set(title="convergence-error proxy K", xlabel="round", yscale="log")
    axes[1, 0].set(title="running mean resource use per client", xlabel="round")
    axes[1, 1].set(title="age-of-model distribution", xlabel="age (rounds)", yscale="log")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{results[0].scenario}: {len(results[0].table)} rounds, seed {results[0].seed}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_simulation(results, out: str | Path) -> list[Path]:
    """``rounds.csv`` (tidy, every policy), ``summary.csv``, ``aom.csv``, ``simulation.png``."""
    import pandas as pd

    from jointopt.surrogate import summary_frame

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "rounds.csv", out / "summary.csv", out / "aom.csv"]
    pd.concat([r.table for r in results]).to_csv(paths[0], index=False)
    summary_frame(results).to_csv(paths[1], index=False)
    pd.DataFrame({r.policy: r.aom_pmf() for r in results}).rename_axis("age").to_csv(paths[2])
    paths.append(plot_simulation(results, out / "simulation.png"))
    return paths


def plot_sweep(table, x: str, y: str, hue: str | None, path: str | Path) -> Path:
    """Mean of ``y`` against ``x`` (over seeds and other columns), one line per ``hue``,
    with a band of one standard deviation. ``x`` may name a parameter without ``param.``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jointopt.errors import ValidationError

    def column(name, flag):
        if name in table.columns:
            return name
        if f"param.{name}" in table.columns:
            return f"param.{name}"
        raise ValidationError(flag, f"{name!r} is not a column; have {', '.join(table.columns)}")

    import pandas as pd

    x, y = column(x, "--x"), column(y, "--y")
    hue = column(hue, "--hue") if hue else None
    if not pd.api.types.is_numeric_dtype(table[y]):
        numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
        raise ValidationError("--y", f"{y!r} is not a numeric column (mean and spread are "
                                     f"drawn); numeric columns: {', '.join(numeric) or 'none'}")
    if "status" in table.columns:
        table = table[table["status"] == "done"]
    if table.empty:
        raise ValidationError("RESULTS", "has no finished rows (status done) to plot")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = table.groupby(hue) if hue else [(None, table)]
    for name, part in groups:
        stats = part.groupby(x)[y].agg(["mean", "std"]).reset_index()
        ax.plot(stats[x], stats["mean"], "o-", label=str(name) if hue else y)
        ax.fill_between(stats[x], stats["mean"] - stats["std"].fillna(0),
                        stats["mean"] + stats["std"].fillna(0), alpha=0.2)
    ax.set(xlabel=x, ylabel=y)
    ax.grid(alpha=0.3)
    if hue:
        ax.legend(title=hue, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_split(result: SolveResult, problem: ProblemBase, path: str | Path) -> Path:
    from jointopt.split import plot_split

    return plot_split(result, problem, path)


def _plot_cis(result: SolveResult, problem: ProblemBase, path: str | Path) -> Path:
    from jointopt.cis import plot_exit_weights

    return plot_exit_weights(result, problem, path)


def _plot_hfl(result: SolveResult, problem: ProblemBase, path: str | Path) -> Path:
    from jointopt.hfl import plot_solution

    return plot_solution(result, problem, path)


def _system_rows(result: SolveResult) -> list[tuple[str, str]]:
    from jointopt.system import headline_rows

    return headline_rows(result)


#: ``kind -> rows(result)``: the headline rows of a kind that has its own
HEADLINES = {"edge_system": _system_rows}

#: ``kind -> (file name, plot(result, problem, path) -> Path)``: the figure ``write_outputs``
#: draws for a solved problem of that kind.
FIGURES = {"joint_training_inference": ("allocation.png", plot_allocation),
           "split_learning": ("split.png", _plot_split),
           "cis_early_exit": ("exit_weights.png", _plot_cis),
           "hfl": ("host_loads.png", _plot_hfl)}


def _write_system(result: SolveResult, problem: ProblemBase, out: str | Path) -> list[Path]:
    from jointopt.system import write_outputs as write

    return write(result, problem, out)


#: ``kind -> write(result, problem, out) -> [Path]``: a kind whose ``--out`` files are its own
WRITERS = {"edge_system": _write_system}


def _write_files(result: SolveResult, problem: ProblemBase, out: Path) -> list[Path]:
    """``result.json``, ``decisions.csv`` and the kind's figure (:data:`FIGURES`)."""
    paths = [out / "result.json", out / "decisions.csv"]
    paths[0].write_text(json.dumps(result.to_dict(), indent=2))
    frame = result.decisions_frame()
    for key, value in result.diagnostics.items():
        if np.ndim(value) == 1 and len(value) == len(frame):
            frame[key] = value
    frame.to_csv(paths[1], index=False)
    if problem.kind in FIGURES:
        name, plot = FIGURES[problem.kind]
        paths.append(plot(result, problem, out / name))
    return paths


def write_outputs(result: SolveResult, problem: ProblemBase, out: str | Path) -> list[Path]:
    """``result.json``, ``decisions.csv`` and the kind's figure (:data:`FIGURES`) under
    ``out``, or the files of a kind in :data:`WRITERS`: all of them or none (they are
    written to a temporary folder inside ``out`` and moved in at the end, so that a failing
    figure leaves no half-written outputs)."""
    import os
    import tempfile

    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    write = WRITERS.get(problem.kind, _write_files)
    try:
        with tempfile.TemporaryDirectory(dir=out, prefix=".writing-") as tmp:
            written = [Path(p).relative_to(tmp) for p in write(result, problem, Path(tmp))]
            for name in written:
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(Path(tmp) / name, out / name)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    return [out / name for name in written]
