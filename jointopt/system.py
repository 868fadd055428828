"""One edge system, one plan: the user-facing side (text report rows, files, the system
figure, the online simulation). The plan itself is
:class:`jointopt.solvers.system.EdgeSystemProblem`.

    >>> import jointopt
    >>> result = jointopt.solve("system_example")
    >>> result.decisions["association"], result.diagnostics["siloed"]["timely_accuracy"]
"""

from __future__ import annotations

from dataclasses import dataclass

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
            ("placement", placement_line(d["placement"])),
            ("loop", f"{d['loop_status']}, best iterate {d['best_iterate']} "
                     f"of {result.iterations}")]
    if "exit_weights" in d:
        rows.append(("exit weights", " ".join(f"{w:.3f}" for w in d["exit_weights"])
                     + f" ({d['exit_rule']})"))
    rows.append(("note", "heuristic over exact stage solvers; no optimality claim"))
    return rows


def placement_line(placement: dict) -> str:
    """One line on the placement a plan used: method, status and gap to its bound."""
    if placement["method"] == "given":
        return "given (placement.association)"
    line = f"{placement['method']} ({placement['pairs']} device-host pairs)"
    if "status" in placement:
        line += f", {placement['status']}, gap {placement['gap']:.2%} to its bound"
    return line


def deployment_plan(problem, result: SolveResult | None = None):
    """The ``deployment_plan`` problem of the system's plan (stage G): the scenario named by
    ``deployment.base`` (if any) under the system's own ``[deployment]`` sections,
    ``[costs]`` and ``[budgets]``, with the plan's hierarchical topology written over it
    (:func:`jointopt.solvers.system.deployment.deployment_problem`); ``result`` defaults to
    the joint plan."""
    from jointopt import scenarios
    from jointopt.errors import ValidationError
    from jointopt.solvers.system.deployment import deployment_problem

    dep = problem.deployment
    base = dep.base
    if base is None and not dep.sections():
        raise ValidationError("deployment.base", "is required to plan the deployment: name a "
                                                 "deployment_plan scenario holding the fleet's "
                                                 "telemetry, calibration and server, or give "
                                                 "them as [deployment] sections")
    data = None
    if base is not None:
        data = scenarios.read_scenario(base)
        if data.get("kind") != "deployment_plan":
            raise ValidationError("deployment.base", f"must name a deployment_plan scenario, "
                                                     f"got kind {data.get('kind')!r}")
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
             "problem.", "", f"Placement: {placement_line(d['placement'])}; "
             f"{d['placement']['rule']}.", "", "## Joint against siloed", "",
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


# -- the online run -------------------------------------------------------------------------------
class _Recording:
    """A policy that delegates to another and keeps what it saw and decided each round."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.seen: list = []
        self.decided: list = []

    def reset(self, problem) -> None:
        self.inner.reset(problem)
        self.seen.clear()
        self.decided.clear()

    def decide(self, obs):
        x = self.inner.decide(obs)
        self.seen.append(obs)
        self.decided.append(x)
        return x

    @property
    def backlog(self) -> float:
        return self.inner.backlog


def simulate_plan(problem, plan: dict, policy: str = "online", *, rounds: int | None = None,
                  seed: int = 0, progress: bool = False, label: str = "joint"):
    """Run a plan online for ``rounds`` rounds [project choice]: ``policy`` (the online
    drift-plus-penalty controller by default, or a baseline of the joint allocator) decides
    ``q, d, mu`` of the associated devices every round in the joint allocator's surrogate
    (participation, downloads, age of model, the global error ``K``), each device serving
    the share of its requests the plan keeps on it; the plan's association, offload rates
    and cuts stay fixed. Each round requests arrive ``Poisson(lambda slot)``; a device keeps
    each with probability ``1 - o_n`` and serves it on time with its M/M/1 probability at
    the round's ``mu``; offloaded requests feed their host's queue, a backlog carried from
    round to round (``B <- max(0, B + arrivals - mu_m slot)``) in front of an M/M/1 server at
    the round's arrival rate: an offloaded request is on time with probability
    ``1 - exp(-(mu_m - rate)(tau - fixed delays - B / mu_m))`` (0 if ``rate >= mu_m``);
    devices without a host send every request to the cloud. Correct answers: the exit's
    accuracy on the requests of that tier times the freshness of the copy that serves them.
    ``plan``: ``association``, ``offload``, ``cut``, ``host_cut`` (a result's decisions and
    diagnostics, or its siloed plan). Returns a :class:`SystemSimulation`."""
    import pandas as pd

    from jointopt.models.queueing import on_time_fraction
    from jointopt.policies import make_policy
    from jointopt.solvers.system.stages import Context
    from jointopt.surrogate import simulate

    ctx = Context(problem)
    T = problem.simulation.rounds if rounds is None else int(rounds)
    slot = problem.simulation.slot
    lam, tau = ctx.lam, ctx.tau
    a = np.asarray(plan["association"], dtype=np.int64)
    on = a >= 0
    members = np.flatnonzero(on)
    o = np.where(on, np.asarray(plan["offload"], float), 1.0)
    cut = np.asarray(plan["cut"], dtype=np.int64)
    host_cut = np.asarray(plan["host_cut"], dtype=np.int64)
    served = np.minimum(lam * (1.0 - o), problem.serve_max)
    kept, off = np.zeros(problem.N), np.zeros(problem.N)
    has = on & (cut >= 0)
    if has.any():
        kept[has], off[has] = ctx.parts_at(cut[has], o[has])
    if problem.mode == "device_only":
        kept[on] = ctx.parts_at(np.full(int(on.sum()), problem.cuts[0]),
                                np.zeros(int(on.sum())))[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        kept_acc = np.where(o < 1, kept / (1.0 - o), 0.0)
        off_acc = np.where(o > 0, off / o, 0.0)
    mu_host = np.zeros(problem.M)
    for s in problem.cuts:
        mu_host[host_cut == s] = problem.host_service_rate(s)[host_cut == s]
    fixed = np.zeros(problem.N)
    for s in problem.cuts:
        k = cut == s
        fixed[k] = problem.device_time(s)[k] + problem.upload_time(s)[k]
    fixed[on] += problem.delay[members, a[members]]
    acc0 = ctx.acc_top

    recorder = _Recording(make_policy(policy))
    K_state = problem.training.state.K
    if members.size:
        sub = ctx.jti_base.subset(members, arrival_rate=served[members])
        surrogate = simulate(sub, recorder, rounds=T + 1, seed=seed, progress=progress)
        K = np.array([obs.K for obs in recorder.seen[1:T + 1]])
        held = [obs.held_error for obs in recorder.seen[1:T + 1]]
        mus = [x.mu for x in recorder.decided[:T]]
        stable = surrogate.table.iloc[:T]
    else:
        K, held, mus, stable = np.full(T, K_state), [np.zeros(0)] * T, [np.zeros(0)] * T, None
    rng = np.random.default_rng([seed, 2])
    backlog = np.zeros(problem.M)
    rows = []
    for t in range(T):
        fresh_up = float(ctx.acc_map(K[t])) / acc0
        mu = np.zeros(problem.N)
        mu[members] = mus[t]
        fresh = np.zeros(problem.N)
        fresh[members] = np.asarray(ctx.acc_map(held[t]), float) / acc0
        arrivals = rng.poisson(lam * slot)
        keep = np.where(on, rng.binomial(arrivals, np.clip(1.0 - o, 0.0, 1.0)), 0)
        sent = np.where(on, arrivals - keep, 0)
        to_cloud = np.where(on, 0, arrivals)
        p_dev = np.where(served > 0, on_time_fraction(served, mu, tau), 0.0)
        load = np.bincount(a[on], weights=sent[on], minlength=problem.M) / slot
        wait = np.where(mu_host > 0, backlog / np.where(mu_host > 0, mu_host, 1.0), np.inf)
        gap = mu_host[np.maximum(a, 0)] - load[np.maximum(a, 0)]
        slack = tau - fixed - wait[np.maximum(a, 0)]
        p_edge = np.where(on & (gap > 0) & (slack > 0),
                          -np.expm1(-np.maximum(gap, 0.0) * np.maximum(slack, 0.0)), 0.0)
        dev_ok = rng.binomial(keep, p_dev)
        edge_ok = rng.binomial(sent, p_edge)
        cloud_ok = rng.binomial(to_cloud, ctx.cloud_on_time)
        correct = (rng.binomial(dev_ok, np.clip(kept_acc * fresh, 0.0, 1.0)).sum()
                   + rng.binomial(edge_ok, np.clip(off_acc * fresh_up, 0.0, 1.0)).sum()
                   + rng.binomial(cloud_ok, np.clip(ctx.cloud_acc * fresh_up, 0.0, 1.0)).sum())
        expected = np.where(on, served * p_dev * kept_acc * fresh
                            + lam * o * p_edge * off_acc * fresh_up,
                            lam * ctx.cloud_on_time * ctx.cloud_acc * fresh_up)
        backlog = np.maximum(backlog + load * slot - mu_host * slot, 0.0)
        n_req = int(arrivals.sum())
        rows.append({
            "round": t, "K": float(K[t]), "requests": n_req, "correct": int(correct),
            "timely_accuracy": correct / max(n_req, 1),
            "expected_timely_accuracy": float(expected.sum() / lam.sum()) if lam.sum() > 0
            else float("nan"),
            "device_on_time": dev_ok.sum() / keep.sum() if keep.sum() else np.nan,
            "edge_on_time": edge_ok.sum() / sent.sum() if sent.sum() else np.nan,
            "cloud_on_time": cloud_ok.sum() / to_cloud.sum() if to_cloud.sum() else np.nan,
            "share_edge": sent.sum() / max(n_req, 1),
            "max_host_utilisation": float(np.max(np.where(mu_host > 0, load / np.where(
                mu_host > 0, mu_host, 1.0), 0.0), initial=0.0)),
            "max_host_backlog": float(backlog.max(initial=0.0)),
            "mean_mu": float(mus[t].mean()) if members.size else 0.0,
            "resource_use": float(stable["resource_use"].iloc[t]) if stable is not None
            else 0.0,
            "virtual_backlog": float(stable["backlog"].iloc[t]) if stable is not None else 0.0,
        })
    table = pd.DataFrame(rows)
    table.insert(0, "policy", recorder.name)
    table.insert(0, "plan", label)
    total = max(int(table["requests"].sum()), 1)
    summary = {
        "avg_timely_accuracy": float(table["correct"].sum() / total),
        "expected_timely_accuracy": float(table["expected_timely_accuracy"].mean()),
        "edge_on_time": _mean(table["edge_on_time"]),
        "device_on_time": _mean(table["device_on_time"]),
        "cloud_on_time": _mean(table["cloud_on_time"]),
        "max_host_utilisation": float(table["max_host_utilisation"].max()),
        "max_host_backlog": float(table["max_host_backlog"].max()),
        "final_host_backlog": float(table["max_host_backlog"].iloc[-1]),
        "mean_K": float(table["K"].mean()),
        "avg_resource_use": float(table["resource_use"].mean()),
        "mean_virtual_backlog": float(table["virtual_backlog"].mean()),
        "rounds": T, "seed": seed}
    return SystemSimulation(problem.name, label, recorder.name, seed, table, summary)


def _mean(column) -> float:
    """Mean over the rounds that had requests of that kind (NaN if none had)."""
    values = np.asarray(column, float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


@dataclass
class SystemSimulation:
    """One online run of a plan: per-round ``table`` and ``summary``."""

    scenario: str
    plan: str
    policy: str
    seed: int
    table: object
    summary: dict


def simulate(problem, result: SolveResult | None = None, policies=("online",), *,
             rounds: int | None = None, seed: int = 0, progress: bool = False
             ) -> list[SystemSimulation]:
    """The joint plan and the siloed plan of ``result`` (default: the problem's joint
    plan), each run online under every policy on the same seed
    (:func:`simulate_plan`)."""
    if result is None:
        result = problem.solve()
    d = result.diagnostics
    plans = {"joint": {"association": result.decisions["association"],
                       "offload": result.decisions["offload"], "cut": result.decisions["cut"],
                       "host_cut": d["host_cut"]},
             "siloed": {k: d["siloed"][k] for k in ("association", "offload", "cut",
                                                    "host_cut")}}
    return [simulate_plan(problem, plan, name, rounds=rounds, seed=seed, progress=progress,
                          label=label)
            for label, plan in plans.items() for name in policies]


def simulation_summary(runs: list[SystemSimulation]):
    """One row per (plan, policy) with the summary numbers."""
    import pandas as pd

    return pd.DataFrame([{"scenario": r.scenario, "plan": r.plan, "policy": r.policy,
                          **r.summary} for r in runs])


def plot_simulation(runs: list[SystemSimulation], path):
    """Timely accuracy, the largest host backlog, K and the on-time fraction per tier over
    the run, one line per (plan, policy)."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for r in runs:
        t = r.table
        smooth = max(1, len(t) // 25)
        label = f"{r.plan} / {r.policy}"
        style = "-" if r.plan == "joint" else "--"
        axes[0, 0].plot(t["round"], t["timely_accuracy"].rolling(smooth).mean(), style,
                        label=label)
        axes[0, 1].plot(t["round"], t["max_host_backlog"], style, label=label)
        axes[1, 0].plot(t["round"], t["K"], style, label=label)
    names = [f"{r.plan}\n{r.policy}" for r in runs]
    x = np.arange(len(runs))
    for j, (tier, color) in enumerate((("device", TIER_COLORS["device"]),
                                       ("edge", TIER_COLORS["edge"]))):
        axes[1, 1].bar(x + (j - 0.5) * 0.38,
                       [np.nan_to_num(r.summary[f"{tier}_on_time"]) for r in runs],
                       0.38, color=color, label=f"{tier} tier")
    axes[1, 1].set_xticks(x, names, fontsize=8)
    axes[0, 0].set(title=f"timely accuracy (rolling mean of {max(1, len(runs[0].table) // 25)}"
                         " rounds)", xlabel="round")
    axes[0, 1].set(title="largest host backlog (requests)", xlabel="round")
    axes[1, 0].set(title="global error proxy K", xlabel="round")
    axes[1, 1].set(title="mean on-time fraction per tier", ylim=(0, 1))
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{runs[0].scenario}: online run, {len(runs[0].table)} rounds, seed "
                 f"{runs[0].seed} (joint solid, siloed dashed)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_simulation(runs: list[SystemSimulation], out) -> list:
    """``rounds.csv`` (every plan and policy), ``summary.csv`` and ``simulation.png``."""
    from pathlib import Path

    import pandas as pd

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "rounds.csv", out / "summary.csv"]
    pd.concat([r.table for r in runs]).to_csv(paths[0], index=False)
    simulation_summary(runs).to_csv(paths[1], index=False)
    paths.append(plot_simulation(runs, out / "simulation.png"))
    return paths


def simulate_command(problem, args) -> tuple[dict, str]:
    """``jointopt simulate`` for this kind: the joint and siloed plans run online under the
    policies (``--policy``, default ``online``); ``(JSON object, text table)``."""
    import sys

    from jointopt.policies import POLICIES
    from jointopt.solvers.base import finite_or_none

    policy = args.policy or "online"
    names = list(POLICIES) if policy == "all" else [policy]
    progress = sys.stderr.isatty() and not args.no_progress
    runs = simulate(problem, policies=names, rounds=args.rounds, seed=args.seed,
                    progress=progress)
    written = write_simulation(runs, args.out) if args.out else []
    plans: dict = {}
    for r in runs:
        plans.setdefault(r.plan, {})[r.policy] = finite_or_none(r.summary)
    doc = {"scenario": problem.name, "rounds": runs[0].summary["rounds"], "seed": args.seed,
           "plans": plans}
    cols = ["plan", "policy", "avg_timely_accuracy", "edge_on_time", "device_on_time",
            "max_host_utilisation", "max_host_backlog", "mean_K", "avg_resource_use"]
    lines = [simulation_summary(runs)[cols].to_string(index=False, float_format="{:.4f}".format)]
    lines += [f"wrote {path}" for path in written]
    return doc, "\n".join(lines)
