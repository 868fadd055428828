"""Run the estimates of the deployment planner on a validated scenario.

Orchestration only (**project choice**): the formulas live in :mod:`jointopt.models.planner`,
rounds to target in :mod:`jointopt.models.convergence`, the training-inference split in the
joint allocator :class:`jointopt.solvers.jti.JointTrainingInferenceProblem`.

Provenance: every number records the input fields it depends on, directly or through the
numbers it is computed from (``"@name"`` in an input list stands for all inputs of the
estimate ``name``). Its tag is the weakest tag among those inputs (assumed < simulated <
measured): a field given as ``{value, tag}`` keeps its tag, a bare number or a schema
default counts as assumed, convergence-fit constants as simulated. The assumptions register
lists every assumed input an estimate or a gate threshold uses, and every default applied.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from jointopt.models import planner as pm
from jointopt.models.convergence import ConvergenceModel
from jointopt.models.errors import InfeasibleError, ValidationError
from jointopt.solvers.planner import hierarchy
from jointopt.solvers.planner.problem import TAGS, DeploymentPlanProblem

KAPPA = 3.0          # [peer] FedScale: backward ~ 2x forward
SPREAD_SIGMA = 0.6   # [peer] FedScale log-normal option
N_P_MIN = 5_000      # single-task Monte-Carlo draws for p-bar and per-task means: 10 n_mc

#: origin labels of schema defaults in the assumptions register (others: project choice)
DEFAULT_ORIGIN = {
    "bw_sigma": "no spread of link rates",
    "interference": "no inference slow-down while training",
    "os_supported": "OS/runtime taken as supported",
    "header_bytes": "no per-message header",
    "t_ovh_s": "no per-task fixed overhead",
    "windows": "training allowed in every UTC hour",
    "reservation": "server reserved only in the training windows",
    "confidence": "confidence of the over-selection count",
    "n_seeds": "seeds in the reported Monte-Carlo spread",
}
#: pseudo-inputs: modelling choices that numbers depend on (tagged assumed)
MODEL_CHOICES = {
    "inference queueing": ("M/M/1", "latency x 1/(1 - lambda/mu) [project choice]"),
}
#: gate thresholds that are scenario inputs (listed in the register when assumed)
THRESHOLD_SECTIONS = ("budgets.", "inference.", "server.")


@dataclass
class Estimates:
    """All estimated numbers: ``values`` name -> float (or ``{"p50", "p90"}``), ``meta`` name ->
    (tag, method, assumed_inputs, unit); per-class and per-hour tables; flags. ``inputs``
    holds every estimate's input fields; ``extrapolated`` one record per input of the plan
    that the convergence fit's calibration does not cover (``input``, ``value``,
    ``fitted``, ``text``)."""

    values: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, dict] = field(default_factory=dict)
    inputs: dict[str, set] = field(default_factory=dict)
    per_class: dict[str, list] = field(default_factory=dict)
    per_class_meta: dict = field(default_factory=dict)
    hourly: dict[str, list] = field(default_factory=dict)
    assumptions: list[dict] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    round_times: np.ndarray | None = None
    allocator: dict = field(default_factory=dict)
    extrapolated: list[dict] = field(default_factory=list)
    n_mc: int = 0
    n_outer: int = 0
    seed: int = 0

    def __getitem__(self, key):
        return self.values[key]


class _Tagger:
    """Weakest tag over input fields (transitively through ``@name``): tagged fields keep
    their tag, convergence-fit constants are ``simulated``, everything else (bare numbers,
    schema defaults, defaults the planner fills in) is ``assumed``."""

    def __init__(self, problem: DeploymentPlanProblem, defaults_used: set[str]):
        self.p = problem
        self.defaults = defaults_used
        self.kept = list(range(len(problem.device_classes)))
        self.inputs: dict[str, set[str]] = {}

    def tag_of(self, path: str) -> str:
        if path in self.defaults:
            return "assumed"
        if path in self.p.provenance:
            return self.p.provenance[path]
        if path.startswith("convergence."):
            return "simulated"
        return "assumed"

    def expand(self, paths) -> set[str]:
        n = len(self.p.device_classes)
        r = len(self.p.population.regions)
        out: set[str] = set()
        for path in paths:
            if path.startswith("@"):
                out |= self.inputs[path[1:]]
            elif "[*]" in path and path.startswith("device_classes"):
                out |= {path.replace("[*]", f"[{i}]") for i in range(n) if i in self.kept}
            elif "[*]" in path:
                out |= {path.replace("[*]", f"[{i}]") for i in range(r)}
            else:
                out.add(path)
        return out

    def meta(self, name: str, paths, method: str, unit: str = "") -> dict:
        leaves = self.expand(paths)
        self.inputs[name] = leaves
        tags = [self.tag_of(q) for q in leaves] or ["measured"]
        tag = min(tags, key=TAGS.index)
        return {"tag": tag, "method": method, "unit": unit,
                "assumed_inputs": sorted(q for q in leaves if self.tag_of(q) == "assumed")}


def value_at(problem: DeploymentPlanProblem, path: str):
    """The scenario value at a dotted field path (``device_classes[1].bw_sigma``)."""
    node: Any = problem
    for part in path.split("."):
        name, _, idx = part.partition("[")
        node = getattr(node, name) if not isinstance(node, dict) else node.get(name)
        if idx:
            node = node[int(idx.rstrip("]"))]
    return node.model_dump() if hasattr(node, "model_dump") else node


POOL_IN = ["population.n_devices", "population.static_eligibility", "population.u_max",
           "population.regions[*].availability", "population.regions[*].share",
           "population.regions[*].utc_offset_h", "@fleet_coverage"]
CONV_IN = ["convergence.a", "convergence.b", "convergence.c", "convergence.rounds_scale",
           "convergence.proxy_clients", "convergence.error0", "convergence.target_error"]
T_AGG_IN = ["server.agg_cpu_s_per_step", "server.agg_cpu_s_per_update",
            "server.cores_per_instance", "training_plan.K"]
POWER_IN = ["device_classes[*].p_cpu_w", "device_classes[*].p_rx_w", "device_classes[*].p_tx_w"]
RESERVATION_IN = ["server.reservation", "training_plan.windows", "server.n_instances"]
COST_IN = ["cost_rates.instance_hour_usd", "cost_rates.cpu_hour_usd", "cost_rates.egress_gb_usd",
           "cost_rates.ingress_gb_usd", "cost_rates.storage_gb_month_usd",
           "cost_rates.cloud_infer_per_1k_usd", "cost_rates.backbone_gb_usd",
           "server.agg_cpu_s_per_update", "server.agg_cpu_s_per_step", "model.checkpoint_bytes",
           "model.checkpoints_kept", "inference.cloud_requests_per_day",
           "inference.requests_per_device_day", "population.n_devices", "device_classes[*].share"]


def _work_inputs(problem: DeploymentPlanProblem) -> list[str]:
    tp = problem.training_plan
    if tp.local_epochs is None:
        return ["training_plan.local_steps", "training_plan.batch_size"]
    d = tp.samples_per_client
    keys = {"constant": ["value"], "lognormal": ["mean", "sigma"], "empirical": ["values"]}
    return ["training_plan.local_epochs"] + [f"training_plan.samples_per_client.{k}"
                                             for k in keys[d.dist]]


def _work_sampler(problem: DeploymentPlanProblem):
    tp = problem.training_plan
    if tp.local_epochs is None:
        w = float(tp.local_steps * tp.batch_size)
        return (lambda rng, shape: np.full(shape, w)), w
    d = tp.samples_per_client
    e = float(tp.local_epochs)
    if d.dist == "constant":
        w = e * d.value
        return (lambda rng, shape: np.full(shape, w)), w
    if d.dist == "lognormal":
        mu = math.log(d.mean) - 0.5 * d.sigma**2
        return (lambda rng, shape: e * rng.lognormal(mu, d.sigma, shape)), e * d.mean
    vals = np.asarray(d.values, dtype=float)
    return (lambda rng, shape: e * rng.choice(vals, shape)), e * float(vals.mean())


# Monte-Carlo draws are pure functions of the generator state and the task inputs: what-if
# points, tornado ends, lever candidates and the seed spread that share them reuse them
# (memoised on the exact inputs and state; the generator is left where the draw left it).
_DRAW_CACHE: OrderedDict = OrderedDict()
_DRAW_CACHE_SIZE = 32


def clear_draw_cache() -> None:
    """Forget the memoised Monte-Carlo draws (benchmarks time cold runs with it)."""
    _DRAW_CACHE.clear()


def _memo_draw(key: tuple, rng: np.random.Generator, fn):
    full = (key, json.dumps(rng.bit_generator.state, sort_keys=True))
    hit = _DRAW_CACHE.get(full)
    if hit is not None:
        _DRAW_CACHE.move_to_end(full)
        rng.bit_generator.state = hit[1]
        return hit[0]
    out = fn()
    _DRAW_CACHE[full] = (out, rng.bit_generator.state)
    if len(_DRAW_CACHE) > _DRAW_CACHE_SIZE:
        _DRAW_CACHE.popitem(last=False)
    return out


def _task_key(problem: DeploymentPlanProblem, fleet: pm.Fleet, s_d: float, s_u: float) -> tuple:
    tp = problem.training_plan
    work = (tp.local_epochs, tp.local_steps, tp.batch_size,
            tp.samples_per_client.model_dump_json() if tp.samples_per_client else None)
    arrays = tuple(np.asarray(getattr(fleet, f)).tobytes() for f in fleet.__dataclass_fields__)
    return (arrays, s_d, s_u, work, tp.t_ovh_s, tp.timeout_s, problem.population.dwell_mean_s)


def fleet_fitness(problem: DeploymentPlanProblem) -> tuple[np.ndarray, list[str]]:
    """G1 per class: fits in memory, crash rate within budget, OS supported (and not
    excluded by the plan). Returns the keep mask and the reasons of dropped classes."""
    b = problem.budgets
    keep, why = [], []
    for c in problem.device_classes:
        r = []
        if c.peak_train_mem_mb > c.mem_cap_frac * c.ram_mb:
            r.append(f"{c.name}: peak memory {c.peak_train_mem_mb:g} MB > "
                     f"{c.mem_cap_frac:g} x {c.ram_mb:g} MB")
        if b.max_crash_rate is not None and c.crash_rate > b.max_crash_rate:
            r.append(f"{c.name}: crash rate {c.crash_rate:g} > max_crash_rate "
                     f"{b.max_crash_rate:g}")
        if not c.os_supported:
            r.append(f"{c.name}: OS/runtime not supported")
        keep.append(not r)
        why += r
    return np.array(keep), why


def build_fleet(problem: DeploymentPlanProblem, keep: np.ndarray, defaults: set[str],
                assumptions: list[dict]) -> pm.Fleet:
    cls = [c for c, k in zip(problem.device_classes, keep, strict=True) if k]
    idx = [i for i, k in enumerate(keep) if k]
    tps, sig = [], []
    for i, c in zip(idx, cls, strict=True):
        if c.train_s_per_sample is None:
            tps.append(KAPPA * c.infer_s_per_request)
            defaults.add(f"device_classes[{i}].train_s_per_sample")
            assumptions.append({"field": f"device_classes[{i}].train_s_per_sample",
                                "value": KAPPA * c.infer_s_per_request,
                                "origin": "default kappa = 3 x infer_s_per_request "
                                          "[peer] FedScale"})
        else:
            tps.append(c.train_s_per_sample)
        if c.spread_sigma is None:
            sig.append(SPREAD_SIGMA)
            defaults.add(f"device_classes[{i}].spread_sigma")
            assumptions.append({"field": f"device_classes[{i}].spread_sigma", "value": 0.6,
                                "origin": "default [peer] FedScale"})
        else:
            sig.append(c.spread_sigma)
    share = np.array([c.share for c in cls])
    a = lambda k: np.array([getattr(c, k) for c in cls], dtype=float)  # noqa: E731
    return pm.Fleet(share / share.sum(), np.array(tps), np.array(sig), a("bw_down_mbps"),
                    a("bw_up_mbps"), a("bw_sigma"), a("crash_rate"), a("p_cpu_w"), a("p_rx_w"),
                    a("p_tx_w"))


def calibration_coverage(problem: DeploymentPlanProblem, C: int,
                         mean_work: float) -> list[dict]:
    """The plan's inputs that the convergence fit's calibration record does not cover
    (**project choice** for "covers"): the plan's mode must be among the runs' modes; K
    within the K range of the runs of that mode; for async, C within the C range of the
    (K, C) runs; for sync runs that record C, the over-selection C/K within their range;
    both compressions within ``compression_range``; the mean local work within
    ``local_work_range`` when given. Each record names the input, its value and what the
    fit covers; any record caps the verdict at CONDITIONAL."""
    cv, tp, mdl = problem.convergence, problem.training_plan, problem.model
    out: list[dict] = []

    def flag(inp, value, fitted, text):
        out.append({"input": inp, "value": value, "fitted": fitted, "text": text})

    runs = [r for r in cv.calibration if r.mode == tp.mode]
    modes = sorted({r.mode for r in cv.calibration if r.mode})
    if not runs:
        flag("training_plan.mode", tp.mode, modes,
             f"mode = {tp.mode!r}: no calibration run in this mode (runs cover "
             f"{', '.join(modes)})" if modes else
             f"mode = {tp.mode!r}: the calibration runs do not record their mode")
        runs = list(cv.calibration)
    ks = [r.K for r in runs]
    K = tp.K
    if not min(ks) <= K <= max(ks):
        flag("training_plan.K", K, [min(ks), max(ks)],
             f"K = {K} outside the fitted range [{min(ks)}, {max(ks)}]")
    cs = [r.C for r in runs if r.C is not None]
    if tp.mode == "async":
        if not cs:
            flag("training_plan.C", C, None,
                 f"C = {C}: the calibration runs do not record C (async needs (K, C) pairs)")
        elif not min(cs) <= C <= max(cs):
            flag("training_plan.C", C, [min(cs), max(cs)],
                 f"C = {C} outside the fitted range [{min(cs)}, {max(cs)}]")
    elif cs and len(cs) == len(runs):
        ratios = [r.C / r.K for r in runs]
        lo, hi = min(ratios), max(ratios)
        if not lo - 1e-9 <= C / K <= hi + 1e-9:
            flag("training_plan.C", C, [lo, hi],
                 f"over-selection C/K = {C}/{K} = {C / K:.4g} outside the fitted range "
                 f"[{lo:.4g}, {hi:.4g}]")
    lo, hi = cv.compression_range[0], cv.compression_range[-1]
    for key in ("compression_up", "compression_down"):
        v = getattr(mdl, key)
        if not lo <= v <= hi:
            flag(f"model.{key}", v, [lo, hi],
                 f"{key} = {v:g} outside the fitted range [{lo:g}, {hi:g}]")
    if cv.local_work_range is not None and not (
            cv.local_work_range[0] <= mean_work <= cv.local_work_range[-1]):
        flag(_work_inputs(problem)[0], mean_work, list(cv.local_work_range),
             f"local work {mean_work:g} samples outside the fitted range "
             f"{cv.local_work_range}")
    return out


def _register(problem: DeploymentPlanProblem, tg: _Tagger, planner_defaults: list[dict],
              n_mc: int, n_outer: int, seed: int) -> list[dict]:
    """The assumptions register: every assumed input that an estimate or a gate threshold
    uses (tagged assumed, bare, or a schema default) and every default applied, once each."""
    entries: dict[str, dict] = {}
    for a in planner_defaults:
        entries[a["field"]] = a
    for path, value in problem.defaults_applied():
        key = path.rsplit(".", 1)[-1]
        label = DEFAULT_ORIGIN.get(key, "[project choice]")
        entries.setdefault(path, {"field": path, "value": value,
                                  "origin": f"default: {label}"})
    used: set[str] = set()
    for leaves in tg.inputs.values():
        used |= leaves
    used |= {f"budgets.{f}" for f in type(problem.budgets).model_fields
             if getattr(problem.budgets, f) is not None}
    used |= {"inference.latency_slo_p95_ms", "inference.min_on_device_share",
             "server.max_cpu_util", "server.mem_gb"}
    for path in sorted(used):
        if path in entries or tg.tag_of(path) != "assumed":
            continue
        if path in MODEL_CHOICES:
            value, origin = MODEL_CHOICES[path]
            entries[path] = {"field": path, "value": value, "origin": origin}
            continue
        tagged = problem.provenance.get(path) == "assumed"
        entries[path] = {"field": path, "value": value_at(problem, path),
                         "origin": "tagged assumed in the scenario" if tagged
                         else "bare value (untagged): assumed"}
    entries["monte_carlo"] = {"field": "monte_carlo",
                              "value": {"n_mc": n_mc, "n_outer": n_outer, "seed": seed},
                              "origin": "[project choice]"}
    return sorted(entries.values(), key=lambda a: a["field"])


def estimate(problem: DeploymentPlanProblem, *, n_mc: int | None = None,
             n_outer: int | None = None, seed: int | None = None) -> Estimates:
    """All estimates of ``problem`` (Monte Carlo with the given sizes and seed)."""
    mc = problem.monte_carlo
    n_mc = int(n_mc or mc.n_mc)
    n_outer = int(n_outer or mc.n_outer)
    seed = mc.seed if seed is None else int(seed)
    rng = np.random.default_rng(seed)
    tp, pop, mdl, sv, cr, inf, bud = (problem.training_plan, problem.population, problem.model,
                                      problem.server, problem.cost_rates, problem.inference,
                                      problem.budgets)
    est = Estimates(n_mc=n_mc, n_outer=n_outer, seed=seed)
    N_P = max(N_P_MIN, 10 * n_mc)
    defaults: set[str] = set()
    A: list[dict] = []  # defaults the planner fills in for absent optional inputs
    if pop.campaign_unique_frac is None:
        defaults.add("population.campaign_unique_frac")
        A.append({"field": "population.campaign_unique_frac", "value": pop.daily_unique_frac,
                  "origin": "default = daily_unique_frac (conservative) [project choice]"})
    if tp.mode == "async" and tp.max_staleness is None:
        A.append({"field": "training_plan.max_staleness", "value": None,
                  "origin": "default: no staleness limit, no update discarded"})
    if problem.convergence.local_work_range is None:
        A.append({"field": "convergence.local_work_range", "value": None,
                  "origin": "not given: the plan's local work is not checked against the fit"})
    tg = _Tagger(problem, defaults)
    V, M = est.values, est.meta

    def put(name, value, paths, method, unit=""):
        V[name] = value
        M[name] = tg.meta(name, paths, method, unit)

    # G1 fitness and the kept fleet -----------------------------------------------------
    keep_fit, why = fleet_fitness(problem)
    names = [c.name for c in problem.device_classes]
    keep = keep_fit & np.array([n not in tp.exclude_classes for n in names])
    shares = np.array([c.share for c in problem.device_classes])
    fit_in = ["device_classes[*].peak_train_mem_mb", "device_classes[*].ram_mb",
              "device_classes[*].mem_cap_frac", "device_classes[*].crash_rate",
              "device_classes[*].os_supported", "device_classes[*].share"]
    if bud.max_crash_rate is not None:
        fit_in.append("budgets.max_crash_rate")
    put("fleet_coverage", float(shares[keep_fit].sum()), fit_in, "analytic", "fraction")
    est.flags += why
    coverage = float(shares[keep].sum())
    put("coverage_in_pool", coverage, ["@fleet_coverage"] + (
        ["training_plan.exclude_classes"] if tp.exclude_classes else []), "analytic", "fraction")
    if not keep.any():
        V["no_fleet"] = True
        est.assumptions = _register(problem, tg, A, n_mc, n_outer, seed)
        return est
    fleet = build_fleet(problem, keep, defaults, A)
    tg.kept = [i for i, k in enumerate(keep) if k]

    # 4.1 payloads ------------------------------------------------------------------------
    s_d, s_u = pm.payload_bytes(mdl.n_params, mdl.n_params_trainable, mdl.bytes_per_param_down,
                                mdl.bytes_per_param_up, mdl.compression_down, mdl.compression_up,
                                mdl.secagg_expansion, mdl.header_bytes)
    put("payload_down_bytes", s_d, ["model.n_params", "model.bytes_per_param_down",
                                    "model.compression_down", "model.header_bytes"],
        "analytic", "B")
    put("payload_up_bytes", s_u, ["model.n_params_trainable", "model.bytes_per_param_up",
                                  "model.compression_up", "model.secagg_expansion",
                                  "model.header_bytes"], "analytic", "B")
    time_in = ["device_classes[*].share", "device_classes[*].train_s_per_sample",
               "device_classes[*].spread_sigma", "device_classes[*].bw_down_mbps",
               "device_classes[*].bw_up_mbps", "device_classes[*].bw_sigma",
               "device_classes[*].crash_rate", "population.dwell_mean_s",
               "training_plan.timeout_s", "training_plan.t_ovh_s", "@payload_down_bytes",
               "@payload_up_bytes", "@coverage_in_pool", *_work_inputs(problem)]
    hier = hierarchy.place(problem, s_d) if problem.hierarchy is not None else None

    # 4.2-4.3 single tasks ------------------------------------------------------------------
    sampler, mean_work = _work_sampler(problem)
    task_key = _task_key(problem, fleet, s_d, s_u)
    d1 = _memo_draw(("tasks", N_P, task_key), rng, lambda: pm.draw_tasks(
        rng, (N_P,), fleet, s_d, s_u, sampler(rng, (N_P,)), t_ovh=tp.t_ovh_s,
        timeout=tp.timeout_s, dwell_mean=pop.dwell_mean_s))
    n_succ = int(d1.success.sum())
    p_bar = n_succ / N_P
    mc1 = f"montecarlo({N_P})"
    put("p_success", p_bar, time_in, mc1, "fraction")
    p_low = pm.success_lower_bound(n_succ, N_P, mc.confidence)
    put("p_success_lower", p_low, ["@p_success"],
        f"clopper-pearson({mc.confidence:g}) of {mc1}", "fraction")
    n_cls = len(fleet.share)
    cnt = np.maximum(np.bincount(d1.cls, minlength=n_cls), 1)
    p_c = np.bincount(d1.cls, weights=d1.success, minlength=n_cls) / cnt
    put("task_time_mean_s", float(d1.T.mean()), time_in, mc1, "s")
    put("task_time_p90_s", float(np.percentile(d1.T, 90)), time_in, mc1, "s")
    mean_occ = float(d1.end.mean())
    dn1, cmp1, up1 = d1.spent()
    e1 = pm.task_energy_j(fleet.p_cpu_w[d1.cls], fleet.p_rx_w[d1.cls], fleet.p_tx_w[d1.cls],
                          dn1, cmp1, up1)
    tcmp_c = np.bincount(d1.cls, weights=d1.t_cmp, minlength=n_cls) / cnt
    tdn_c = np.bincount(d1.cls, weights=d1.t_dn, minlength=n_cls) / cnt

    # G3 pool ------------------------------------------------------------------------------
    regs = pop.regions
    pool = pm.hourly_pool(pop.n_devices, pop.static_eligibility, [r.share for r in regs],
                          [r.utc_offset_h for r in regs], [r.availability for r in regs],
                          coverage)
    cap = pop.u_max * pool
    win = np.zeros(24, bool)
    win[list(set(tp.windows))] = True
    est.hourly["pool"] = pool.tolist()
    est.hourly["cap"] = cap.tolist()
    est.hourly["window"] = win.tolist()
    pool_in = [*POOL_IN, "@coverage_in_pool"]
    put("max_hourly_capacity", float(cap.max()), pool_in, "analytic", "devices")

    # convergence adapter -----------------------------------------------------------------
    cv = problem.convergence
    model = ConvergenceModel.from_fitted(cv.a, cv.b, cv.c)
    K = tp.K
    R_med = float(pm.rounds_to_target(model, K, cv.proxy_clients, cv.error0, cv.target_error)[0])
    R_med *= cv.rounds_scale
    if not np.isfinite(R_med):
        raise InfeasibleError("convergence target",
                              f"convergence.target_error: {cv.target_error:g} is below the fitted "
                              f"model's floor at K = {K}; no number of rounds reaches it",
                              field="convergence.target_error")
    sigma = cv.rounds_sigma
    if sigma is None:
        sigma = pm.rounds_spread(model, [r.K for r in cv.calibration],
                                 [r.rounds_to_target for r in cv.calibration], cv.proxy_clients,
                                 cv.error0, cv.target_error)
    put("rounds_sigma", sigma, CONV_IN + ["convergence.rounds_sigma" if cv.rounds_sigma
                                          is not None else "convergence.calibration"], "fit")
    conv_in = [*CONV_IN, "training_plan.K", "@rounds_sigma"]
    z = rng.standard_normal(n_outer)
    R_draw = np.maximum(1.0, R_med * np.exp(sigma * z))
    run_ids = [r.id for r in cv.calibration]
    est.values["convergence_runs"] = run_ids
    reserved_h_per_day = 24.0 if sv.reservation == "always_on" else float(win.sum())

    # modes --------------------------------------------------------------------------------
    if tp.mode == "sync":
        if tp.C is not None:
            C = tp.C
            put("C", C, ["training_plan.C"], "input")
        elif tp.omega is not None:
            C = int(math.ceil(tp.omega * K))
            put("C", C, ["training_plan.omega", "training_plan.K"], "analytic")
        else:
            # solved at the lower confidence bound of p-bar: the round-failure limit then
            # holds with the stated confidence whatever the Monte-Carlo noise
            C = pm.overselection(K, p_low, bud.max_round_failure_prob)
            if C < 0:
                C = K
                est.flags.append("over-selection: no C reaches the round-success level "
                                 "(p_success = 0)")
            put("C", C, ["@p_success_lower", "training_plan.K",
                         "budgets.max_round_failure_prob"],
                f"binomial at clopper-pearson({mc.confidence:g})")
        put("round_failure_binomial",
            {"estimate": pm.round_failure_binomial(K, C, p_bar),
             "upper_bound": pm.round_failure_binomial(K, C, p_low),
             "confidence": mc.confidence},
            ["@C", "@p_success_lower", "training_plan.K"],
            f"binomial at p_success and its clopper-pearson({mc.confidence:g}) bound",
            "fraction")
        ok_h = win & (cap >= C)
        n_ok = int(ok_h.sum())
        est.hourly["ok"] = ok_h.tolist()
        put("hours_ok_per_day", n_ok, pool_in + ["training_plan.windows", "@C"], "analytic",
            "h")
        t_agg = sv.agg_cpu_s_per_step + K * sv.agg_cpu_s_per_update / sv.cores_per_instance
        if hier is not None:  # edge hosts aggregate; the cloud every l-th round
            t_agg = hier.edge_round_overhead_s(s_d, s_u, sv, problem.hierarchy)
        sr = _memo_draw(("rounds", n_mc, K, C, task_key), rng, lambda: pm.sync_rounds(
            rng, n_mc, K, C, fleet, s_d, s_u, sampler, t_ovh=tp.t_ovh_s, timeout=tp.timeout_s,
            dwell_mean=pop.dwell_mean_s, t_agg=0.0))
        # the server step only shifts every round: added here so that plans differing only
        # in it share their draws
        sr = replace(sr, round_times=sr.round_times + t_agg, mean=sr.mean + t_agg,
                     p50=sr.p50 + t_agg, p90=sr.p90 + t_agg)
        est.round_times = sr.round_times
        mcs = f"montecarlo({n_mc})"
        put("round_failure_prob", sr.q_fail, time_in + ["@C", "training_plan.K"], mcs,
            "fraction")
        put("round_time", {"p50": sr.p50, "p90": sr.p90, "mean": sr.mean},
            time_in + ["@C"] + T_AGG_IN, mcs, "s")
        A_draw = pm.active_time(rng, R_draw, sr.mean, sr.var, sr.round_times)
        days = pm.sync_days(A_draw, n_ok)
        A_med = pm.active_time(rng, np.full(n_outer, R_med), sr.mean, sr.var, sr.round_times)
        days_tm = pm.sync_days(A_med, n_ok)
        per_unit = {"tasks": sr.tasks_started, "uploads": sr.uploads, "dev_s": sr.device_s,
                    "bytes_down": sr.bytes_down, "bytes_up": sr.bytes_up,
                    "e_dn": sr.energy_stage_j[0], "e_cmp": sr.energy_stage_j[1],
                    "e_up": sr.energy_stage_j[2], "accepted": float(K), "steps": 1.0}
        units = R_draw
        put("rounds_to_target", {"p50": float(np.percentile(R_draw, 50)),
                                 "p90": float(np.percentile(R_draw, 90)), "median_fit": R_med},
            conv_in, f"fit+montecarlo({n_outer})", "rounds")
        units_ref = "@rounds_to_target"
        if hier is not None:
            hierarchy.record(put, hier, problem.hierarchy, s_d, s_u, sv, V["rounds_to_target"])
        rounds_per_s_peak = 1.0 / sr.mean
        cpu_util = ((K * sv.agg_cpu_s_per_update + sv.agg_cpu_s_per_step) * rounds_per_s_peak
                    / (sv.n_instances * sv.cores_per_instance))
        util_in = ["@round_time", "server.n_instances", *T_AGG_IN]
        buffered = 0 if sv.streaming_aggregation else K
        cap_check = C
        per_unit_in = ["@round_time", "@round_failure_prob"]
        days_in = ["@round_time", "@hours_ok_per_day", "@rounds_to_target"]
    else:
        C = int(tp.C)
        put("C", C, ["training_plan.C"], "input")
        T_succ = d1.T[d1.success]
        slots = np.where(win, np.minimum(C, np.floor(cap)), 0.0)
        lam_acc_h = np.zeros(24)
        lam_h = np.zeros(24)
        cache: dict[float, pm.AsyncRate] = {}
        for h in range(24):
            s = float(slots[h])
            if s not in cache:
                cache[s] = pm.async_rate(s, p_bar, mean_occ, T_succ, K, tp.max_staleness)
            lam_acc_h[h] = cache[s].lam_acc
            lam_h[h] = cache[s].lam
        full = pm.async_rate(C, p_bar, mean_occ, T_succ, K, tp.max_staleness)
        est.hourly["slots"] = slots.tolist()
        est.hourly["accepted_per_hour"] = (3600 * lam_acc_h).tolist()
        if (slots < C)[win].any():
            est.extrapolated.append({
                "input": "training_plan.windows", "value": sorted(set(tp.windows)),
                "fitted": None, "text": "windows or pool throttle concurrency below C = "
                                        f"{C} in some hours (the fit assumed C slots)"})
        mcs = f"montecarlo({N_P})"
        rate_in = time_in + ["@C", "training_plan.K", "training_plan.max_staleness"]
        put("async_rate_per_s", full.lam, rate_in, mcs, "1/s")
        put("async_accepted_rate_per_s", full.lam_acc, rate_in, mcs, "1/s")
        put("async_discard_share", full.discard, rate_in, mcs, "fraction")
        put("async_mean_staleness", full.staleness, rate_in, mcs, "steps")
        put("async_mean_weight", full.weight, rate_in, mcs, "")
        put("hours_ok_per_day", int((slots > 0).sum()), pool_in + ["training_plan.windows",
                                                                    "@C"], "analytic", "h")
        U_med = R_med * K
        units = R_draw * K
        days = pm.async_days(units, 3600 * lam_acc_h)
        days_tm = np.full(n_outer, float(pm.async_days(U_med, 3600 * lam_acc_h)))
        put("updates_to_target", {"p50": float(np.percentile(units, 50)),
                                  "p90": float(np.percentile(units, 90)), "median_fit": U_med},
            conv_in, f"fit+montecarlo({n_outer})", "updates")
        units_ref = "@updates_to_target"
        tot_lam = lam_h.sum()
        d_bar = 1.0 - lam_acc_h.sum() / tot_lam if tot_lam > 0 else 0.0
        tasks_per_acc = 1.0 / (p_bar * (1.0 - d_bar)) if p_bar > 0 and d_bar < 1 else np.inf
        frac_up = np.where(d1.success, 1.0, up1 / np.where(d1.t_up > 0, d1.t_up, 1.0))
        per_unit = {"tasks": tasks_per_acc, "uploads": 1.0 / max(1e-300, 1.0 - d_bar),
                    "dev_s": tasks_per_acc * mean_occ, "bytes_down": tasks_per_acc * s_d,
                    "bytes_up": tasks_per_acc * float((frac_up * s_u).mean()),
                    "e_dn": tasks_per_acc * float((fleet.p_rx_w[d1.cls] * dn1).mean()),
                    "e_cmp": tasks_per_acc * float((fleet.p_cpu_w[d1.cls] * cmp1).mean()),
                    "e_up": tasks_per_acc * float((fleet.p_tx_w[d1.cls] * up1).mean()),
                    "accepted": 1.0, "steps": 1.0 / K}
        cpu_util = ((full.lam_acc * sv.agg_cpu_s_per_update + full.rho * sv.agg_cpu_s_per_step)
                    / (sv.n_instances * sv.cores_per_instance))
        util_in = ["@async_accepted_rate_per_s", "server.n_instances", *T_AGG_IN]
        buffered = K
        cap_check = C
        per_unit_in = ["@async_accepted_rate_per_s", "@hours_ok_per_day"]
        days_in = ["@async_accepted_rate_per_s", "@hours_ok_per_day", "@updates_to_target"]
    est.extrapolated[:0] = calibration_coverage(problem, C, mean_work)
    est.values["mode"] = tp.mode
    put("per_unit", dict(per_unit), per_unit_in + POWER_IN,
        f"montecarlo({n_mc if tp.mode == 'sync' else N_P})")
    M["per_unit"]["unit"] = "per round (sync) or per accepted update (async)"
    mco = f"montecarlo({n_outer})"
    d50, d90 = float(np.percentile(days, 50)), float(np.percentile(days, 90))
    put("days_to_target", {"p50": d50, "p90": d90}, days_in, mco, "d")
    V["days_p90"] = d90
    put("days_p90_time_model_only", float(np.percentile(days_tm, 90)), days_in, mco, "d")
    put("pool_fits_C", bool((cap[win] >= cap_check).any()),
        pool_in + ["training_plan.windows", "@C"], "analytic")

    # 4.7 totals at P50 and P90 --------------------------------------------------------------
    u50, u90 = float(np.percentile(units, 50)), float(np.percentile(units, 90))

    def tot(key, q):
        return per_unit[key] * (u50 if q == 50 else u90)

    tot_in = ["@per_unit", units_ref]
    for key, name, unit in (("tasks", "tasks_started", "tasks"),
                            ("uploads", "uploads_completed", "tasks"),
                            ("accepted", "accepted_updates", "updates")):
        put(name, {"p50": tot(key, 50), "p90": tot(key, 90)},
            tot_in if key != "accepted" else [units_ref, "training_plan.K"], mco, unit)
    put("device_hours", {"p50": tot("dev_s", 50) / 3600, "p90": tot("dev_s", 90) / 3600},
        tot_in, mco, "h")
    put("bytes_down", {"p50": tot("bytes_down", 50), "p90": tot("bytes_down", 90)}, tot_in,
        mco, "B")
    put("bytes_up", {"p50": tot("bytes_up", 50), "p90": tot("bytes_up", 90)}, tot_in, mco, "B")
    refresh = (pop.n_devices * inf.refresh_downloads_per_device_day * s_d)
    put("refresh_bytes", {"p50": refresh * d50, "p90": refresh * d90},
        ["inference.refresh_downloads_per_device_day", "population.n_devices",
         "@payload_down_bytes", "@days_to_target"], "analytic", "B")

    # 4.8 burden ---------------------------------------------------------------------------------
    elig = pop.n_devices * pop.static_eligibility * coverage
    e_day = elig * pop.daily_unique_frac
    # a campaign shorter than a day loads each device at most that day's share: per-day
    # burden over max(days, 1) (project choice; dividing by days would blow up below a day)
    b_draw = per_unit["tasks"] * units / np.maximum(days, 1.0) / e_day
    b50, b90 = float(np.percentile(b_draw, 50)), float(np.percentile(b_draw, 90))
    bur = pm.burden(per_unit["tasks"] * u50, max(d50, 1.0), e_day)
    base_in = ["population.n_devices", "population.static_eligibility", "@coverage_in_pool"]
    bp = ["@tasks_started", "@days_to_target", "population.daily_unique_frac", *base_in]
    put("tasks_per_device_day", {"p50": b50, "p90": b90}, bp, mco, "tasks/d")
    put("p_two_or_more_tasks_day", bur["p_ge2"], bp, "analytic", "fraction")
    put("tasks_per_device_day_p99_count", bur["p99"], bp, "analytic", "tasks")
    cls_names = [n for n, k in zip(names, keep, strict=True) if k]
    e_c = np.bincount(d1.cls, weights=e1, minlength=n_cls) / cnt
    byte_c = s_d + np.bincount(d1.cls, weights=np.where(d1.success, s_u, up1 / np.where(
        d1.t_up > 0, d1.t_up, 1.0) * s_u), minlength=n_cls) / cnt
    batt = np.array([c.battery_wh for c, k in zip(problem.device_classes, keep, strict=True)
                     if k])
    est.per_class = {
        "class": cls_names, "share": fleet.share.tolist(), "p_success": p_c.tolist(),
        "cpu_s_per_task": tcmp_c.tolist(),
        "cpu_s_per_day_p50": (b50 * tcmp_c).tolist(), "cpu_s_per_day_p90": (b90 * tcmp_c).tolist(),
        "mb_per_day_p50": (b50 * byte_c / 1e6).tolist(),
        "mb_per_day_p90": (b90 * byte_c / 1e6).tolist(),
        "battery_pct_per_day_p50": (100 * b50 * e_c / (3600 * batt)).tolist(),
        "battery_pct_per_day_p90": (100 * b90 * e_c / (3600 * batt)).tolist(),
    }
    est.per_class_meta = tg.meta("per_class", ["@tasks_per_device_day", "@p_success", *POWER_IN,
                                           "device_classes[*].battery_wh"], mco)
    camp = pop.campaign_unique_frac if pop.campaign_unique_frac is not None else \
        pop.daily_unique_frac
    uniq = pm.unique_participants(per_unit["tasks"] * u50, elig * camp)
    up_in = ["@tasks_started", "population.campaign_unique_frac", *base_in]
    put("unique_participants", uniq, up_in, "analytic", "devices")
    put("participant_coverage", uniq / elig, up_in, "analytic", "fraction")

    # 4.10 energy and carbon ------------------------------------------------------------------
    w = pm.region_weights([r.share for r in regs], [r.utc_offset_h for r in regs],
                          [r.availability for r in regs], tp.windows)
    g_grid = float(np.dot(w, [r.carbon_g_per_kwh for r in regs]))
    for q, uq, dq in ((50, u50, d50), (90, u90, d90)):
        e_stage = {k: per_unit[k] * uq for k in ("e_dn", "e_cmp", "e_up")}
        e_dev = sum(e_stage.values())
        e_net = pm.network_energy_j(cr.net_j_per_bit, per_unit["bytes_down"] * uq
                                    + per_unit["bytes_up"] * uq)
        e_srv = pm.server_energy_j(sv.power_w, sv.n_instances, sv.pue, dq, reserved_h_per_day)
        V[f"_energy_{q}"] = {"device_download": e_stage["e_dn"] / 3.6e6,
                             "device_compute": e_stage["e_cmp"] / 3.6e6,
                             "device_upload": e_stage["e_up"] / 3.6e6,
                             "network": e_net / 3.6e6, "server": e_srv / 3.6e6}
        V[f"_co2_{q}"] = {"device": pm.co2e_kg(e_dev, g_grid, 0.0, 0.0),
                          "network": pm.co2e_kg(e_net, g_grid, 0.0, 0.0),
                          "server": pm.co2e_kg(0.0, 0.0, e_srv, cr.dc_carbon_g_per_kwh)}
    put("server_reserved_hours", {"p50": reserved_h_per_day * d50,
                                  "p90": reserved_h_per_day * d90},
        RESERVATION_IN + ["@days_to_target"], mco, "h")
    energy_in = ["@tasks_started", "@bytes_down", "@bytes_up", "@server_reserved_hours",
                 "cost_rates.net_j_per_bit", "server.power_w", "server.pue", *POWER_IN]
    put("energy_kwh", {"p50": sum(V["_energy_50"].values()), "p90": sum(V["_energy_90"].values())},
        energy_in, mco, "kWh")
    total50 = sum(V["_energy_50"].values())
    put("energy_share", {k: (v / total50 if total50 > 0 else float("nan"))
                         for k, v in V["_energy_50"].items()}, energy_in, mco, "fraction")
    put("energy_breakdown_kwh", V.pop("_energy_50"), energy_in, mco, "kWh")
    V.pop("_energy_90")
    co2_in = energy_in + ["population.regions[*].carbon_g_per_kwh",
                          "population.regions[*].availability", "population.regions[*].share",
                          "population.regions[*].utc_offset_h", "training_plan.windows",
                          "cost_rates.dc_carbon_g_per_kwh"]
    put("co2e_breakdown_kg", V["_co2_50"], co2_in, mco, "kg")
    put("co2e_kg", {"p50": sum(V.pop("_co2_50").values()), "p90": sum(V.pop("_co2_90").values())},
        co2_in, mco, "kg")

    runs = cr.measured_runs
    if len(runs) >= 2:
        xs = [r.C * (r.R if tp.mode == "sync" else r.hours) for r in runs]
        alpha = pm.carbon_proxy_alpha([r.co2e_kg for r in runs], xs)
        if tp.mode == "sync":
            x_plan = V["C"] * float(np.percentile(R_draw, 50))
        else:
            x_plan = V["C"] * d50 * V["hours_ok_per_day"]
        proxy = alpha * x_plan
        bottom_up = V["co2e_kg"]["p50"]
        gap = abs(proxy - bottom_up) / bottom_up if bottom_up > 0 else float("inf")
        proxy_in = ["cost_rates.measured_runs", "@C", units_ref, "@days_to_target"]
        put("co2e_proxy_kg", proxy, proxy_in, "fit", "kg")
        put("co2e_proxy_gap", gap, proxy_in + ["@co2e_kg"], "fit", "relative")
        if gap > cr.proxy_gap_warn:
            est.flags.append(f"carbon proxy {proxy:.4g} kg differs from the bottom-up "
                             f"{bottom_up:.4g} kg by {gap:.0%} > cost_rates.proxy_gap_warn = "
                             f"{cr.proxy_gap_warn:g}")

    # 4.12 joint training-inference ------------------------------------------------------------
    alloc = joint_inference(problem, keep, tcmp_c, tdn_c, b50)
    est.allocator = alloc
    alloc_in = ["inference.requests_per_device_day", "device_classes[*].infer_s_per_request",
                "inference.latency_slo_p95_ms", "@tasks_per_device_day", "@task_time_mean_s"]
    if bud.max_cpu_s_per_device_day is not None:
        alloc_in.append("budgets.max_cpu_s_per_device_day")
    put("on_device_share", alloc["on_device_share"], alloc_in, "allocator", "fraction")
    put("inference_p95_ms", alloc["fleet_p95_ms"],
        ["@on_device_share", "device_classes[*].infer_latency_p50_ms",
         "device_classes[*].infer_latency_p95_ms", "device_classes[*].interference",
         "population.active_use_s_per_day", "population.training_while_in_use",
         "inference queueing"], "allocator+analytic", "ms")

    # 4.11 cloud cost -----------------------------------------------------------------------------
    req = np.array(inf.requests_per_device_day)
    cloud_req_day = inf.cloud_requests_per_day + pop.n_devices * float(
        np.sum(shares * req * np.array(alloc["cloud_class_mask"])))
    usd = {}
    for q, uq, dq in ((50, u50, d50), (90, u90, d90)):
        cpu_h = (per_unit["accepted"] * uq * sv.agg_cpu_s_per_update
                 + per_unit["steps"] * uq * sv.agg_cpu_s_per_step) / 3600
        usd[q] = pm.cloud_usd(
            instance_hour_usd=cr.instance_hour_usd, n_instances=sv.n_instances, days=dq,
            hours_per_day=reserved_h_per_day,
            cpu_hour_usd=cr.cpu_hour_usd, cpu_h=cpu_h, egress_gb_usd=cr.egress_gb_usd,
            gb_down=(per_unit["bytes_down"] * uq + refresh * dq) / 1e9,
            ingress_gb_usd=cr.ingress_gb_usd, gb_up=per_unit["bytes_up"] * uq / 1e9,
            storage_gb_month_usd=cr.storage_gb_month_usd,
            gb_month=mdl.checkpoint_bytes * mdl.checkpoints_kept / 1e9 * dq / 30.0,
            cloud_infer_per_1k_usd=cr.cloud_infer_per_1k_usd, q_cloud=cloud_req_day * dq,
            backbone_gb_usd=cr.backbone_gb_usd,
            gb_backbone=V["backbone_bytes"][f"p{q}"] / 1e9 if hier is not None else 0.0)
    cost_in = COST_IN + ["@server_reserved_hours", "@bytes_down", "@bytes_up", "@refresh_bytes",
                         "@accepted_updates", "@on_device_share"]
    if hier is not None:
        cost_in += ["@backbone_bytes"]
    put("cloud_usd", {"p50": usd[50]["total"], "p90": usd[90]["total"]}, cost_in, mco, "USD")
    put("cloud_usd_breakdown", {k: v for k, v in usd[50].items() if k != "total"}, cost_in,
        mco, "USD")
    put("server_cpu_util", float(cpu_util), util_in, "analytic", "fraction")
    put("aggregator_mem_gb", sv.agg_mem_gb_base + sv.agg_mem_gb_per_buffered_update * buffered,
        ["server.agg_mem_gb_base", "server.agg_mem_gb_per_buffered_update",
         "server.streaming_aggregation", "training_plan.K"], "analytic", "GB")
    put("metric_gap", {"p50": cv.metric_gap_mean,
                       "p90": cv.metric_gap_mean - pm.Z90 * cv.metric_gap_sd},
        ["convergence.metric_gap_mean", "convergence.metric_gap_sd"], "fit", "relative")
    est.assumptions = _register(problem, tg, A, n_mc, n_outer, seed)
    return est


_ALLOC_CACHE: dict[str, Any] = {}


def _remember(key, value):
    if len(_ALLOC_CACHE) > 512:
        _ALLOC_CACHE.clear()
    _ALLOC_CACHE[key] = value


def _solve_allocation(cls, data):
    """Solve one allocator instance. A handful of classes: the numpy driver (the same
    algorithm as the default fast path, without loading the compiled kernels). Results are
    memoised on the exact instance (what-if points and tornado ends often repeat it)."""
    jti = cls.from_dict(data)
    return jti.solve(method="numpy" if "numpy" in jti.methods else None)


def joint_inference(problem: DeploymentPlanProblem, keep: np.ndarray, tcmp_kept: np.ndarray,
                    tdn_kept: np.ndarray, b: float) -> dict:
    """The joint training-inference budget with the toolkit's joint allocator (one client per
    class kept for training).

    Slot ``Delta = 1 day / max(1, ceil(b))``; per class: arrival ``requests*Delta``, costs
    ``E[T_cmp|c]`` per participation, ``E[T_dn|c]`` per download (project choice: device
    busy receiving), ``infer_s_per_request`` per unit of service, slot budget
    ``max_cpu_s_per_device_day*Delta`` (none if not given), ``q_min = b*Delta``, and the
    largest service rate the budget (or the CPU itself) allows. A class the allocator cannot
    fit is dropped and the rest re-solved; its requests go to the cloud.
    """
    from jointopt.solvers.jti import JointTrainingInferenceProblem

    inf, pop, bud = problem.inference, problem.population, problem.budgets
    classes = problem.device_classes
    delta_d = 1.0 / max(1, math.ceil(b)) if np.isfinite(b) else 1.0
    slot_s = delta_d * 86400.0
    q_req = min(1.0, b * delta_d) if np.isfinite(b) else 1.0
    idx = [i for i, k in enumerate(keep) if k]
    budget = (bud.max_cpu_s_per_device_day * delta_d if bud.max_cpu_s_per_device_day is not None
              else float("inf"))
    lam = np.array([inf.requests_per_device_day[i] * delta_d for i in idx])
    infer = np.array([classes[i].infer_s_per_request for i in idx])
    mu_max = np.minimum(budget, slot_s) / infer
    ok = mu_max >= lam * 1.01 + 1e-12
    status = ["infeasible: inference alone exceeds the slot budget" if not o else "optimal"
              for o in ok]
    q = np.zeros(len(idx))
    mu = np.zeros(len(idx))
    for _ in range(len(idx)):
        sel = np.flatnonzero(ok)
        if sel.size == 0:
            break
        data = {
            "kind": "joint_training_inference", "name": "planner-allocation",
            "clients": {"count": int(sel.size), "data_weight": [classes[idx[j]].share
                                                                for j in sel],
                        "arrival_rate": lam[sel].tolist(),
                        "deadline": problem.inference.latency_slo_p95_ms / 1000 / slot_s,
                        "cost_train": tcmp_kept[sel].tolist(),
                        "cost_download": tdn_kept[sel].tolist(),
                        "cost_service": infer[sel].tolist(), "cap": budget, "budget": budget,
                        "mu_max": mu_max[sel].tolist(), "q_min": max(q_req, 1e-6)},
            "convergence": {"model": "fitted", "a": problem.convergence.a,
                            "b": problem.convergence.b, "c": problem.convergence.c},
            "state": {"K": problem.convergence.target_error},
        }
        key = json.dumps(data, sort_keys=True)
        try:
            if key in _ALLOC_CACHE:
                res = _ALLOC_CACHE[key]
                if isinstance(res, InfeasibleError):
                    raise res
            else:
                try:
                    res = _solve_allocation(JointTrainingInferenceProblem, data)
                except InfeasibleError as exc:
                    _remember(key, exc)
                    raise
                _remember(key, res)
        except InfeasibleError as exc:
            bad = sel[0]
            if exc.field and "[" in exc.field:
                bad = sel[int(exc.field.split("[")[1].split("]")[0])]
            ok[bad] = False
            status[bad] = "infeasible: training at the required participation does not fit " \
                          "the CPU budget"
            continue
        except ValidationError as exc:  # pragma: no cover - defensive, reported
            for j in sel:
                status[j] = f"error: {exc}"
            ok[:] = False
            break
        q[sel] = res.decisions["q"]
        mu[sel] = res.decisions["mu"]
        for j in sel:
            status[j] = res.status
        break
    cloud_mask = np.zeros(len(classes))
    for j, i in enumerate(idx):
        if not ok[j]:
            cloud_mask[i] = 1.0
    shares = np.array([c.share for c in classes])
    req = np.array(inf.requests_per_device_day)
    total = float(np.sum(shares * req))
    on_dev = 1.0 - float(np.sum(shares * req * cloud_mask)) / total if total > 0 else 1.0
    # latency: log-normal per class, overlap with active use, interference, M/M/1 factor
    factor = np.ones(len(classes))
    overlap = np.zeros(len(classes))
    for j, i in enumerate(idx):
        if ok[j] and lam[j] > 0:
            factor[i] = float(pm.mm1_factor(lam[j], mu[j]))
        if pop.training_while_in_use:
            overlap[i] = min(1.0, b * tcmp_kept[j] / pop.active_use_s_per_day)
    served = shares * req * (1.0 - cloud_mask)
    if served.sum() > 0:
        sel = served > 0
        fleet_p95, per = pm.fleet_latency_p95(
            [c.infer_latency_p50_ms for c in classes], [c.infer_latency_p95_ms for c in classes],
            overlap, [c.interference for c in classes], factor, np.where(sel, served, 1e-12))
    else:
        fleet_p95, per = float("nan"), np.full(len(classes), np.nan)
    return {"slot_days": delta_d, "q_req": q_req,
            "class": [classes[i].name for i in idx], "q": q.tolist(), "mu": mu.tolist(),
            "arrival": lam.tolist(), "status": status, "feasible": ok.tolist(),
            "on_device_share": on_dev, "cloud_class_mask": cloud_mask.tolist(),
            "fleet_p95_ms": fleet_p95, "class_p95_ms": list(per),
            "queue_factor": factor.tolist(), "overlap": overlap.tolist()}
