"""The stages of the edge-system plan. Each builds a problem of an existing kind from the one
scenario and the other stages' decisions and calls that kind's own solver:

* P placement: ``hfl`` (:func:`placement_problem`, :func:`run_placement`);
* S / E serving: ``split_learning``, one problem per open host over the devices it
  aggregates (:func:`run_serving`); in early-exit mode the cut is the device exit and the
  host runs up to the edge exit, and ``cis_early_exit`` gives the exit weights on the tree
  the association induces (:func:`run_exit_weights`);
* A allocation: ``joint_training_inference`` over the associated devices, each with the
  requests it serves itself (:func:`run_allocation`).

Couplings [project choice]: the placement sees each device's edge load ``D_n``; a host's
split problem sees the devices associated with it, the host's capacity as its admission cap
and, in the joint loop, each device's timely offload curve (the accuracy of what the device
keeps, times its on-time fraction at the service rate the allocation gave and the freshness
of its model copy, plus the accuracy of what it offloads, times the host's on-time fraction
and the edge model's freshness); the allocation sees the requests each device serves.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from jointopt.models import split as sm
from jointopt.models.errors import InfeasibleError
from jointopt.solvers.base import SolveResult


# -- shared data of one solve ----------------------------------------------------------------
class Context:
    """What every stage reads, built once per solve: the offload curves of every device at
    every candidate cut on a common threshold grid, the split and allocation problems over
    all devices (stages take subsets), and the fixed latencies."""

    def __init__(self, problem):
        self.problem = p = problem
        dev = p.devices
        self.lam = dev.arrival_rate
        self.tau = dev.deadline
        self.active = np.flatnonzero(self.lam > 0)
        self.pos = np.full(p.N, -1)
        self.pos[self.active] = np.arange(self.active.size)
        self.acc_map = p.training.accuracy.build()
        self.acc_top = float(self.acc_map(0.0))
        ln_c = math.log(p.model.n_classes)
        self.e = np.concatenate([[-1.0], np.linspace(0.0, ln_c, p.model.threshold_grid)])
        ratio = dev.ood_ratio[:, None]
        self.q, self.kept, self.off = {}, {}, {}
        for s in p.cuts:
            ent = p.entropy_model(s)
            self.q[s] = ent.rate(self.e[None, :], ratio)
            self.kept[s], self.off[s] = ent.accuracy_parts(self.e[None, :], ratio)
        cloud = p.entropy_model(p.cuts[0], tier="cloud")
        self.cloud_acc = cloud.accuracy_parts(-1.0, dev.ood_ratio)[1]
        fixed = p.upload_time(0) + float(p.net.flops_total) / p.cloud.f_cloud
        slack = self.tau - fixed
        self.cloud_on_time = np.where(slack > 0, -np.expm1(-slack / p.cloud.rtt), 0.0)
        self._split = None
        self._jti = None

    @property
    def split_base(self):
        """The split problem over the devices with requests (stages take subsets)."""
        if self._split is None:
            from jointopt.solvers.split import SplitProblem

            p, dev, idx = self.problem, self.problem.devices, self.active
            mod = p.model
            if p.mode == "split":
                network = {**p.model.network_section().model_dump(), "cuts": p.cuts}
            else:
                network = early_exit_network(p)
            self._split = SplitProblem.from_dict({
                "name": f"{p.name}/serving", "n_classes": mod.n_classes, "network": network,
                "server": {"f_server": 1.0},
                "clients": {"count": int(idx.size), "f_client": dev.f_device[idx].tolist(),
                            "uplink_rate": dev.uplink_rate[idx].tolist(),
                            "request_rate": self.lam[idx].tolist(),
                            "latency_budget": self.tau[idx].tolist(),
                            "ood_ratio": dev.ood_ratio[idx].tolist()},
                "entropy": mod.entropy.model_dump(),
                "optimizer": {"w_grid": p.loop.w_grid,
                              "n_threshold_grid": mod.threshold_grid}})
        return self._split

    @property
    def jti_base(self):
        """The allocation problem over every device, serving nothing yet, and one more
        client (index ``N``) standing for the requests the upper tiers answer with the
        global model (:func:`run_allocation`): it always holds the newest model, neither
        trains nor pays (zero costs, no cap, a budget it never uses), serves at once (no
        deadline, ample rate) and weighs nothing in the convergence model (data weight 1e-9
        of the devices')."""
        if self._jti is None:
            from jointopt.solvers.jti import JointTrainingInferenceProblem

            p, dev, tr = self.problem, self.problem.devices, self.problem.training
            clients = {k: getattr(dev, k).tolist() for k in (
                "data_weight", "deadline", "cost_train", "cost_download", "cost_service",
                "cap", "budget", "mu_max", "q_min")}
            # its use is 0: any finite budget leaves it slack (an infinite one would make
            # the allocator's drift term, and so its objective, infinite)
            upstream = {"data_weight": 1e-9 * float(dev.data_weight.sum()),
                        "deadline": math.inf, "cost_train": 0.0, "cost_download": 0.0,
                        "cost_service": 0.0, "cap": math.inf, "budget": 1.0,
                        "mu_max": 1e12, "q_min": 1.0}
            for key, value in upstream.items():
                clients[key].append(value)
            self._jti = JointTrainingInferenceProblem.from_dict({
                "name": f"{p.name}/allocation",
                "clients": {"count": p.N + 1, "arrival_rate": 0.0, **clients},
                "convergence": tr.convergence.model_dump(),
                "accuracy": tr.accuracy.model_dump(),
                "controller": tr.controller.model_dump(),
                "state": {"K": tr.state.K, "Z": tr.state.Z},
                "simulation": {"rounds": p.simulation.rounds, "slot": p.simulation.slot}})
        return self._jti

    def system_cut(self, split_cut: int) -> int:
        """The system's cut index of a split-problem cut (early-exit mode: the device exit)."""
        return int(split_cut) if self.problem.mode == "split" else self.problem.cuts[0]

    def parts_at(self, cut: np.ndarray, offload: np.ndarray):
        """Per device, the accuracy of what it keeps and of what it offloads, as shares of
        all its requests, at offload rate ``offload`` on its cut's curve (linear between the
        grid's thresholds, as randomising between two thresholds gives)."""
        n = offload.size
        kept, off = np.zeros(n), np.zeros(n)
        for s in self.problem.cuts:
            rows = np.flatnonzero(cut == s)
            if rows.size == 0:
                continue
            q = self.q[s][rows]
            o = offload[rows][:, None]
            j = np.clip((q >= o).sum(axis=1) - 1, 0, q.shape[1] - 2)
            r = np.arange(rows.size)
            q0, q1 = q[r, j], q[r, j + 1]
            w = np.where(q0 > q1, (q0 - offload[rows]) / np.where(q0 > q1, q0 - q1, 1.0), 0.0)
            w = np.clip(w, 0.0, 1.0)
            for src, dst in ((self.kept[s], kept), (self.off[s], off)):
                dst[rows] = (1 - w) * src[rows, j] + w * src[rows, j + 1]
        return kept, off


def early_exit_network(problem) -> dict:
    """The two-block network a host's split problem sees in early-exit mode: block 1 is the
    device's sub-model up to exit 1 (its head is the client exit), block 2 what the host
    runs on an offloaded request (the blocks up to exit 2 plus exit 2's head); the upload
    is the activation at the device exit. Cut 1 is the only candidate."""
    net = problem.net
    b1, b2 = problem.model.exits
    macs, params = net.macs, net.params
    head2_m = float(net.aux_macs[b2]) if b2 < net.n_blocks else 0.0
    head2_p = float(net.aux_params[b2]) if b2 < net.n_blocks else 0.0
    return {"preset": None,
            "macs": [float(macs[:b1].sum()), float(macs[b1:b2].sum()) + head2_m],
            "params": [float(params[:b1].sum()), float(params[b1:b2].sum()) + head2_p],
            "act_elems": [float(net.act_elems[0]), float(net.act_elems[b1]),
                          float(problem.model.n_classes)],
            "aux_macs": [0.0, float(net.aux_macs[b1]), 0.0],
            "aux_params": [0.0, float(net.aux_params[b1]), 0.0],
            "bits_per_element": problem.model.bits_per_element, "cuts": [1]}


@dataclass
class StageLog:
    """Status and wall time of each stage of one iterate."""

    status: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, status: str, seconds: float) -> None:
        self.status[stage] = status
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


# -- P: placement ------------------------------------------------------------------------------
#: the cost of moving a device off its current host, relative to the largest device-host
#: cost: it breaks the placement's ties toward the current association (so that the loop
#: settles where moves gain nothing) and is too small to outweigh any real saving
STICKINESS = 1e-6


def placement_problem(problem, workload, *, latency: bool = True, current=None):
    """The ``hfl`` problem of the system's devices and hosts with edge loads ``workload``:
    capacities ``R_m``, the device-host costs, the edge costs, ``l`` and ``rho``; with
    ``placement.beta > 0`` (and ``latency``) hfl's latency-aware objective, the hosts as
    M/M/1 queues at their service rate of the first candidate cut. ``current`` (an
    association) adds :data:`STICKINESS` to every other host of each associated device."""
    from jointopt.solvers.hfl.problem import HFLProblem

    h, tr = problem.hosts, problem.training
    costs = problem.device_costs
    if current is not None:
        costs = costs + STICKINESS * max(1.0, float(costs.max()))
        on = np.flatnonzero(current >= 0)
        costs[on, current[on]] -= STICKINESS * max(1.0, float(problem.device_costs.max()))
    data = {"name": f"{problem.name}/placement", "devices": problem.N, "hosts": problem.M,
            "workload": np.asarray(workload, float), "capacities": h.capacity,
            "edge_costs": h.edge_cost, "device_costs": costs,
            "local_to_global_ratio": tr.local_to_global_ratio,
            "participation_ratio": tr.participation_ratio,
            "accounting": {"model_size_mb": problem.model_size_mb, "rounds_hfl": tr.rounds}}
    if latency and problem.placement.beta > 0:
        data["latency"] = {"beta": problem.placement.beta, "delay": problem.delay,
                           "cloud_delay": problem.cloud.rtt,
                           "service_rate": problem.host_service_rate(problem.cuts[0])
                           if problem.mode != "device_only" else h.capacity / 0.9}
    return HFLProblem.from_dict(data)


def run_placement(problem, workload, *, capacitated: bool = True, current=None):
    """Solve the placement; returns ``(association, result)``. A placement the solver
    cannot make feasible raises ``InfeasibleError`` (family capacity or participation)."""
    fixed = problem.placement.association
    if fixed is not None:
        return np.asarray(fixed, dtype=np.int64), None
    prob = placement_problem(problem, workload, latency=capacitated, current=current)
    method = problem.placement.resolved_method(problem.N, problem.M)
    options = {"time_limit": problem.placement.time_limit}
    if not capacitated:
        options["uncapacitated"] = True
    res = prob.solve(method=method, **options)
    diag = res.diagnostics
    ok = diag["feasible"] if capacitated else diag["participants"] >= diag["required"]
    if not ok:
        raise prob.infeasible_by_solver()
    return np.asarray(res.decisions["association"], dtype=np.int64), res


def associate_free(problem, association, workload) -> np.ndarray:
    """The association with the devices the placement left out joined to an open host that
    costs them nothing (device-host cost 0) while its capacity takes their edge load
    ``workload``, most requests first [project choice]. hfl needs only ``floor(rho N)``
    participants and is indifferent to free ones; the system objective is not: a device
    left out sends all its requests to the cloud. The training communication is unchanged.
    A user-fixed association is kept as given."""
    a = np.asarray(association, dtype=np.int64).copy()
    out = np.flatnonzero(a < 0)
    if out.size == 0 or problem.placement.association is not None:
        return a
    on = a >= 0
    is_open = np.zeros(problem.M, bool)
    is_open[a[on]] = True
    load = np.bincount(a[on], weights=workload[on], minlength=problem.M)
    cap = problem.hosts.capacity * (1 + 1e-12)
    free = problem.device_costs <= 0
    lam = problem.devices.arrival_rate
    for n in out[np.argsort(-lam[out], kind="stable")]:
        ok = is_open & free[n] & (load + workload[n] <= cap)
        if ok.any():
            m = int(np.flatnonzero(ok)[np.argmin(load[ok])])
            a[n] = m
            load[m] += workload[n]
    return a


# -- S / E: serving ----------------------------------------------------------------------------
@dataclass
class Serving:
    """The serving stage's decisions per device: offload rate (share of requests sent up),
    the cut of its host (-1: none), its entropy threshold; the split results per host."""

    offload: np.ndarray
    cut: np.ndarray
    threshold: np.ndarray
    host_cut: np.ndarray
    results: dict[int, SolveResult]


def service_response(ctx: Context, idx: np.ndarray, served: np.ndarray, value, price, mu_ub
                     ) -> np.ndarray:
    """The service rate the allocation gives a device serving ``served`` requests/s: the
    joint allocator's own closed form for its service-rate block (``mu_closed_form``) with
    the on-time weight ``value * served`` and the price ``price`` per unit of rate from the
    current allocation, within ``[served (1 + margin), mu_ub]`` (``mu_ub``: what the hard
    cap leaves the block after the current participation and downloads, within
    ``mu_max``)."""
    from jointopt.solvers.jti.round import mu_closed_form

    tau = np.broadcast_to(ctx.tau[idx, None], served.shape).ravel()
    margin = 1.0 + ctx.problem.training.controller.service_margin
    flat = served.ravel()
    mu = mu_closed_form(np.broadcast_to(value[idx, None], served.shape).ravel() * flat,
                        np.broadcast_to(price[idx, None], served.shape).ravel(), flat, tau,
                        np.ones(flat.size, bool), flat * margin,
                        np.broadcast_to(mu_ub[idx, None], served.shape).ravel())
    return mu.reshape(served.shape)


def timely_curves(ctx: Context, idx: np.ndarray, *, device_factor, up_factor, value, price,
                  mu_ub) -> dict[int, list[sm.OffloadCurve]]:
    """Each device's timely offload curve at every candidate cut [project choice]: at
    threshold E, the kept part ``kept(E) P_dev(E) f_dev`` and the offloaded part
    ``offloaded(E) f_up``, with ``kept`` and ``offloaded`` the accuracy parts of the
    confidence model, ``P_dev`` the on-time fraction of the device's M/M/1 queue serving
    ``lambda (1 - q(E))`` at the service rate the allocation would give it
    (:func:`service_response`; 0 beyond what it can serve), ``f_dev`` the freshness of its
    copy and ``f_up`` the edge model's freshness. The host's on-time fraction is left to the
    split kind's on-time method (``timely``), which weighs it at the load the host's
    offloads make. Keys are the split problem's cuts."""
    p = ctx.problem
    lam, tau = ctx.lam[idx, None], ctx.tau[idx, None]
    out = {}
    for s in p.cuts:
        q = ctx.q[s][idx]
        served = lam * (1.0 - q)
        mu = service_response(ctx, idx, served, value, price, mu_ub)
        room = mu - served
        on_time = np.where((room > 0) & (served <= p.serve_max[idx, None]),
                           -np.expm1(-np.maximum(room, 0.0) * tau), 0.0)
        kept = ctx.kept[s][idx] * on_time * device_factor[idx, None]
        acc = kept + ctx.off[s][idx] * up_factor[idx, None]
        key = s if p.mode == "split" else 1
        out[key] = [sm.OffloadCurve(e=ctx.e, q=q[k], acc=acc[k], kept=kept[k])
                    for k in range(idx.size)]
    return out


def run_serving(ctx: Context, association, *, capacity: bool, factors: dict | None,
                log: StageLog) -> Serving:
    """One ``split_learning`` problem per open host over its devices with requests: the
    host's speed, its home delay as the per-offload overhead (a device whose host is not its
    home has its deadline shortened by the extra delay, so that its slack is exact) and,
    when ``capacity``, its capacity as the admission cap. ``factors`` (device_factor,
    up_factor, value, price) give the timely curves of the joint loop, solved by the split
    kind's on-time method ``timely`` (the request-weighted on-time accuracy the system
    objective counts); ``None`` the split kind's own synthetic curves and P-ACC (the siloed
    stage). Devices without a host send every request to the cloud; every device forwards
    at least what it cannot serve itself."""
    p = ctx.problem
    n = p.N
    offload = np.where(association < 0, 1.0, 0.0)
    cut = np.full(n, -1)
    threshold = np.full(n, np.nan)
    host_cut = np.full(p.M, -1)
    results: dict[int, SolveResult] = {}
    if p.mode == "device_only":
        log.add("serving", "none (device_only)", 0.0)
        return Serving(offload, cut, threshold, host_cut, results)
    t0 = time.perf_counter()
    statuses = []
    for m in np.unique(association[association >= 0]):
        members = np.flatnonzero((association == m) & (ctx.lam > 0))
        if members.size == 0:
            continue
        server = {"f_server": float(p.hosts.f_host[m]),
                  "tau0": float(p.hosts.delay_home[m]),
                  "max_load": float(p.hosts.capacity[m]) if capacity else None}
        extra = p.delay[members, m] - p.hosts.delay_home[m]
        sub = ctx.split_base.subset(ctx.pos[members], server=server,
                                    name=f"{p.name}/host{int(m)}",
                                    latency_budget=ctx.tau[members] - extra)
        if factors is None:
            res = sub.solve(method="exact")
        else:
            res = sub.solve(method="timely", curves=timely_curves(ctx, members, **factors))
        results[int(m)] = res
        statuses.append(res.status)
        s = ctx.system_cut(res.diagnostics["split"])
        host_cut[m] = s
        cut[members] = s
        offload[members] = np.asarray(res.decisions["q"], float)
        threshold[members] = np.asarray(res.decisions["e_th"], float)
    offload = np.maximum(offload, ctx.problem.forced_offload)
    offload[ctx.lam <= 0] = np.where(association[ctx.lam <= 0] < 0, 1.0, 0.0)
    worst = "optimal" if all(st == "optimal" for st in statuses) else "budget_violated"
    log.add("serving", worst if statuses else "no requests", time.perf_counter() - t0)
    return Serving(offload, cut, threshold, host_cut, results)


def run_exit_weights(ctx: Context, association, offload, log: StageLog):
    """Early-exit mode: ``cis_early_exit`` on the tree cloud -> used hosts -> devices the
    association induces, with the devices' requests and forwarded rates (hosts serve all
    they receive); the exit weights by ``training.exit_rule``, the per-exit forward costs of
    the model's network. ``None`` without requests or outside early-exit mode."""
    p = ctx.problem
    if p.mode != "early_exit" or not ctx.lam.sum() > 0:
        return None
    from jointopt.solvers.cis import CooperativeInferenceProblem

    t0 = time.perf_counter()
    net, (b1, b2) = p.net, p.model.exits
    flops = [float(net.flops_client(b) + net.flops_aux(b)) for b in (b1, b2)]
    flops.append(float(net.flops_total))
    tr = p.training
    w = p.devices.data_weight
    cis = CooperativeInferenceProblem.from_association(
        association, ctx.lam, ctx.lam * offload, device_data=tr.device_data * w / w.sum(),
        host_data=tr.host_data, cloud_data=tr.cloud_data, name=f"{p.name}/exits",
        training={"pi": tr.pi, "flops": flops, "rounds": tr.rounds})
    res = cis.solve(method=tr.exit_rule)
    log.add("exit_weights", res.status, time.perf_counter() - t0)
    return res


# -- A: allocation --------------------------------------------------------------------------------
@dataclass
class Allocation:
    """The allocation of one iterate, per device (zero for devices without a host)."""

    q: np.ndarray
    d: np.ndarray
    mu: np.ndarray
    K_next: float
    ebar_next: np.ndarray
    use: np.ndarray
    nu: np.ndarray
    result: SolveResult | None


def run_allocation(ctx: Context, association, offload, log: StageLog, *,
                   upstream: float = 0.0) -> Allocation:
    """``joint_training_inference`` over the devices with a host, each serving
    ``lambda (1 - offload)`` itself; devices without a host neither train nor serve.

    ``upstream`` [project choice]: the requests per second the edge and the cloud answer on
    time with the global model. The allocator values training only through the requests
    the devices serve; the upper tiers run the freshly aggregated model too, so the joint
    loop hands them to it as one more client that always downloads and costs nothing
    (:attr:`Context.jti_base`): training then keeps its value when requests move to the
    edge. The siloed plan passes 0 (the allocator alone)."""
    p = ctx.problem
    n = p.N
    members = np.flatnonzero(association >= 0)
    zeros = np.zeros(n)
    K = p.training.state.K
    if members.size == 0:
        log.add("allocation", "no device", 0.0)
        return Allocation(zeros, zeros.copy(), zeros.copy(), K, np.full(n, K), zeros.copy(),
                          zeros.copy(), None)
    t0 = time.perf_counter()
    served = np.minimum(ctx.lam * (1.0 - offload), p.serve_max)
    rows = np.append(members, n)
    sub = ctx.jti_base.subset(rows, arrival_rate=np.append(served[members], upstream),
                              name=f"{p.name}/allocation")
    res = sub.solve(method="fast")
    log.add("allocation", res.status, time.perf_counter() - t0)
    q, d, mu, use, nu = (zeros.copy() for _ in range(5))
    ebar = np.full(n, K, dtype=float)
    dev = slice(0, members.size)     # the last client of the subset is the upstream one
    q[members] = res.decisions["q"][dev]
    d[members] = res.decisions["d"][dev]
    mu[members] = res.decisions["mu"][dev]
    use[members] = res.diagnostics["resource_use"][dev]
    ebar[members] = res.diagnostics["expected_error_next"][dev]
    nu[members] = res.diagnostics["cap_multiplier"][dev]
    return Allocation(q, d, mu, float(res.diagnostics["K_next"]), ebar, use, nu, res)


def placement_report(problem, result) -> dict:
    """What the placement of a plan used and how good it is: ``method`` (``highs``: exact;
    ``heuristic``: hfl's heuristic with its staged lower bounds; ``given``: the user's
    association), the ``rule`` that chose it, the hfl ``status`` (``optimal``,
    ``time_limit``, ``heuristic`` ...), its per-round communication ``objective``, the
    ``lower_bound`` and the relative ``gap`` between them (0 when proved optimal)."""
    pl = problem.placement
    pairs = problem.N * problem.M
    if pl.association is not None:
        return {"method": "given", "rule": "placement.association fixes it", "pairs": pairs}
    rule = (f"placement.method = 'auto': exact (highs) up to placement.exact_limit = "
            f"{pl.exact_limit} device-host pairs, heuristic beyond; this system has {pairs}"
            if pl.method == "auto" else f"placement.method = {pl.method!r}")
    out = {"method": pl.resolved_method(problem.N, problem.M), "rule": rule, "pairs": pairs,
           "time_limit_s": pl.time_limit}
    if result is not None:
        d = result.diagnostics
        out.update(status=result.status, objective=float(result.objective),
                   lower_bound=float(d.get("lower_bound", float("nan"))),
                   gap=float(d.get("mip_gap", float("nan"))),
                   solve_time_s=float(result.solve_time_s))
    return out


def infeasible_note(exc: InfeasibleError) -> str:
    return f"{exc.constraint}: {exc.message}"
