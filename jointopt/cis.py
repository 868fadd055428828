"""Figure of a solved CIS exit-weight problem (``jointopt solve cis_tree7 --out DIR``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_exit_weights(result, problem, path: str | Path) -> Path:
    """Left: the exit weights of every rule beside the serving-rate target (grouped bars).
    Right: the bound B of each rule (S1 ranking; a project model, not a measured
    accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diag = result.diagnostics
    rules = dict(diag["weights_by_rule"])
    rules[diag["method"]] = np.asarray(result.decisions["weight"])
    bounds = dict(diag["bound_by_rule"])
    bounds[diag["method"]] = result.objective
    names = list(rules)
    e = len(result.decisions["exit"])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2),
                                 gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / len(names)
    x = np.arange(e)
    for i, name in enumerate(names):
        ax.bar(x + (i - (len(names) - 1) / 2) * width, rules[name], width, label=name)
    ax.plot(x, result.decisions["target_weight"], "k_", ms=30, mew=2,
            label="target (serving share)")
    ax.set_xticks(x, [f"exit {k}" for k in range(1, e + 1)])
    ax.set_ylabel("training weight")
    ax.set_ylim(0, 1.3)
    ax.legend(fontsize=7, ncol=3, loc="upper right")
    ax.grid(alpha=0.3, axis="y")
    vals = np.array([bounds[n] for n in names], dtype=float)
    finite = np.isfinite(vals)
    bx.barh(np.arange(len(names))[finite], vals[finite])
    bx.set_yticks(np.arange(len(names)), names)
    bx.set_xlabel("bound B (project model)")
    bx.grid(alpha=0.3, axis="x")
    fig.suptitle(f"{result.scenario}: {problem.n_nodes} nodes, exit weights by rule "
                 f"(solved: {diag['method']})")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
