"""One edge system, one plan: the user-facing side (text report rows, files, the system
figure, the online simulation). The plan itself is
:class:`jointopt.solvers.system.EdgeSystemProblem`.

    >>> import jointopt
    >>> result = jointopt.solve("system_example")
    >>> result.decisions["association"], result.diagnostics["siloed"]["timely_accuracy"]
"""

from __future__ import annotations

import numpy as np

from jointopt.solvers.base import SolveResult


def headline_rows(result: SolveResult) -> list[tuple[str, str]]:
    """``(label, value)`` rows of a system plan: the joint plan against the siloed one."""
    d, s = result.diagnostics, result.diagnostics["siloed"]

    def pair(key, fmt):
        return f"{format(d[key], fmt)} (siloed {format(s[key], fmt)})"

    rows = [("mode", d["mode"]),
            ("timely accuracy", pair("timely_accuracy", ".4f")),
            ("edge overload", pair("edge_overload", ".4g") + " req/s"),
            ("training comm", pair("comm_per_round", ".4g") + " per global round"),
            ("open hosts", " ".join(str(h) for h in np.asarray(result.decisions["placement"]))),
            ("participants", f"{d['participants']} (required {d['required_participants']})"),
            ("requests served", f"device {d['share_device']:.1%}, edge {d['share_edge']:.1%}, "
                                f"cloud {d['share_cloud']:.1%}"),
            ("loop", f"{d['loop_status']}, best iterate {d['best_iterate']} "
                     f"of {result.iterations}")]
    if "exit_weights" in d:
        rows.append(("exit weights", " ".join(f"{w:.3f}" for w in d["exit_weights"])
                     + f" ({d['exit_rule']})"))
    rows.append(("note", "heuristic over exact stage solvers; no optimality claim"))
    return rows


def deployment_plan(problem, result: SolveResult | None = None):
    """The ``deployment_plan`` problem of the system's plan (stage G): the scenario named by
    ``deployment.base`` with the plan's hierarchical topology written over it
    (:func:`jointopt.solvers.system.deployment.deployment_problem`); ``result`` defaults to
    the joint plan."""
    from jointopt import scenarios
    from jointopt.errors import ValidationError
    from jointopt.solvers.system.deployment import deployment_problem

    base = problem.deployment.base
    if base is None:
        raise ValidationError("deployment.base", "is required to plan the deployment: name a "
                                                 "deployment_plan scenario holding the fleet's "
                                                 "telemetry, costs and budgets")
    data = scenarios.read_scenario(base)
    if data.get("kind") != "deployment_plan":
        raise ValidationError("deployment.base", f"must name a deployment_plan scenario, got "
                                                 f"kind {data.get('kind')!r}")
    if result is None:
        result = problem.solve()
    return deployment_problem(problem, result, data)


# -- files -------------------------------------------------------------------------------------
def device_frame(result: SolveResult):
    """One row per device: decisions and per-device metrics of the plan."""

    frame = result.decisions_frame()
    n = len(frame)
    for key, value in result.diagnostics.items():
        if key.startswith("device_") and np.ndim(value) == 1 and len(value) == n:
            frame[key.removeprefix("device_")] = np.asarray(value)
    return frame


def host_frame(result: SolveResult):
    """One row per host: open, capacity, load (joint and siloed), service rate, sojourn."""
    import pandas as pd

    d = result.diagnostics
    cap = np.asarray(d["host_capacity"], float)
    a = np.asarray(result.decisions["association"])
    return pd.DataFrame({
        "host": np.arange(cap.size),
        "open": np.isin(np.arange(cap.size), result.decisions["placement"]),
        "devices": np.bincount(a[a >= 0], minlength=cap.size),
        "capacity": cap, "load": np.asarray(d["host_load"], float),
        "overload": np.asarray(d["host_overload"], float),
        "siloed_load": np.asarray(d["siloed"]["host_load"], float),
        "cut": np.asarray(d["host_cut"]),
        "service_rate": np.asarray(d["host_service_rate"], float),
        "mean_sojourn_s": np.asarray(d["host_sojourn"], float)})


METRICS = (("timely_accuracy", "request-weighted timely accuracy", ".4f"),
           ("edge_overload", "edge overload (req/s)", ".4g"),
           ("comm_per_round", "training communication per global round", ".4g"),
           ("participants", "participating devices", "d"),
           ("share_device", "share of requests served on devices", ".3f"),
           ("share_edge", "share served at the edge", ".3f"),
           ("share_cloud", "share served in the cloud", ".3f"),
           ("max_cap_excess", "largest device cap excess", ".3g"),
           ("feasible", "feasible", ""))


def markdown(result: SolveResult) -> str:
    """``report.md``: headline, joint against siloed, hosts, the loop's trajectory, notes."""
    d, s = result.diagnostics, result.diagnostics["siloed"]
    lines = [f"# Edge system plan: {result.scenario}", "",
             f"Mode `{d['mode']}`, status **{result.status}**, {result.iterations} loop "
             f"iterate(s), {d['loop_status']}; the returned plan is iterate "
             f"{d['best_iterate']} (0 = the siloed plan). Solved in "
             f"{result.solve_time_s:.2f} s.", "",
             "The joint plan is a block-coordinate loop over the exact solvers of the kinds it "
             "composes (hfl placement, split_learning per host, cis_early_exit exit weights, "
             "joint_training_inference allocation); it claims no optimality for the joint "
             "problem.", "", "## Joint against siloed", "",
             "| metric | joint | siloed |", "|---|---|---|"]
    for key, label, fmt in METRICS:
        lines.append(f"| {label} | {format(d[key], fmt)} | {format(s[key], fmt)} |")
    lines += ["", "## Hosts", "", _md_table(host_frame(result)), "", "## Trajectory", "",
              _md_table(_trajectory_frame(result)), ""]
    if "exit_weights" in d:
        lines += ["## Exit weights", "",
                  f"Rule `{d['exit_rule']}`: training weights "
                  + ", ".join(f"{w:.3f}" for w in d["exit_weights"])
                  + " (exits 1, 2, 3: device, edge, cloud); served shares "
                  + ", ".join(f"{w:.3f}" for w in d["exit_target_weights"]) + ".", ""]
    notes = list(d.get("notes", []))
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _md_table(frame) -> str:
    """A Markdown table of a DataFrame (numbers to 4 significant digits)."""
    def cell(v):
        if isinstance(v, bool | np.bool_):
            return "yes" if v else "no"
        if isinstance(v, float | np.floating):
            return f"{v:.4g}"
        return str(v)

    rows = ["| " + " | ".join(str(c) for c in frame.columns) + " |",
            "|" + "---|" * len(frame.columns)]
    rows += ["| " + " | ".join(cell(v) for v in row) + " |"
             for row in frame.itertuples(index=False)]
    return "\n".join(rows)


def _trajectory_frame(result: SolveResult):
    import pandas as pd

    return pd.DataFrame(result.diagnostics["trajectory"])


def write_outputs(result: SolveResult, problem, out) -> list:
    """``result.json``, ``devices.csv``, ``hosts.csv``, ``trajectory.csv``, ``report.md`` and
    ``system.png`` under ``out``."""
    import json
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in ("result.json", "devices.csv", "hosts.csv",
                                     "trajectory.csv", "report.md")]
    paths[0].write_text(json.dumps(result.to_dict(), indent=2))
    device_frame(result).to_csv(paths[1], index=False)
    host_frame(result).to_csv(paths[2], index=False)
    _trajectory_frame(result).to_csv(paths[3], index=False)
    paths[4].write_text(markdown(result))
    paths.append(plot_system(result, problem, out / "system.png"))
    return paths


# -- the system figure ---------------------------------------------------------------------------
TIER_COLORS = {"device": "tab:green", "edge": "tab:blue", "cloud": "tab:purple"}


def plot_system(result: SolveResult, problem, path):
    """The system figure: (a) the tree cloud -> open hosts -> devices (each device coloured by
    the share of its requests it offloads; devices without a host hang off the cloud),
    (b) each host's load against its capacity, joint and siloed, (c) the share of requests
    served on the devices, at the edge and in the cloud, joint and siloed, (d) the loop's
    trajectory of timely accuracy with the joint and siloed metrics."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(14, 9.5))
    grid = fig.add_gridspec(2, 3, height_ratios=[1.15, 1.0], width_ratios=[1.2, 1.0, 1.0])
    _tree(fig.add_subplot(grid[0, :]), result)
    _host_loads(fig.add_subplot(grid[1, 0]), result)
    _tiers(fig.add_subplot(grid[1, 1]), result)
    _trajectory(fig.add_subplot(grid[1, 2]), result)
    d = result.diagnostics
    fig.suptitle(f"{result.scenario}: {problem.N} devices, {problem.M} hosts, mode "
                 f"{d['mode']} — joint plan {result.status}, timely accuracy "
                 f"{d['timely_accuracy']:.3f} (siloed {d['siloed']['timely_accuracy']:.3f})",
                 fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _tree(ax, result: SolveResult, max_devices: int = 120) -> None:
    import matplotlib as mpl

    dec, d = result.decisions, result.diagnostics
    a = np.asarray(dec["association"])
    off = np.asarray(dec["offload"], float)
    hosts = np.asarray(dec["placement"])
    cap = np.asarray(d["host_capacity"], float)
    load = np.asarray(d["host_load"], float)
    cmap = mpl.colormaps["viridis"]
    groups = [(int(h), np.flatnonzero(a == h)) for h in hosts] + [(-1, np.flatnonzero(a < 0))]
    n_shown = sum(min(g.size, max_devices // max(1, len(groups))) for _, g in groups)
    x = 0.0
    host_x = {}
    dev_pts = []
    for h, members in groups:
        shown = members[:max(1, max_devices // max(1, len(groups)))] if members.size else members
        xs = x + np.arange(shown.size)
        if h >= 0:
            host_x[h] = float(xs.mean()) if xs.size else x
        dev_pts.append((h, members, shown, xs))
        x += max(shown.size, 1) + 1.5
    cloud_x = (x - 1.5) / 2
    ax.scatter([cloud_x], [2], s=900, marker="s", color=TIER_COLORS["cloud"], zorder=3)
    ax.annotate("cloud", (cloud_x, 2), ha="center", va="center", color="white",
                fontweight="bold", fontsize=9, zorder=4)
    for h, members, shown, xs in dev_pts:
        if h >= 0:
            hx = host_x[h]
            ax.plot([cloud_x, hx], [2, 1], color="0.5", lw=1.2, zorder=1)
            ratio = load[h] / cap[h] if cap[h] > 0 else np.inf
            ax.scatter([hx], [1], s=650, marker="o", color=TIER_COLORS["edge"], zorder=3,
                       edgecolor="red" if ratio > 1 + 1e-9 else "black", linewidth=1.5)
            ax.annotate(f"h{h}", (hx, 1), ha="center", va="center", color="white",
                        fontsize=8, fontweight="bold", zorder=4)
            label = f"{load[h]:.0f}/{cap[h]:.0f}"
            if d["mode"] == "split":
                label += f", cut {int(np.asarray(d['host_cut'])[h])}"
            ax.annotate(label, (hx, 1.22), ha="center", fontsize=7.5)
            top = 1
        else:
            top = 2
        for xi in xs:
            ax.plot([xi, host_x[h] if h >= 0 else cloud_x], [0, top], color="0.75",
                    lw=0.6, ls="-" if h >= 0 else "--", zorder=0)
        if xs.size:
            ax.scatter(xs, np.zeros(xs.size), c=off[shown], cmap=cmap, vmin=0, vmax=1, s=40,
                       edgecolor="k", linewidth=0.3, zorder=2)
        if members.size > shown.size:
            ax.annotate(f"+{members.size - shown.size}", (xs[-1] + 0.6, -0.12), fontsize=7)
        if h < 0 and members.size:
            ax.annotate("no host: all requests to the cloud", (xs.mean(), -0.3),
                        ha="center", fontsize=7.5)
    sm = mpl.cm.ScalarMappable(cmap=cmap, norm=mpl.colors.Normalize(0, 1))
    ax.figure.colorbar(sm, ax=ax, fraction=0.02, pad=0.01,
                       label="share of a device's requests offloaded")
    ax.set(xlim=(-1, max(x - 0.5, 2)), ylim=(-0.45, 2.35), yticks=[0, 1, 2],
           yticklabels=["devices", "edge hosts\n(load/capacity)", "cloud"])
    ax.set_xticks([])
    ax.set_title(f"(a) the plan's tree: {hosts.size} open hosts, {int((a >= 0).sum())} "
                 f"associated devices" + (f" ({n_shown} drawn)" if n_shown < a.size else ""),
                 loc="left", fontsize=10)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)


def _host_loads(ax, result: SolveResult) -> None:
    d = result.diagnostics
    cap = np.asarray(d["host_capacity"], float)
    load = np.asarray(d["host_load"], float)
    silo = np.asarray(d["siloed"]["host_load"], float)
    idx = np.arange(cap.size)
    w = 0.38
    ax.bar(idx - w / 2, load, w, color=TIER_COLORS["edge"], label="joint load")
    ax.bar(idx + w / 2, silo, w, color="0.8", edgecolor="0.4", hatch="//",
           label="siloed load")
    ax.hlines(cap, idx - 0.45, idx + 0.45, color="red", lw=2, label="capacity $R_m$")
    ax.set(xlabel="host", ylabel="offloaded requests / s", xticks=idx if cap.size <= 25 else [])
    ax.set_title("(b) host load against capacity", loc="left", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def _tiers(ax, result: SolveResult) -> None:
    d, s = result.diagnostics, result.diagnostics["siloed"]
    bottom = np.zeros(2)
    for tier in ("device", "edge", "cloud"):
        v = np.array([d[f"share_{tier}"], s[f"share_{tier}"]])
        ax.bar([0, 1], v, 0.55, bottom=bottom, color=TIER_COLORS[tier], label=tier)
        for i in range(2):
            if v[i] > 0.04:
                ax.annotate(f"{v[i]:.0%}", (i, bottom[i] + v[i] / 2), ha="center",
                            va="center", color="white", fontsize=9, fontweight="bold")
        bottom += v
    ax.set_xticks([0, 1], ["joint", "siloed"])
    ax.set(ylim=(0, 1), ylabel="share of requests")
    ax.set_title("(c) where requests are served", loc="left", fontsize=10)
    ax.set_xlim(-0.5, 2.3)
    ax.legend(fontsize=8, loc="center right", title="tier", title_fontsize=8)


def _trajectory(ax, result: SolveResult) -> None:
    d, s = result.diagnostics, result.diagnostics["siloed"]
    rows = d["trajectory"]
    k = np.array([r["iterate"] for r in rows])
    acc = np.array([r["timely_accuracy"] for r in rows], float)
    ok = np.array([r["feasible"] for r in rows], bool)
    ax.plot(k, acc, "-", color="0.6", lw=1)
    ax.scatter(k[ok], acc[ok], color="tab:blue", zorder=3, label="feasible iterate")
    ax.scatter(k[~ok], acc[~ok], color="red", marker="x", zorder=3,
               label="overloads a host")
    ax.scatter([d["best_iterate"]], [d["timely_accuracy"]], s=150, facecolor="none",
               edgecolor="k", zorder=4, label="returned plan")
    ax.set(xlabel="iterate (0 = siloed plan)", ylabel="request-weighted timely accuracy")
    ax.set_xticks(k if k.size <= 12 else k[:: max(1, k.size // 10)])
    text = "\n".join([
        f"{'':14}{'joint':>8}{'siloed':>9}",
        f"{'timely acc':14}{d['timely_accuracy']:>8.3f}{s['timely_accuracy']:>9.3f}",
        f"{'overload':14}{d['edge_overload']:>8.3g}{s['edge_overload']:>9.3g}",
        f"{'comm/round':14}{d['comm_per_round']:>8.3g}{s['comm_per_round']:>9.3g}"])
    ax.text(0.98, 0.04, text, transform=ax.transAxes, ha="right", va="bottom",
            family="monospace", fontsize=8, bbox={"facecolor": "white", "alpha": 0.85,
                                                  "edgecolor": "0.7"})
    ax.set_title("(d) the joint loop", loc="left", fontsize=10)
    ax.legend(fontsize=7.5, loc="upper left")
    ax.grid(alpha=0.3)
