"""The deployment-planner scenario as a validated, immutable value (kind ``deployment_plan``).

Documented in ``docs/kinds/deployment_plan.md`` (scenario format). **Project choice** for the
exact schema: device classes, population and availability, model payload, training plan,
convergence model with its calibration record, server, cost rates, inference load, budgets,
lever space and Monte-Carlo settings.

Every scalar may be a bare number or a table ``{value = .., tag = "measured" | "simulated" |
"assumed", source = ".."}``. Tables are unwrapped on load; their tags are kept in
``provenance`` (dotted field path -> tag) and a bare number counts as ``assumed``.

**Every threshold is a user input**: every ``budgets`` field is optional and has no default;
a missing one leaves its gate ``not_evaluated``. All range problems found by the planner's
own checks are collected and raised together as one :class:`PlannerInputError` naming each
field path with its index.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import pydantic
from jointopt.models.checks import brief
from jointopt.models.errors import InfeasibleError, ValidationError
from jointopt.solvers.base import (
    Count,
    ProblemBase,
    Section,
    Seed,
    SolveResult,
    check_size,
    size_limit,
)

TAGS = ("assumed", "simulated", "measured")  # weakest first
size_limit("whatif_points", 10_000, "what-if grid points of a plan (the product of the lever "
                                    "lists, each with the current value)")


class PlannerInputError(ValidationError):
    """All planner input problems at once; ``problems`` holds ``(field, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]] | str, message: str | None = None):
        if isinstance(problems, str):  # unpickling path: (field, message)
            super().__init__(problems, message or "")
            self.problems = [(problems, message or "")]
            return
        self.problems = list(problems)
        field, msg = self.problems[0]
        if len(self.problems) > 1:
            msg = msg + "".join(f"\n{f} {m}" for f, m in self.problems[1:])
        super().__init__(field, msg)


class BudgetInfeasibleError(InfeasibleError):
    """A budget no plan can meet (e.g. inference alone exceeds the CPU budget)."""


def _unwrap(data: Any, path: str, tags: dict[str, str]) -> Any:
    if isinstance(data, dict):
        if "value" in data and set(data) <= {"value", "tag", "source"}:
            tag = data.get("tag", "assumed")
            if not isinstance(tag, str) or tag not in TAGS:
                raise ValidationError(f"{path}.tag", f"must be one of {TAGS}, got {brief(tag)}")
            if not isinstance(data.get("source", ""), str):
                raise ValidationError(f"{path}.source", f"must be text, got "
                                                        f"{brief(data['source'])}")
            tags[path] = tag
            return data["value"]
        return {k: _unwrap(v, f"{path}.{k}" if path else k, tags) for k, v in data.items()}
    if isinstance(data, list):
        return [_unwrap(v, f"{path}[{i}]", tags) for i, v in enumerate(data)]
    return data


def _drop_none(value):
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


class _Checker:
    """Collects ``(field, message)`` problems; :meth:`raise_all` raises them together."""

    def __init__(self):
        self.problems: list[tuple[str, str]] = []

    def num(self, field, value, *, gt=None, ge=None, le=None, lt=None, unit=""):
        if value is None:
            return
        u = f" {unit}" if unit else ""
        v = float(value)
        if not math.isfinite(v):
            self.problems.append((field, f"{v!r}{u}; must be finite"))
        elif gt is not None and not v > gt:
            self.problems.append((field, f"{v:g}{u}; must be > {gt:g}"))
        elif ge is not None and not v >= ge:
            self.problems.append((field, f"{v:g}{u}; must be >= {ge:g}"))
        elif le is not None and not v <= le:
            self.problems.append((field, f"{v:g}{u}; must be <= {le:g}"))
        elif lt is not None and not v < lt:
            self.problems.append((field, f"{v:g}{u}; must be < {lt:g}"))

    def frac(self, field, value):
        self.num(field, value, ge=0.0, le=1.0)

    def add(self, field, message):
        self.problems.append((field, message))

    def raise_all(self):
        if self.problems:
            raise PlannerInputError(self.problems)


class DeviceClass(Section):
    """One cluster of similar devices."""

    name: str
    share: float
    train_s_per_sample: float | None = None
    infer_s_per_request: float
    infer_latency_p50_ms: float
    infer_latency_p95_ms: float
    spread_sigma: float | None = None
    bw_down_mbps: float
    bw_up_mbps: float
    bw_sigma: float = 0.0
    peak_train_mem_mb: float
    ram_mb: float
    mem_cap_frac: float
    crash_rate: float
    os_supported: bool = True
    p_cpu_w: float
    p_rx_w: float
    p_tx_w: float
    battery_wh: float
    interference: float = 0.0


class Region(Section):
    share: float
    utc_offset_h: int = 0
    availability: list[float]
    carbon_g_per_kwh: float


class Population(Section):
    """Fleet size, availability and eligibility policy."""

    n_devices: float
    static_eligibility: float
    regions: list[Region]
    dwell_mean_s: float
    daily_unique_frac: float
    campaign_unique_frac: float | None = None
    active_use_s_per_day: float
    policy_requires_charging: bool
    training_while_in_use: bool
    u_max: float


class ModelSpec(Section):
    """Model sizes and compression."""

    n_params: float
    n_params_trainable: float
    bytes_per_param_down: float
    bytes_per_param_up: float
    compression_down: float = 1.0
    compression_up: float = 1.0
    secagg_expansion: float = 1.0
    header_bytes: float = 0.0
    checkpoint_bytes: float
    checkpoints_kept: int = 1


class Distribution(Section):
    """Samples per client: ``constant`` (value), ``lognormal`` (mean, sigma) or ``empirical``."""

    dist: Literal["constant", "lognormal", "empirical"]
    value: float | None = None
    mean: float | None = None
    sigma: float | None = None
    values: list[float] | None = None


class DPConfig(Section):
    enabled: bool = False
    K_min: int | None = None


class TrainingPlan(Section):
    """The plan knobs."""

    mode: Literal["sync", "async"]
    K: Count("cohort")
    C: Count("cohort") | None = None
    omega: float | None = None
    timeout_s: float
    t_ovh_s: float = 0.0
    local_epochs: float | None = None
    samples_per_client: Distribution | None = None
    local_steps: int | None = None
    batch_size: int | None = None
    max_staleness: int | None = None
    windows: list[int] = list(range(24))
    exclude_classes: list[str] = []
    topology: Literal["flat", "hierarchical"] = "flat"
    dp: DPConfig = DPConfig()
    secagg: bool = False


class CalibrationRun(Section):
    """One simulation run behind the convergence fit: its mode, aggregation goal K, the
    concurrency / selected count C (required for async runs: the record holds (K, C) pairs),
    seed and rounds to target. A run without ``mode`` supports no mode: a plan is then
    flagged extrapolated in its mode."""

    id: str
    mode: Literal["sync", "async"] | None = None
    K: int
    C: int | None = None
    seed: Seed
    rounds_to_target: float


class ConvergenceSpec(Section):
    """Fitted constants of :class:`jointopt.models.convergence.ConvergenceModel`.

    ``a, b, c`` of the recursion ``e_{t+1} = a e_t + b sum p^2 (1-q)/q + c`` fitted from
    simulation runs on a proxy population of ``proxy_clients`` equal-weight clients, where a
    round of K results has ``q = K / proxy_clients``. Rounds to target = first round at which
    the recursion reaches ``target_error`` from ``error0``. ``calibration`` is the record of
    the runs behind the fit (>= 3 distinct K, >= 2 seeds each); their log residuals give the
    predictive spread of R unless ``rounds_sigma`` is given; ``rounds_scale`` multiplies R
    (1 = the fit; the tornado's "R scale" knob). ``metric_gap_*``: relative change
    of the target metric vs. centralised training (normal). ``compression_range`` /
    ``local_work_range``: what the fit covered; ``dp_enabled``: the fit's DP config.
    """

    a: float
    b: float
    c: float
    proxy_clients: int
    error0: float
    target_error: float
    rounds_sigma: float | None = None
    rounds_scale: float = 1.0
    metric_gap_mean: float
    metric_gap_sd: float
    compression_range: list[float] = [1.0, 1.0]
    local_work_range: list[float] | None = None
    dp_enabled: bool = False
    calibration: list[CalibrationRun] = []


class ServerSpec(Section):
    n_instances: int
    cores_per_instance: float
    max_cpu_util: float
    mem_gb: float
    agg_cpu_s_per_update: float
    agg_cpu_s_per_step: float
    agg_mem_gb_base: float
    agg_mem_gb_per_buffered_update: float
    streaming_aggregation: bool = True
    power_w: float
    pue: float
    #: when the instances are reserved (billed and drawing power): ``"training_windows"``,
    #: only in the plan's training-window hours (the default), or ``"always_on"``, 24 h a day
    reservation: Literal["training_windows", "always_on"] = "training_windows"


class MeasuredRun(Section):
    """A measured campaign for the Green FL carbon proxy: CO2e with C and R (sync) or hours
    (async)."""

    co2e_kg: float
    C: float
    R: float | None = None
    hours: float | None = None


class CostRates(Section):
    instance_hour_usd: float
    cpu_hour_usd: float
    egress_gb_usd: float
    ingress_gb_usd: float
    storage_gb_month_usd: float
    cloud_infer_per_1k_usd: float
    dc_carbon_g_per_kwh: float
    net_j_per_bit: float
    backbone_gb_usd: float = 0.0
    measured_runs: list[MeasuredRun] = []
    proxy_gap_warn: float | None = None

    #: the per-unit rates (every field but the measured runs and their warning level)
    RATES: ClassVar[tuple[str, ...]] = (
        "instance_hour_usd", "cpu_hour_usd", "egress_gb_usd", "ingress_gb_usd",
        "storage_gb_month_usd", "cloud_infer_per_1k_usd", "dc_carbon_g_per_kwh",
        "net_j_per_bit", "backbone_gb_usd")

    @staticmethod
    def check_rates(ck, rates: dict, prefix: str = "cost_rates") -> None:
        """Every rate is a finite number >= 0 (problems collected in ``ck``)."""
        for key, value in rates.items():
            ck.num(f"{prefix}.{key}", value, ge=0.0)


class InferenceLoad(Section):
    requests_per_device_day: list[float]
    latency_slo_p95_ms: float
    min_on_device_share: float
    cloud_requests_per_day: float = 0.0
    refresh_downloads_per_device_day: float = 0.0


class Budgets(Section):
    """User thresholds. None has a default; a missing one leaves its gate unevaluated."""

    max_metric_drop: float | None = None
    deadline_days: float | None = None
    max_round_failure_prob: float | None = None
    max_tasks_per_device_day: float | None = None
    max_cpu_s_per_device_day: float | None = None
    max_mb_per_device_day: float | None = None
    max_battery_pct_per_day: float | None = None
    min_fleet_coverage: float | None = None
    max_crash_rate: float | None = None
    max_cloud_usd: float | None = None
    max_co2e_kg: float | None = None
    min_participant_coverage: float | None = None

    def check(self, ck, prefix: str = "budgets") -> None:
        """Shares within [0, 1], other limits > 0 (problems collected in ``ck``)."""
        for key in ("max_metric_drop", "max_round_failure_prob", "min_fleet_coverage",
                    "max_crash_rate", "min_participant_coverage"):
            ck.frac(f"{prefix}.{key}", getattr(self, key))
        for key in ("deadline_days", "max_tasks_per_device_day", "max_cpu_s_per_device_day",
                    "max_mb_per_device_day", "max_battery_pct_per_day", "max_cloud_usd",
                    "max_co2e_kg"):
            ck.num(f"{prefix}.{key}", getattr(self, key), gt=0.0)


class HierarchySpec(Section):
    """Hierarchical topology (devices -> edge aggregators -> cloud): the device groups (one
    row per group, e.g. a cell or a site) with their inference demand ``group_demand``
    (requests/s), the candidate edge hosts' ``capacities`` (requests/s) and ``edge_costs``
    (one host-cloud model exchange), the group-host costs ``group_costs`` (groups x hosts)
    or the groups' ``homes`` (zero-cost LAN), ``local_to_global_ratio`` l (edge rounds per
    global round) and ``participation_ratio``; the HFL placement solver (``method``,
    ``time_limit`` s) places the aggregators, unless ``association`` fixes them (one host
    index or -1 per group). ``edge_agg_s``: an edge host's aggregation step per edge round;
    ``backbone_mbps`` / ``backbone_rtt_s``: the host-cloud link."""

    group_demand: list[float]
    capacities: list[float]
    edge_costs: float | list[float] = 1.0
    group_costs: list[list[float]] | None = None
    homes: list[int] | None = None
    local_to_global_ratio: float
    participation_ratio: float = 1.0
    method: Literal["highs", "heuristic"] = "highs"
    time_limit: float = 30.0
    association: list[int] | None = None
    edge_agg_s: float = 0.0
    backbone_mbps: float
    backbone_rtt_s: float = 0.0


class Levers(Section):
    """User-declared lever space: the only values the planner may propose."""

    K: list[int] = []
    C: list[int] = []
    omega: list[float] = []
    compression_up: list[float] = []
    windows: list[list[int]] = []
    local_epochs: list[float] = []
    exclude_class: list[str] = []

    @pydantic.model_validator(mode="after")
    def _grid_size(self):
        # the what-if grid is the product of these lists (each with the current value)
        points = math.prod(len(v) + 1 for v in (self.K, self.compression_up, self.windows,
                                                 self.local_epochs) if v)
        check_size("levers (what-if grid points)", points, "whatif_points")
        return self


class MonteCarlo(Section):
    """Monte-Carlo sizes and seed (defaults register: 2000, 500, 500, 0).

    ``n_mc_grid`` sizes a standalone :func:`~jointopt.solvers.planner.whatif.what_if` or
    :func:`~jointopt.solvers.planner.whatif.tornado` call; ``jointopt.planner.plan`` runs its
    grid, tornado and lever search at ``n_mc`` / ``n_outer`` so that the base plan shows one
    number everywhere. ``confidence``: level at which the over-selection count keeps the
    round-failure limit despite Monte-Carlo noise (project choice, 0.95). ``n_seeds``: seeds
    (``seed, seed+1, ...``) whose spread of C, round-failure probability and days the gates
    report (project choice, 5; 1 turns the spread off).
    """

    n_mc: Count("samples") = 2000
    n_outer: Count("samples") = 500
    n_mc_grid: Count("samples") = 500
    seed: Seed = 0
    confidence: float = 0.95
    n_seeds: Count("seeds") = 5


class PlanSolveResult(SolveResult):
    """A :class:`SolveResult` whose status is the verdict; GO and CONDITIONAL count as ok."""

    OK_STATUSES = ("go", "conditional")


class DeploymentPlanProblem(ProblemBase):
    """Is cross-device FL worth it, and what will it cost? (``docs/kinds/deployment_plan.md``)."""

    kind = "deployment_plan"
    methods = ("planner",)

    name: str = "unnamed"
    description: str = ""
    device_classes: list[DeviceClass]
    population: Population
    model: ModelSpec
    training_plan: TrainingPlan
    convergence: ConvergenceSpec
    server: ServerSpec
    cost_rates: CostRates
    inference: InferenceLoad
    budgets: Budgets = Budgets()
    levers: Levers = Levers()
    hierarchy: HierarchySpec | None = None
    monte_carlo: MonteCarlo = MonteCarlo()
    normalise_shares: bool = False
    provenance: dict[str, Literal["assumed", "simulated", "measured"]] = {}

    @pydantic.model_validator(mode="before")
    @classmethod
    def _unwrap_tags(cls, data):
        if isinstance(data, dict):
            given = dict(data.get("provenance") or {})
            tags: dict[str, str] = {}
            data = _unwrap({k: v for k, v in data.items() if k != "provenance"}, "", tags)
            if data.get("normalise_shares") and isinstance(data.get("device_classes"), list):
                rows = [dict(r) for r in data["device_classes"]]
                total = sum(float(r.get("share", 0.0)) for r in rows)
                if total > 0 and abs(total - 1.0) > 1e-12:
                    for i, r in enumerate(rows):
                        r["share"] = float(r["share"]) / total
                        tags[f"device_classes[{i}].share"] = "assumed"
                    data["device_classes"] = rows
                data["normalise_shares"] = False  # applied once; the dump holds the result
            data["provenance"] = {**given, **tags}
        return data

    @pydantic.model_validator(mode="after")
    def _check(self):
        ck = _Checker()
        classes = self.device_classes
        if not classes:
            ck.add("device_classes", "must list at least one class")
            ck.raise_all()
        total = sum(c.share for c in classes)
        if abs(total - 1.0) > 1e-6:
            ck.add("device_classes[*].share",
                   f"sums to {total:g}; must be 1 (pass normalise_shares=True to rescale)")
        for i, c in enumerate(classes):
            p = f"device_classes[{i}]"
            ck.frac(f"{p}.share", c.share)
            for key, unit in (("train_s_per_sample", "s"), ("infer_s_per_request", "s"),
                              ("infer_latency_p50_ms", "ms"), ("bw_down_mbps", "Mbit/s"),
                              ("bw_up_mbps", "Mbit/s"), ("peak_train_mem_mb", "MB"),
                              ("ram_mb", "MB"), ("battery_wh", "Wh")):
                ck.num(f"{p}.{key}", getattr(c, key), gt=0.0, unit=unit)
            for key in ("p_cpu_w", "p_rx_w", "p_tx_w"):
                ck.num(f"{p}.{key}", getattr(c, key), ge=0.0, unit="W")
            ck.num(f"{p}.infer_latency_p95_ms", c.infer_latency_p95_ms,
                   gt=c.infer_latency_p50_ms, unit="ms")
            for key in ("spread_sigma", "bw_sigma", "interference"):
                ck.num(f"{p}.{key}", getattr(c, key), ge=0.0)
            ck.frac(f"{p}.mem_cap_frac", c.mem_cap_frac)
            ck.frac(f"{p}.crash_rate", c.crash_rate)
        pop = self.population
        ck.num("population.n_devices", pop.n_devices, gt=0.0)
        ck.num("population.dwell_mean_s", pop.dwell_mean_s, gt=0.0, unit="s")
        ck.num("population.active_use_s_per_day", pop.active_use_s_per_day, gt=0.0, unit="s")
        for key in ("static_eligibility", "daily_unique_frac", "campaign_unique_frac", "u_max"):
            ck.frac(f"population.{key}", getattr(pop, key))
        if not pop.regions:
            ck.add("population.regions", "must list at least one region")
        rtotal = sum(r.share for r in pop.regions)
        if pop.regions and abs(rtotal - 1.0) > 1e-6:
            ck.add("population.regions[*].share", f"sums to {rtotal:g}; must be 1")
        for i, r in enumerate(pop.regions):
            p = f"population.regions[{i}]"
            ck.frac(f"{p}.share", r.share)
            ck.num(f"{p}.carbon_g_per_kwh", r.carbon_g_per_kwh, ge=0.0, unit="g/kWh")
            if len(r.availability) != 24:
                ck.add(f"{p}.availability",
                       f"{len(r.availability)} values; need 24 (one per local hour)")
            for h, a in enumerate(r.availability):
                ck.frac(f"{p}.availability[{h}]", a)
        m = self.model
        for key in ("n_params", "n_params_trainable", "bytes_per_param_down",
                    "bytes_per_param_up", "checkpoint_bytes"):
            ck.num(f"model.{key}", getattr(m, key), gt=0.0)
        for key in ("compression_down", "compression_up", "secagg_expansion"):
            ck.num(f"model.{key}", getattr(m, key), ge=1.0)
        ck.num("model.header_bytes", m.header_bytes, ge=0.0, unit="B")
        ck.num("model.checkpoints_kept", m.checkpoints_kept, ge=0)
        tp = self.training_plan
        ck.num("training_plan.K", tp.K, ge=1)
        if tp.C is not None and tp.C < tp.K:
            ck.add("training_plan.C",
                   f"{tp.C} < K = {tp.K}; concurrency must be >= K")
        if tp.C is not None and tp.omega is not None:
            ck.add("training_plan.omega", "give C or omega, not both")
        ck.num("training_plan.omega", tp.omega, ge=1.0)
        if (tp.mode == "sync" and tp.C is None and tp.omega is None
                and self.budgets.max_round_failure_prob is None):
            ck.add("training_plan.C", "give C or omega, or budgets.max_round_failure_prob so "
                                      "that the planner can solve C")
        names = [c.name for c in classes]
        for j, name in enumerate(tp.exclude_classes):
            if name not in names:
                ck.add(f"training_plan.exclude_classes[{j}]",
                       f"{name!r} is not a device class name")
        if tp.mode == "async" and tp.C is None:
            ck.add("training_plan.C", "is required for mode='async' (the concurrency)")
        ck.num("training_plan.timeout_s", tp.timeout_s, gt=0.0, unit="s")
        ck.num("training_plan.t_ovh_s", tp.t_ovh_s, ge=0.0, unit="s")
        if tp.local_epochs is not None:
            ck.num("training_plan.local_epochs", tp.local_epochs, gt=0.0)
            if tp.samples_per_client is None:
                ck.add("training_plan.samples_per_client", "is required with local_epochs")
            else:
                self._check_dist(ck, tp.samples_per_client)
        elif tp.local_steps is not None:
            ck.num("training_plan.local_steps", tp.local_steps, ge=1)
            if tp.batch_size is None:
                ck.add("training_plan.batch_size", "is required with local_steps")
            else:
                ck.num("training_plan.batch_size", tp.batch_size, ge=1)
        else:
            ck.add("training_plan.local_epochs",
                   "give local_epochs with samples_per_client, or local_steps with batch_size")
        ck.num("training_plan.max_staleness", tp.max_staleness, ge=0)
        if not tp.windows:
            ck.add("training_plan.windows", "must list at least one UTC hour")
        for j, h in enumerate(tp.windows):
            if not 0 <= h <= 23:
                ck.add(f"training_plan.windows[{j}]", f"{h}; must be an hour in 0..23")
        self._check_hierarchy(ck)
        if tp.dp.enabled and tp.dp.K_min is None:
            ck.add("training_plan.dp.K_min", "is required when dp.enabled (from DP accounting)")
        cv = self.convergence
        ck.num("convergence.a", cv.a, gt=0.0, lt=1.0)
        ck.num("convergence.b", cv.b, ge=0.0)
        ck.num("convergence.c", cv.c, ge=0.0)
        ck.num("convergence.proxy_clients", cv.proxy_clients, ge=1)
        ck.num("convergence.error0", cv.error0, gt=0.0)
        ck.num("convergence.target_error", cv.target_error, gt=0.0, lt=cv.error0)
        ck.num("convergence.rounds_sigma", cv.rounds_sigma, ge=0.0)
        ck.num("convergence.rounds_scale", cv.rounds_scale, gt=0.0)
        ck.num("convergence.metric_gap_sd", cv.metric_gap_sd, ge=0.0)
        if not cv.calibration:
            ck.add("convergence.calibration",
                   "no calibration record; a fitted model from simulation runs is required")
        for mode in sorted({r.mode or "" for r in cv.calibration}):
            runs = [r for r in cv.calibration if (r.mode or "") == mode]
            # async runs are calibrated on (K, C) pairs, sync runs (and runs without a mode)
            # on K
            point = (lambda r: (r.K, r.C)) if mode == "async" else (lambda r: r.K)
            what = "(K, C)" if mode == "async" else "K"
            pts = {point(r) for r in runs}
            label = f" ({mode} runs)" if mode else ""
            if len(pts) < 3:
                ck.add("convergence.calibration",
                       f"covers {len(pts)} distinct {what}{label}; need >= 3 (each with >= 2 "
                       "seeds)")
                continue
            for pt in sorted(pts, key=str):
                seeds = {r.seed for r in runs if point(r) == pt}
                if len(seeds) < 2:
                    ck.add("convergence.calibration",
                           f"{what} = {pt}{label} has {len(seeds)} seed; need >= 2")
        for j, r in enumerate(cv.calibration):
            ck.num(f"convergence.calibration[{j}].rounds_to_target", r.rounds_to_target, gt=0)
            ck.num(f"convergence.calibration[{j}].K", r.K, ge=1)
            if r.mode == "async" and r.C is None:
                ck.add(f"convergence.calibration[{j}].C",
                       "is required for an async run (the record holds (K, C) pairs)")
            if r.C is not None and r.C < r.K:
                ck.add(f"convergence.calibration[{j}].C", f"{r.C} < K = {r.K}; must be >= K")
        sv = self.server
        for key in ("n_instances", "cores_per_instance", "mem_gb", "pue"):
            ck.num(f"server.{key}", getattr(sv, key), gt=0.0)
        ck.num("server.pue", sv.pue, ge=1.0)
        ck.frac("server.max_cpu_util", sv.max_cpu_util)
        for key in ("agg_cpu_s_per_update", "agg_cpu_s_per_step", "agg_mem_gb_base",
                    "agg_mem_gb_per_buffered_update", "power_w"):
            ck.num(f"server.{key}", getattr(sv, key), ge=0.0)
        CostRates.check_rates(ck, {k: getattr(self.cost_rates, k) for k in CostRates.RATES})
        runs = self.cost_rates.measured_runs
        for j, r in enumerate(runs):
            ck.num(f"cost_rates.measured_runs[{j}].co2e_kg", r.co2e_kg, ge=0.0, unit="kg")
            ck.num(f"cost_rates.measured_runs[{j}].C", r.C, gt=0.0)
            x = r.R if self.training_plan.mode == "sync" else r.hours
            need = "R" if self.training_plan.mode == "sync" else "hours"
            if x is None:
                ck.add(f"cost_rates.measured_runs[{j}].{need}",
                       f"is required for mode={self.training_plan.mode!r}")
            else:
                ck.num(f"cost_rates.measured_runs[{j}].{need}", x, gt=0.0)
        if runs and len(runs) < 2:
            ck.add("cost_rates.measured_runs", f"{len(runs)} run; the carbon proxy needs >= 2")
        if runs and self.cost_rates.proxy_gap_warn is None:
            ck.add("cost_rates.proxy_gap_warn", "is required when measured_runs is given")
        ck.num("cost_rates.proxy_gap_warn", self.cost_rates.proxy_gap_warn, gt=0.0)
        inf = self.inference
        if len(inf.requests_per_device_day) != len(classes):
            ck.add("inference.requests_per_device_day",
                   f"{len(inf.requests_per_device_day)} values; need one per device class "
                   f"({len(classes)})")
        for j, r in enumerate(inf.requests_per_device_day):
            ck.num(f"inference.requests_per_device_day[{j}]", r, ge=0.0)
        ck.num("inference.latency_slo_p95_ms", inf.latency_slo_p95_ms, gt=0.0, unit="ms")
        ck.frac("inference.min_on_device_share", inf.min_on_device_share)
        ck.num("inference.cloud_requests_per_day", inf.cloud_requests_per_day, ge=0.0)
        ck.num("inference.refresh_downloads_per_device_day",
               inf.refresh_downloads_per_device_day, ge=0.0)
        b = self.budgets
        b.check(ck)
        for j, name in enumerate(self.levers.exclude_class):
            if name not in names:
                ck.add(f"levers.exclude_class[{j}]", f"{name!r} is not a device class name")
        mc = self.monte_carlo
        for key in ("n_mc", "n_outer", "n_mc_grid"):
            ck.num(f"monte_carlo.{key}", getattr(mc, key), ge=10)
        ck.num("monte_carlo.confidence", mc.confidence, gt=0.0, lt=1.0)
        ck.num("monte_carlo.n_seeds", mc.n_seeds, ge=1)
        ck.raise_all()
        # budget infeasible whatever the plan
        if b.max_cpu_s_per_device_day is not None and len(inf.requests_per_device_day) == len(
                classes):
            for i, c in enumerate(classes):
                need = (inf.min_on_device_share * inf.requests_per_device_day[i]
                        * c.infer_s_per_request)
                if need > b.max_cpu_s_per_device_day:
                    raise BudgetInfeasibleError(
                        "inference CPU floor",
                        f"budgets.max_cpu_s_per_device_day: {b.max_cpu_s_per_device_day:g} s < "
                        f"{need:g} s needed by inference alone at min_on_device_share for class "
                        f"{c.name!r}", field="budgets.max_cpu_s_per_device_day",
                        shortfall=need - b.max_cpu_s_per_device_day)
        return self

    def _check_hierarchy(self, ck: _Checker):
        tp, h = self.training_plan, self.hierarchy
        if tp.topology == "flat":
            if h is not None:
                ck.add("hierarchy", "is used only with training_plan.topology = 'hierarchical'")
            return
        if h is None:
            ck.add("hierarchy", "is required for training_plan.topology = 'hierarchical' "
                                "(device groups, edge capacities and costs)")
            return
        if tp.mode != "sync":
            ck.add("training_plan.mode", "'hierarchical' topology is planned for mode = 'sync'")
        n, m = len(h.group_demand), len(h.capacities)
        if n == 0 or m == 0:
            ck.add("hierarchy.group_demand" if n == 0 else "hierarchy.capacities",
                   "must list at least one entry")
            return
        for j, v in enumerate(h.group_demand):
            ck.num(f"hierarchy.group_demand[{j}]", v, ge=0.0, unit="1/s")
        for j, v in enumerate(h.capacities):
            ck.num(f"hierarchy.capacities[{j}]", v, ge=0.0, unit="1/s")
        costs = h.edge_costs if isinstance(h.edge_costs, list) else [h.edge_costs] * m
        if len(costs) != m:
            ck.add("hierarchy.edge_costs", f"{len(costs)} values; need one per host ({m})")
        for j, v in enumerate(costs):
            ck.num(f"hierarchy.edge_costs[{j}]", v, ge=0.0)
        if (h.group_costs is None) == (h.homes is None):
            ck.add("hierarchy.group_costs", "give group_costs (groups x hosts) or homes")
        if h.group_costs is not None:
            if len(h.group_costs) != n or any(len(r) != m for r in h.group_costs):
                ck.add("hierarchy.group_costs", f"must be {n} x {m} (groups x hosts)")
            else:
                for i, row in enumerate(h.group_costs):
                    for j, v in enumerate(row):
                        ck.num(f"hierarchy.group_costs[{i}][{j}]", v, ge=0.0)
        for key, ids in (("homes", h.homes), ("association", h.association)):
            if ids is None:
                continue
            if len(ids) != n:
                ck.add(f"hierarchy.{key}", f"{len(ids)} values; need one per group ({n})")
            lo = -1 if key == "association" else 0
            for j, v in enumerate(ids):
                if not lo <= v < m:
                    ck.add(f"hierarchy.{key}[{j}]", f"{v}; must be a host index in 0..{m - 1}"
                                                    + (" or -1" if lo < 0 else ""))
        ck.num("hierarchy.local_to_global_ratio", h.local_to_global_ratio, gt=0.0)
        ck.frac("hierarchy.participation_ratio", h.participation_ratio)
        ck.num("hierarchy.time_limit", h.time_limit, gt=0.0, unit="s")
        ck.num("hierarchy.edge_agg_s", h.edge_agg_s, ge=0.0, unit="s")
        ck.num("hierarchy.backbone_mbps", h.backbone_mbps, gt=0.0, unit="Mbit/s")
        ck.num("hierarchy.backbone_rtt_s", h.backbone_rtt_s, ge=0.0, unit="s")

    @staticmethod
    def _check_dist(ck: _Checker, d: Distribution):
        p = "training_plan.samples_per_client"
        if d.dist == "constant":
            if d.value is None:
                ck.add(f"{p}.value", "is required for dist='constant'")
            else:
                ck.num(f"{p}.value", d.value, gt=0.0)
        elif d.dist == "lognormal":
            if d.mean is None or d.sigma is None:
                ck.add(f"{p}.mean", "mean and sigma are required for dist='lognormal'")
            else:
                ck.num(f"{p}.mean", d.mean, gt=0.0)
                ck.num(f"{p}.sigma", d.sigma, ge=0.0)
        elif not d.values:
            ck.add(f"{p}.values", "is required (non-empty) for dist='empirical'")
        else:
            for j, v in enumerate(d.values):
                ck.num(f"{p}.values[{j}]", v, gt=0.0)

    # -- helpers ---------------------------------------------------------------------
    def canonical_dict(self) -> dict:
        """:meth:`to_dict` without unset (None) fields, also inside lists of tables, so that
        the scenario dumps to TOML and loads back equal."""
        return _drop_none(self.to_dict())

    def defaults_applied(self) -> list[tuple[str, Any]]:
        """``(field path, value)`` of every input the scenario left at its schema default
        (a value, not an absent optional): ``device_classes[1].bw_sigma``,
        ``server.reservation``, ... Empty-list defaults ("none") are not listed."""
        out: list[tuple[str, Any]] = []

        def walk(model: pydantic.BaseModel, path: str):
            for name, info in type(model).model_fields.items():
                value = getattr(model, name)
                p = f"{path}.{name}" if path else name
                if isinstance(value, pydantic.BaseModel):
                    walk(value, p)
                elif isinstance(value, list) and value and isinstance(value[0],
                                                                      pydantic.BaseModel):
                    for i, v in enumerate(value):
                        walk(v, f"{p}[{i}]")
                elif (name not in model.model_fields_set and info.default is not None
                      and not (isinstance(value, list) and not value)):
                    out.append((p, value))

        for section in ("device_classes", "population", "model", "training_plan",
                        "convergence", "server", "cost_rates", "inference", "monte_carlo"):
            value = getattr(self, section)
            if isinstance(value, list):
                for i, v in enumerate(value):
                    walk(v, f"{section}[{i}]")
            else:
                walk(value, section)
        return out

    def tag(self, field: str) -> str:
        """The provenance tag of an input field path (bare numbers are ``assumed``)."""
        return self.provenance.get(field, "assumed")

    def with_changes(self, changes: dict[str, Any]) -> DeploymentPlanProblem:
        """A validated copy with dotted paths changed (``training_plan.K``, ...)."""
        data = self.to_dict()
        for path, value in changes.items():
            node = data
            parts = path.split(".")
            for part in parts[:-1]:
                node = node[part]
            node[parts[-1]] = value
        return type(self).from_dict(data)

    def _class_table(self, per_class: dict[str, list]) -> dict[str, np.ndarray]:
        """One entry per declared device class (``class`` its name, ``included`` whether the
        plan trains on it): the estimates of an included class, NaN for one the plan drops
        (excluded, or unfit for the model)."""
        names = [c.name for c in self.device_classes]
        row = {name: j for j, name in enumerate(per_class.get("class", []))}
        table = {"class": np.array(names), "included": np.array([n in row for n in names])}
        for key, values in per_class.items():
            if key != "class":
                table[key] = np.array([values[row[n]] if n in row else np.nan for n in names],
                                      dtype=float)
        return table

    def with_monte_carlo(self, **sizes) -> DeploymentPlanProblem:
        """The problem with the given ``monte_carlo`` fields (``n_mc``, ``n_outer``, ``seed``;
        None keeps the scenario's), checked by the rules of a scenario file."""
        changes = {f"monte_carlo.{k}": v for k, v in sizes.items() if v is not None}
        return self.with_changes(changes) if changes else self

    def solve(self, *, method: str | None = None, n_mc: int | None = None,
              seed: int | None = None) -> SolveResult:
        """Run the planner; the verdict is the status (``go``, ``conditional``, ``no_go``),
        the objective the P90 days to target, and the decisions the per-class burden."""
        from jointopt.solvers.planner.gates import evaluate

        self.check_method(method)
        from jointopt.solvers.base import Timer

        with Timer() as t:
            ev = evaluate(self.with_monte_carlo(n_mc=n_mc, seed=seed))
        est = ev.estimates
        return PlanSolveResult(
            kind=self.kind, scenario=self.name, status=ev.verdict.lower().replace("-", "_"),
            objective=float(est.values.get("days_p90", float("nan"))), solver="planner-montecarlo",
            solve_time_s=t.seconds, iterations=int(ev.n_mc),
            decisions=self._class_table(ev.estimates.per_class),
            diagnostics={"verdict": ev.verdict, "reasons": ev.reasons,
                         "gates": {g: s["status"] for g, s in ev.gates.items()},
                         **{k: v for k, v in est.values.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}})


__all__ = ["BudgetInfeasibleError", "DeploymentPlanProblem", "PlannerInputError"]
