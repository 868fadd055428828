"""Figure of a solved split-learning problem: inference time against the cut, with the
split-ratio bound marked (figure 4, panels a and b, from the model alone).

Provenance: the latency model and the bounds are the project's reconstruction;
the curves come from the problem's offload model (synthetic or measured)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jointopt.models import split as sm


def plot_split(result, problem, path: str | Path) -> Path:
    """Panel (a): request-weighted mean latency per cut (SplitGP at the optimal offload
    rates with the exact server wait, plain split inference, on-device and full offloading,
    the mean budget; the end points use their conventions, s = 0 is full offloading and
    s = L on-device). Panel (b): beta(s) against beta_max(s) and beta_off(s) for the
    average client at the cut's mean offload rate; device-beating cuts shaded."""
    if "per_cut" not in result.diagnostics:  # method per_client: a cut per client
        return plot_per_client(result, problem, path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    net, link, cl = problem.net, problem.link, problem.clients
    w = cl.request_rate / cl.request_rate.sum()
    cuts = net.cuts
    L = net.n_blocks
    rows = {r["cut"]: r for r in result.diagnostics["per_cut"]}
    t_dev = float(w @ np.broadcast_to(sm.latency_device(net, link), w.shape))
    t_off = float(w @ np.broadcast_to(sm.latency_offload(net, link), w.shape))
    t_sl = np.array([float(w @ np.broadcast_to(sm.latency_split(net, s, link), w.shape))
                     for s in cuts])
    sgp = np.full(cuts.shape, np.nan)
    q_mean = np.full(cuts.shape, np.nan)
    sgp[0], sgp[L], q_mean[0], q_mean[L] = t_off, t_dev, 1.0, 0.0
    for s, r in rows.items():
        if r["status"] == "optimal":
            sgp[s] = r["mean_latency"]
            q_mean[s] = float(w @ np.asarray(r["q"]))

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6))
    ms = 1e3
    ax.plot(cuts, t_sl * ms, "s--", color="tab:gray",
            label="plain split, always offload (no server wait)")
    ax.plot(cuts, sgp * ms, "o-", color="tab:blue", label="SplitGP at optimal q (exact wait)")
    ax.axhline(t_dev * ms, color="tab:green", ls=":", label="on-device")
    ax.axhline(t_off * ms, color="tab:red", ls=":", label="full offloading")
    ax.axhline(float(w @ cl.latency_budget) * ms, color="k", lw=0.8, ls="-.",
               label="mean budget")
    chosen = int(result.diagnostics["split"])
    ax.axvline(chosen, color="tab:blue", alpha=0.3, lw=6, label=f"chosen cut {chosen}")
    ax.set_xticks(cuts, [f"{s}\nβ={net.beta_flop(s):.2f}\nβP={net.beta_param(s):.2f}"
                         for s in cuts], fontsize=8)
    ax.set(ylabel="request-weighted mean latency (ms)", xlabel="cut s",
           title="(a) inference time vs cut")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)

    mean_link = sm.Link(float(w @ cl.f_client), problem.server.f_server, float(w @ cl.uplink_rate),
                        problem.server.tau0, problem.network.bits_per_element)
    ok = np.isfinite(q_mean)
    tab = sm.cut_bounds(net, mean_link, np.where(ok, q_mean, 0.0))
    beta = tab["beta"]
    bx.plot(cuts, beta, "o-", color="k", label="β(s) (FLOPs)")
    bx.plot(cuts, tab["beta_param"], ".--", color="tab:gray", label="β_P(s) (parameters)")
    bmax = np.where(ok, tab["beta_max"], np.nan)
    boff = np.where(ok, tab["beta_off"], np.nan)
    bx.plot(cuts, np.clip(bmax, -0.5, 1.5), "v", color="tab:green", ms=9,
            label="β_max(s): beats on-device below")
    bx.plot(cuts, np.clip(boff, -0.5, 1.5), "^", color="tab:red", ms=8,
            label="β_off(s): beats full offloading below")
    interior = (cuts > 0) & (cuts < L)
    for s in cuts[ok & interior & tab["device_beating"]]:
        bx.axvspan(s - 0.4, s + 0.4, color="tab:green", alpha=0.12)
    bx.set_xticks(cuts)
    bx.set(ylim=(-0.55, 1.55), xlabel="cut s", ylabel="split ratio",
           title="(b) split ratio vs bounds (average client, mean q per cut)")
    bx.grid(alpha=0.3)
    bx.legend(fontsize=7)
    fig.suptitle(f"{result.scenario}: split-learning plan ({result.solver}; project "
                 "reconstruction of the latency model)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_per_client(result, problem, path: str | Path) -> Path:
    """Figure of a ``per_client`` solution (a cut per client): panel (a) each client's cut
    and offload rate; panel (b) each client's expected latency against its budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dec = result.decisions
    k = np.arange(problem.n)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6))
    ax.bar(k, np.asarray(dec["split"]), color="tab:blue", alpha=0.7, label="cut s")
    ax.set(xlabel="client", ylabel="cut s", title="(a) cut and offload rate per client",
           ylim=(0, problem.net.n_blocks))
    qx = ax.twinx()
    qx.plot(k, np.asarray(dec["q"]), "o", color="tab:red", label="offload rate q")
    qx.set(ylabel="offload rate q", ylim=(-0.05, 1.05))
    ax.legend(loc="upper left", fontsize=7)
    qx.legend(loc="upper right", fontsize=7)
    ms = 1e3
    bx.bar(k, np.asarray(dec["latency"]) * ms, color="tab:blue", alpha=0.7,
           label="expected latency")
    bx.plot(k, problem.clients.latency_budget * ms, "k_", ms=18, mew=2, label="budget")
    bx.set(xlabel="client", ylabel="ms", title="(b) expected latency vs budget")
    bx.grid(alpha=0.3, axis="y")
    bx.legend(fontsize=7)
    fig.suptitle(f"{result.scenario}: one cut per client ({result.solver}; status "
                 f"{result.status})", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
