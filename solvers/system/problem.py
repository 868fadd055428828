"""One edge system, one plan: the scenario of kind ``edge_system`` as a validated value.

A deployment described once: devices that train by hierarchical FL and serve inference
requests, edge hosts that aggregate and take offloaded requests, a cloud, one layered
model with early exits (or candidate cuts), and the training settings. The plan joins the
toolkit's problem kinds (see :mod:`jointopt.solvers.system.loop`); this module holds the
scenario, its validation and the quantities every stage derives from it.

**Project extension**: no source system plans all of this at once. Every modelling choice
below is the project's own and is named where it is made.

Scenario layout (TOML)::

    kind = "edge_system"
    [devices]    count; per device (scalar, list, or a seeded draw {dist = "uniform" |
                 "lognormal", ...} as in the joint allocator's [clients]): arrival_rate
                 (lambda_n, 1/s), deadline (tau_n, s), data_weight, f_device (FLOP/s),
                 uplink_rate (bit/s), ood_ratio, the allocator's cost_train, cost_download,
                 cost_service, cap, budget, mu_max, q_min; home (host index per device,
                 default: a seeded uniform draw) or device_costs (N x M)
    [hosts]      count; capacity (R_m, requests/s a host may take), f_host (FLOP/s),
                 edge_cost (c^e_m per model exchange with the cloud), delay_home,
                 delay_other (s, device-host network delay)
    [cloud]      f_cloud (FLOP/s), rtt (mean WAN delay, s)
    [model]      a layered network (preset or per-block lists, as split_learning's
                 [network]), exits = [device exit, edge exit] (early-exit mode) or cuts
                 (split mode), [model.entropy] (split_learning's synthetic confidence model),
                 cloud_acc_main / cloud_acc_ood (the cloud exit), threshold_grid
    [inference]  mode = "early_exit" | "split" | "device_only"
    [training]   local_to_global_ratio, participation_ratio, rounds, model_size_mb,
                 [training.convergence], [training.accuracy], [training.controller],
                 [training.state] (as in joint_training_inference), exit_rule, pi,
                 device_data, host_data, cloud_data (exit weights, cis_early_exit)
    [placement]  method ("auto", "highs", "heuristic"), time_limit, beta, association
    [loop]       max_iters, tol, w_grid
    [simulation] rounds, slot (s): the online run of ``jointopt simulate``
    [deployment] base (a deployment_plan scenario, optional), edge_agg_s, backbone_mbps,
                 backbone_rtt_s, and any of deployment_plan's device_classes, population,
                 convergence, server, training_plan, inference, model, levers, monte_carlo
                 (over the base's): the gates of ``jointopt plan`` on the hierarchical
                 topology
    [budgets]    deployment_plan's budgets (deadline_days, max_cloud_usd, max_co2e_kg,
                 max_battery_pct_per_day, ...) and latency_slo_p95_ms; each optional
    [costs]      deployment_plan's cost rates (instance_hour_usd, egress_gb_usd, ...); each
                 optional, over the base's
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Literal

import numpy as np
import pydantic
from jointopt.models import split as sm
from jointopt.models.checks import as_vector, check_range, culprit
from jointopt.models.errors import InfeasibleError, ValidationError
from jointopt.solvers.base import (
    Count,
    ProblemBase,
    Section,
    Seed,
    SolveResult,
    Vector,
    check_seed,
    check_size,
    vector_count,
)
from jointopt.solvers.jti.problem import (
    AccuracySpec,
    ControllerSpec,
    ConvergenceSpec,
    _draw,
)
from jointopt.solvers.planner.problem import Budgets as PlannerBudgets
from jointopt.solvers.planner.problem import CostRates, _Checker
from jointopt.solvers.split.problem import Entropy, Network

# field name -> (default or None when required, description)
DEVICE_FIELDS: dict[str, tuple[float | None, str]] = {
    "arrival_rate": (None, "inference request rate lambda_n (1/s)"),
    "deadline": (None, "request deadline tau_n (s)"),
    "data_weight": (1.0, "relative training-data size p_n"),
    "f_device": (None, "device compute speed (FLOP/s)"),
    "uplink_rate": (None, "device uplink rate (bit/s)"),
    "ood_ratio": (0.0, "hard (out-of-distribution) requests per main request"),
    "cost_train": (None, "resource cost of one participation c_tr_n"),
    "cost_download": (None, "resource cost of one download c_dl_n"),
    "cost_service": (None, "resource cost of one unit of service rate c_inf_n"),
    "cap": (math.inf, "hard per-round resource cap R_n"),
    "budget": (math.inf, "long-run average resource budget"),
    "mu_max": (None, "largest on-device service rate (1/s)"),
    "q_min": (0.01, "smallest participation probability"),
}

HOST_FIELDS: dict[str, tuple[float | None, str]] = {
    "capacity": (None, "requests per second the host may take (R_m)"),
    "f_host": (None, "host compute speed (FLOP/s)"),
    "edge_cost": (1.0, "cost of one host-cloud model exchange (c^e_m)"),
    "delay_home": (0.005, "network delay device -> its home host (s)"),
    "delay_other": (0.012, "network delay device -> another host (s)"),
}


def _columns(data, fields: dict, section: str, extra: tuple[str, ...]) -> dict:
    """A section of per-item fields: scalars broadcast, lists kept, seeded draws taken."""
    if not isinstance(data, dict):
        raise ValidationError(section, "must be a table of per-item fields")
    for key in data:
        if key not in fields and key not in ("count", "seed") + extra:
            raise ValidationError(f"{section}.{key}", "is not a known field")
    vectors = {k: v for k, v in data.items() if k in fields}
    # the size limits are named as the sections: devices, hosts
    n = vector_count({"count": data["count"]} if "count" in data else vectors, section,
                     limit=section)
    seed = check_seed(f"{section}.seed", data.get("seed", 0))
    rng = np.random.default_rng(seed)
    out = {"count": n, "seed": seed, **{k: data[k] for k in extra if k in data}}
    for key, (default, _) in fields.items():
        value = data.get(key, default)
        if value is None:
            raise ValidationError(f"{section}.{key}", "is required")
        if isinstance(value, dict):
            value = _draw(key, value, n, rng, section=section)
        out[key] = as_vector(f"{section}.{key}", value, n)
    return out


class Devices(Section):
    """Per-device vectors of length ``count``; ``home`` / ``device_costs`` tie devices to hosts."""

    count: int
    seed: Seed = 0
    arrival_rate: Vector
    deadline: Vector
    data_weight: Vector
    f_device: Vector
    uplink_rate: Vector
    ood_ratio: Vector
    cost_train: Vector
    cost_download: Vector
    cost_service: Vector
    cap: Vector
    budget: Vector
    mu_max: Vector
    q_min: Vector
    home: list[int] | None = None
    device_costs: list[list[float]] | None = None

    @pydantic.model_validator(mode="before")
    @classmethod
    def _cols(cls, data):
        return _columns(data, DEVICE_FIELDS, "devices", ("home", "device_costs"))

    @pydantic.model_validator(mode="after")
    def _ranges(self):
        check_range("devices.arrival_rate", self.arrival_rate, ge=0.0)
        check_range("devices.deadline", self.deadline, gt=0.0)
        check_range("devices.data_weight", self.data_weight, gt=0.0)
        for key in ("f_device", "uplink_rate", "mu_max"):
            check_range(f"devices.{key}", getattr(self, key), gt=0.0)
        check_range("devices.ood_ratio", self.ood_ratio, ge=0.0)
        for key in ("cost_train", "cost_download", "cost_service"):
            check_range(f"devices.{key}", getattr(self, key), ge=0.0)
        check_range("devices.cap", self.cap, gt=0.0, finite=False)
        check_range("devices.budget", self.budget, gt=0.0, finite=False)
        check_range("devices.q_min", self.q_min, gt=0.0, le=1.0)
        if self.home is not None and self.device_costs is not None:
            raise ValidationError("devices.home", "give either home or device_costs, not both")
        if self.home is not None and len(self.home) != self.count:
            raise ValidationError("devices.home", f"must have one entry per device "
                                                  f"({self.count}), got {len(self.home)}")
        return self


class Hosts(Section):
    """Per-host vectors of length ``count``."""

    count: int
    seed: Seed = 0
    capacity: Vector
    f_host: Vector
    edge_cost: Vector
    delay_home: Vector
    delay_other: Vector

    @pydantic.model_validator(mode="before")
    @classmethod
    def _cols(cls, data):
        return _columns(data, HOST_FIELDS, "hosts", ())

    @pydantic.model_validator(mode="after")
    def _ranges(self):
        check_range("hosts.capacity", self.capacity, ge=0.0)
        check_range("hosts.f_host", self.f_host, gt=0.0)
        for key in ("edge_cost", "delay_home", "delay_other"):
            check_range(f"hosts.{key}", getattr(self, key), ge=0.0)
        return self


class Cloud(Section):
    """The cloud: compute ``f_cloud`` (FLOP/s) and the mean WAN delay ``rtt`` (s). A
    request sent to the cloud pays its upload, an exponential WAN delay of mean ``rtt``
    and the cloud's compute; the cloud is taken as ample (no queue) [project choice]."""

    f_cloud: float = 1e11
    rtt: float = 0.08

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("cloud.f_cloud", self.f_cloud, gt=0.0)
        check_range("cloud.rtt", self.rtt, gt=0.0)
        return self


class ModelSpec(Section):
    """The layered network and its confidence model.

    Early-exit mode: ``exits = [b1, b2]`` puts exit 1 after block b1 on the devices and exit
    2 after block b2 on the edge hosts; the cloud runs the whole network (exit 3). An
    offloaded request carries the activation at the device exit and the host continues from
    there (distributed early exits). Split mode: the candidate ``cuts`` (default all inner
    cuts) and the host runs the rest of the network. ``entropy`` is split_learning's
    synthetic confidence model (one entry per candidate cut in split mode, one set in
    early-exit mode; its server accuracies are the edge's); ``cloud_acc_main`` /
    ``cloud_acc_ood`` the cloud's exit (default: the edge's). ``threshold_grid``: points of
    each device's offload curve."""

    preset: str | None = "digits_cnn"
    macs: list[float] | None = None
    params: list[float] | None = None
    act_elems: list[float] | None = None
    aux_macs: list[float] | None = None
    aux_params: list[float] | None = None
    bits_per_element: float = 32.0
    n_classes: int = 10
    exits: list[int] = [2, 4]
    cuts: list[int] | None = None
    entropy: Entropy = Entropy()
    cloud_acc_main: float | None = None
    cloud_acc_ood: float | None = None
    threshold_grid: Count("grid") = 65

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("model.n_classes", self.n_classes, ge=2)
        check_range("model.threshold_grid", self.threshold_grid, ge=2)
        for key in ("cloud_acc_main", "cloud_acc_ood"):
            if getattr(self, key) is not None:
                check_range(f"model.{key}", getattr(self, key), ge=0.0, le=1.0)
        net = self.net
        L = net.n_blocks
        if len(self.exits) != 2:
            raise ValidationError("model.exits", f"must list the device and the edge exit "
                                                 f"blocks [b1, b2], got {self.exits}")
        b1, b2 = self.exits
        if not 1 <= b1 < b2 <= L:
            raise ValidationError("model.exits", f"must satisfy 1 <= b1 < b2 <= {L} (blocks "
                                                 f"of the network), got {self.exits}")
        for i, s in enumerate(self.cuts or []):
            if not 1 <= s <= L - 1:
                raise ValidationError(f"model.cuts[{i}]", f"must lie in 1..{L - 1}, got {s}")
        return self

    def network_section(self) -> Network:
        keys = ("preset", "macs", "params", "act_elems", "aux_macs", "aux_params",
                "bits_per_element")
        return Network(**{k: getattr(self, k) for k in keys})

    @cached_property
    def net(self) -> sm.LayeredNetwork:
        return self.network_section().build(self.n_classes)


class Inference(Section):
    mode: Literal["early_exit", "split", "device_only"] = "early_exit"


class StateSpec(Section):
    """The state the allocation round is solved at (as in joint_training_inference)."""

    K: float = 1.0
    Z: float = 0.0

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("training.state.K", self.K, ge=0.0)
        check_range("training.state.Z", self.Z, ge=0.0)
        return self


class Training(Section):
    """Hierarchical FL (``local_to_global_ratio`` l, ``participation_ratio`` rho,
    ``rounds`` of global aggregation, ``model_size_mb``, default: the network's float32
    parameters), the joint allocator's convergence model, accuracy map, controller and
    state, and the exit-weight rule of cis_early_exit (``exit_rule``, ``pi``, the data
    sizes of devices in total, of each host and of the cloud)."""

    local_to_global_ratio: float = 4.0
    participation_ratio: float = 1.0
    rounds: Count("rounds") = 50
    model_size_mb: float | None = None
    convergence: ConvergenceSpec = ConvergenceSpec(a=0.8, b=0.3, c=0.02)
    accuracy: AccuracySpec = AccuracySpec()
    controller: ControllerSpec = ControllerSpec()
    state: StateSpec = StateSpec()
    exit_rule: str = "serving_rate"
    pi: str | list[float] = "p0"
    device_data: float = 1000.0
    host_data: float = 100.0
    cloud_data: float = 100.0

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("training.local_to_global_ratio", self.local_to_global_ratio, gt=0.0)
        check_range("training.participation_ratio", self.participation_ratio, ge=0.0, le=1.0)
        check_range("training.rounds", self.rounds, ge=1)
        if self.model_size_mb is not None:
            check_range("training.model_size_mb", self.model_size_mb, gt=0.0)
        for key in ("device_data", "host_data", "cloud_data"):
            check_range(f"training.{key}", getattr(self, key), ge=0.0)
        from jointopt.solvers.cis import CooperativeInferenceProblem

        if self.exit_rule not in CooperativeInferenceProblem.methods:
            raise ValidationError("training.exit_rule", f"must be one of "
                                  f"{', '.join(CooperativeInferenceProblem.methods)}, got "
                                  f"{self.exit_rule!r}")
        return self


class Placement(Section):
    """The placement stage: ``method`` of the hfl kind (``auto``, the default: hfl's exact
    MILP ``highs`` up to ``exact_limit`` (5,000) device-host pairs, its ``heuristic`` with a
    staged lower bounds beyond; ``highs`` or ``heuristic`` force one), ``time_limit`` (s)
    per solve (an exact solve stopped there keeps its incumbent and reports its gap),
    ``beta`` > 0 switches on hfl's latency-aware objective, ``association`` fixes the
    association (one host index or -1 per device) instead of solving it. The result reports
    which method ran, why, and its bound and gap (``diagnostics.placement``)."""

    method: Literal["auto", "highs", "heuristic"] = "auto"
    exact_limit: int = 5_000
    time_limit: float = 10.0
    beta: float = 0.0
    association: list[int] | None = None

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("placement.time_limit", self.time_limit, gt=0.0)
        check_range("placement.beta", self.beta, ge=0.0)
        check_range("placement.exact_limit", self.exact_limit, ge=0)
        return self

    def resolved_method(self, n: int, m: int) -> str:
        """The hfl method the placement runs for ``n`` devices and ``m`` hosts."""
        if self.method != "auto":
            return self.method
        return "highs" if n * m <= self.exact_limit else "heuristic"


class Loop(Section):
    """The joint loop: at most ``max_iters`` iterates; it stops when the association is
    unchanged and no device's edge load moves by more than ``tol`` times the largest request
    rate (converged), or when the association is unchanged and the system objective moved by
    less than ``objective_tol``, or when ``patience`` iterates in a row did not raise the
    best objective by more than ``objective_tol`` (stalled). ``w_grid``: sojourn-cap grid of
    the split solver per host."""

    max_iters: int = 10
    tol: float = 1e-3
    objective_tol: float = 1e-4
    patience: int = 2
    w_grid: Count("grid") = 60

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("loop.max_iters", self.max_iters, ge=1)
        check_range("loop.tol", self.tol, gt=0.0)
        check_range("loop.objective_tol", self.objective_tol, ge=0.0)
        check_range("loop.patience", self.patience, ge=1)
        check_range("loop.w_grid", self.w_grid, ge=2)
        return self


class Simulation(Section):
    """``jointopt simulate``: rounds of the online run and the slot length (s) of a round."""

    rounds: Count("rounds") = 100
    slot: float = 1.0

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("simulation.rounds", self.rounds, ge=1)
        check_range("simulation.slot", self.slot, gt=0.0)
        return self


#: deployment_plan sections a system scenario may carry in ``[deployment]`` (over the base's)
PLANNER_SECTIONS = ("device_classes", "population", "convergence", "server", "training_plan",
                    "inference", "model", "levers", "monte_carlo")
#: the ones with no default a system could give: the base or ``[deployment]`` must hold them
PLANNER_REQUIRED = ("device_classes", "population", "convergence", "server")


class Deployment(Section):
    """The deployment gates (``jointopt plan``) on the hierarchical topology the placement
    gives. What the system does not describe (the fleet's telemetry ``device_classes`` and
    ``population``, the ``convergence`` calibration, the aggregation ``server``, ...) comes
    from ``base``, a ``deployment_plan`` scenario (built-in name or path), and/or from the
    same sections of ``deployment_plan`` written here (``[deployment.server]``,
    ``[[deployment.device_classes]]``, ... one of :data:`PLANNER_SECTIONS`), which override
    the base's field by field. Without a base, ``device_classes``, ``population``,
    ``convergence`` and ``server`` must be here and ``[costs]`` must give every cost rate.
    The plan then adds the edge aggregation step ``edge_agg_s`` (s), the host-cloud link
    (``backbone_mbps``, ``backbone_rtt_s``) and what the system itself knows (see
    :func:`jointopt.solvers.system.deployment.deployment_problem`)."""

    base: str | None = None
    edge_agg_s: float = 0.5
    backbone_mbps: float = 100.0
    backbone_rtt_s: float = 0.05
    device_classes: list[dict] | None = None
    population: dict | None = None
    convergence: dict | None = None
    server: dict | None = None
    training_plan: dict | None = None
    inference: dict | None = None
    model: dict | None = None
    levers: dict | None = None
    monte_carlo: dict | None = None

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("deployment.edge_agg_s", self.edge_agg_s, ge=0.0)
        check_range("deployment.backbone_mbps", self.backbone_mbps, gt=0.0)
        check_range("deployment.backbone_rtt_s", self.backbone_rtt_s, ge=0.0)
        if self.base is None and self.sections():
            for key in PLANNER_REQUIRED:
                if getattr(self, key) is None:
                    raise ValidationError(f"deployment.{key}", "is required without "
                                          "deployment.base (the deployment_plan scenario "
                                          "that would give it)")
        return self

    def sections(self) -> dict:
        """The deployment_plan sections given here."""
        return {k: getattr(self, k) for k in PLANNER_SECTIONS if getattr(self, k) is not None}


class Budgets(PlannerBudgets):
    """``[budgets]``: the deployment gates' thresholds, deployment_plan's ``[budgets]``
    (deadline, failure, device burden, coverage, money, carbon; every field optional and
    overriding the base's; one given nowhere leaves its gate unevaluated), plus
    ``latency_slo_p95_ms``, the inference SLO (deployment_plan's
    ``inference.latency_slo_p95_ms``; default: the base's, else the largest device
    deadline)."""

    latency_slo_p95_ms: float | None = None

    @pydantic.model_validator(mode="after")
    def _valid(self):
        ck = _Checker()
        self.check(ck)
        ck.num("budgets.latency_slo_p95_ms", self.latency_slo_p95_ms, gt=0.0, unit="ms")
        ck.raise_all()
        return self


class _CostsBase(Section):
    @pydantic.model_validator(mode="after")
    def _valid(self):
        ck = _Checker()
        CostRates.check_rates(ck, self.given(), prefix="costs")
        ck.raise_all()
        return self

    def given(self) -> dict:
        """The rates given (field -> value)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


Costs = pydantic.create_model(
    "Costs", __base__=_CostsBase, __module__=__name__,
    **{key: (float | None, None) for key in CostRates.RATES})
Costs.__doc__ = ("``[costs]``: deployment_plan's cost rates (``instance_hour_usd``, "
                 "``egress_gb_usd``, ... ``backbone_gb_usd``), each optional and overriding "
                 "the base's ``[cost_rates]``; without a base every one but "
                 "``backbone_gb_usd`` is required.")


class EdgeSystemProblem(ProblemBase):
    """One deployment, one plan: placement, serving (split or early exits), allocation.

    ``solve`` runs the siloed plan (each stage once, with fixed guesses) and the joint
    block-coordinate loop from it (:mod:`jointopt.solvers.system.loop`); both are scored by
    one function, :func:`jointopt.solvers.system.evaluate.evaluate_plan`. The loop is a
    heuristic over exact stage solvers: it never claims optimality for the joint problem."""

    kind = "edge_system"
    methods = ("joint", "siloed")
    simulator = "jointopt.system:simulate_command"   # both plans run online

    name: str = "unnamed"
    description: str = ""
    devices: Devices
    hosts: Hosts
    cloud: Cloud = Cloud()
    model: ModelSpec = ModelSpec()
    inference: Inference = Inference()
    training: Training = Training()
    placement: Placement = Placement()
    loop: Loop = Loop()
    deployment: Deployment = Deployment()
    budgets: Budgets = Budgets()
    costs: Costs = Costs()
    simulation: Simulation = Simulation()

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        n, m = self.N, self.M
        check_size("devices.count x hosts.count", n * m, "device_host_pairs")
        dev = self.devices
        if dev.home is not None:
            h = np.asarray(dev.home, float)
            bad = (h != np.round(h)) | (h < 0) | (h >= m)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValidationError(culprit("devices.home", i),
                                      f"must be a host index in 0..{m - 1}, got {dev.home[i]}")
        if dev.device_costs is not None:
            c = np.asarray(dev.device_costs, float)
            if c.shape != (n, m):
                raise ValidationError("devices.device_costs", f"must be {n} x {m} (devices x "
                                                              f"hosts), got shape {c.shape}")
            bad = ~(np.isfinite(c) & (c >= 0))
            if bad.any():
                i, j = np.argwhere(bad)[0]
                raise ValidationError(f"devices.device_costs[{i}][{j}]",
                                      f"must be finite and >= 0, got {c[i, j]!r}")
        a = self.placement.association
        if a is not None:
            if len(a) != n:
                raise ValidationError("placement.association", f"must have one entry per "
                                                               f"device ({n}), got {len(a)}")
            for i, v in enumerate(a):
                if not -1 <= v < m:
                    raise ValidationError(f"placement.association[{i}]",
                                          f"must be a host index in 0..{m - 1} or -1, got {v}")
        self.model.entropy.per_cut(len(self.cuts))
        self._check_feasible()
        return self

    def _check_feasible(self) -> None:
        """What no plan can fix: a deadline below the device's own compute (latency), a cap
        or budget below the least training (hard cap / average budget), and hosts that
        cannot take even the requests devices cannot serve themselves (participation,
        capacity)."""
        dev = self.devices
        if self.mode != "device_only":
            t = np.min([self.device_time(s) for s in self.cuts], axis=0)
            short = t - dev.deadline
            if (short > 0).any():
                i = int(np.argmax(short))
                raise InfeasibleError(
                    "latency", f"{culprit('devices.deadline', i)} = {dev.deadline[i]:g} s is "
                               f"below the device's compute time {t[i]:g} s up to its exit",
                    field=culprit("devices.deadline", i), shortfall=float(short[i]))
        floor = dev.q_min * dev.cost_train
        for field, limit, family in (("cap", dev.cap, "hard cap"),
                                     ("budget", dev.budget, "average budget")):
            short = floor - limit
            if (short > 1e-12).any():
                i = int(np.argmax(short))
                raise InfeasibleError(
                    family, f"{culprit('devices.' + field, i)} = {limit[i]:g} is below the "
                            f"least training use q_min*cost_train = {floor[i]:g}",
                    field=culprit("devices." + field, i), shortfall=float(short[i]))
        if self.mode == "device_only":
            short = self.devices.arrival_rate - self.serve_max
            if (short > 1e-9).any():
                i = int(np.argmax(short))
                raise InfeasibleError(
                    "device capacity",
                    f"{culprit('devices.arrival_rate', i)} = {dev.arrival_rate[i]:g} exceeds "
                    f"what the device can serve ({self.serve_max[i]:g} 1/s within its mu_max, "
                    f"cap and budget) and mode = 'device_only' forwards nothing",
                    field=culprit("devices.arrival_rate", i), shortfall=float(short[i]))
        from jointopt.solvers.system.stages import placement_problem

        least = dev.arrival_rate * self.forced_offload
        try:
            placement_problem(self, least).check_feasible()
        except InfeasibleError as exc:
            raise InfeasibleError(
                exc.constraint, f"no placement fits the requests the devices must forward "
                                f"(those beyond what each device can serve): {exc.message}",
                field={"workload": "devices.arrival_rate",
                       "capacities": "hosts.capacity"}.get(exc.field, exc.field),
                shortfall=exc.shortfall) from None

    # -- derived quantities --------------------------------------------------------------
    @property
    def N(self) -> int:
        return self.devices.count

    @property
    def M(self) -> int:
        return self.hosts.count

    @property
    def mode(self) -> str:
        return self.inference.mode

    @property
    def net(self) -> sm.LayeredNetwork:
        return self.model.net

    @cached_property
    def cuts(self) -> list[int]:
        """The candidate device cuts: the device exit in early-exit mode, else the split
        candidates (default every inner cut)."""
        if self.mode != "split":
            return [self.model.exits[0]]
        return list(self.model.cuts) if self.model.cuts else list(range(1, self.net.n_blocks))

    @cached_property
    def homes(self) -> np.ndarray:
        """``h(n)``: given, the cheapest host of ``device_costs``, or a uniform draw seeded by
        ``devices.seed`` (its own stream, so adding a field never moves the homes)."""
        dev = self.devices
        if dev.home is not None:
            return np.asarray(dev.home, dtype=np.int64)
        if dev.device_costs is not None:
            return np.argmin(np.asarray(dev.device_costs, float), axis=1).astype(np.int64)
        return np.random.default_rng([dev.seed, 1]).integers(0, self.M, self.N)

    @cached_property
    def device_costs(self) -> np.ndarray:
        """``c^d`` (N x M): given, or the zero-cost LAN of the homes (0 home, 1 elsewhere)."""
        if self.devices.device_costs is not None:
            out = np.asarray(self.devices.device_costs, float)
        else:
            out = np.ones((self.N, self.M))
            out[np.arange(self.N), self.homes] = 0.0
        out.flags.writeable = False
        return out

    @cached_property
    def delay(self) -> np.ndarray:
        """Device-host network delay (N x M): ``delay_home`` to the home host, else
        ``delay_other``."""
        h = self.hosts
        out = np.broadcast_to(h.delay_other, (self.N, self.M)).copy()
        out[np.arange(self.N), self.homes] = h.delay_home[self.homes]
        return out

    @cached_property
    def model_size_mb(self) -> float:
        t = self.training.model_size_mb
        return float(t) if t is not None else float(self.net.params.sum() * 4 / 1e6)

    def device_time(self, cut: int) -> np.ndarray:
        """Device compute per request up to its exit at ``cut`` (client part + exit head)."""
        net = self.net
        return (float(net.flops_client(cut)) + float(net.flops_aux(cut))) / self.devices.f_device

    def upload_time(self, cut: int) -> np.ndarray:
        """Upload of the activation at ``cut`` (the raw input at cut 0)."""
        return float(self.net.act_bits(cut, self.model.bits_per_element)) \
            / self.devices.uplink_rate

    def host_flops(self, cut: int) -> float:
        """FLOPs a host runs per offloaded request: up to the edge exit (early-exit mode) or
        the rest of the network (split mode)."""
        net = self.net
        if self.mode == "split":
            return float(net.flops_server(cut))
        b2 = self.model.exits[1]
        return float(net.flops_client(b2) - net.flops_client(cut) + net.flops_aux(b2))

    def host_service_rate(self, cut: int) -> np.ndarray:
        """``mu_m``: requests per second host m serves (M/M/1 with exponential service)."""
        return self.hosts.f_host / self.host_flops(cut)

    @cached_property
    def serve_max(self) -> np.ndarray:
        """The most requests per second a device can serve itself: its service rate within
        ``mu_max``, the cap and the budget after the least training, over the allocator's
        stability margin (``lambda (1 + margin) <= mu``)."""
        dev = self.devices
        room = np.minimum(dev.cap, dev.budget) - dev.q_min * dev.cost_train
        with np.errstate(divide="ignore", invalid="ignore"):
            by_use = np.where(dev.cost_service > 0, room / np.where(dev.cost_service > 0,
                                                                     dev.cost_service, 1.0),
                              np.inf)
        margin = 1.0 + self.training.controller.service_margin
        return np.maximum(np.minimum(dev.mu_max, by_use) / margin * (1 - 1e-9), 0.0)

    @cached_property
    def forced_offload(self) -> np.ndarray:
        """The least share of its requests a device must forward (what it cannot serve)."""
        lam = self.devices.arrival_rate
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(lam > 0, np.clip(1.0 - self.serve_max / np.where(lam > 0, lam, 1.0),
                                             0.0, 1.0), 0.0)

    def entropy_model(self, cut: int, *, tier: str = "edge") -> sm.BetaEntropyModel:
        """The confidence model at ``cut``; ``tier="cloud"`` swaps in the cloud exit's
        accuracies."""
        j = self.cuts.index(cut)
        par = self.model.entropy.per_cut(len(self.cuts))
        kw = {k: float(v[j]) for k, v in par.items()}
        if tier == "cloud":
            mod = self.model
            kw["server_acc_main"] = mod.cloud_acc_main if mod.cloud_acc_main is not None \
                else kw["server_acc_main"]
            kw["server_acc_ood"] = mod.cloud_acc_ood if mod.cloud_acc_ood is not None \
                else kw["server_acc_ood"]
        return sm.BetaEntropyModel(**kw, n_classes=self.model.n_classes)

    def solve(self, *, method: str | None = None, **options) -> SolveResult:
        """The plan. ``method="joint"`` (default): the siloed plan, then the joint loop from
        it, returning the best feasible iterate; ``"siloed"``: the siloed plan alone.
        Options: ``max_iters`` (overrides ``loop.max_iters``), ``progress`` (a callable
        taking one line per iterate, e.g. ``print`` to stderr)."""
        from jointopt.solvers.system.loop import solve_system

        return solve_system(self, self.check_method(method), **options)


__all__ = ["DEVICE_FIELDS", "HOST_FIELDS", "EdgeSystemProblem"]
