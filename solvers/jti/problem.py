"""The joint training-inference allocation problem (age of model), as a validated value.

Documented in ``docs/kinds/joint_training_inference.md``. Per client n and round: participation
probability
``q_n``, download probability ``d_n`` and inference service rate ``mu_n``. The problem
holds the client population, the convergence model, the accuracy map, the controller
settings and the state a round is solved at (``K``, ``ebar``, ``Z``).

Per-client fields in a scenario file may be a scalar (same for every client), a list (one
entry per client) or a random draw ``{dist = "uniform", low = .., high = ..}`` /
``{dist = "lognormal", mean = .., sigma = ..}`` taken with ``clients.seed``. Clients may
also be written as a list of tables (``[[clients]]`` in TOML).
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Literal

import numpy as np
import pydantic
from jointopt.models.accuracy import ACCURACY_MAPS
from jointopt.models.checks import as_vector, brief, check_range, culprit
from jointopt.models.convergence import ConvergenceModel
from jointopt.models.drift import DriftModel, LabelDrift
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
    client_subset,
    vector_count,
)

# field name -> (default or None when required, description)
CLIENT_FIELDS: dict[str, tuple[float | None, str]] = {
    "data_weight": (1.0, "relative data size p_n (normalised to sum 1)"),
    "arrival_rate": (None, "mean inference-request rate lambda_n (requests per unit time)"),
    "deadline": (float("inf"), "request deadline tau_n (inf = none)"),
    "cost_train": (None, "resource cost of one participation c_tr_n"),
    "cost_download": (None, "resource cost of one download c_dl_n"),
    "cost_service": (None, "resource cost of one unit of service rate c_inf_n"),
    "cap": (float("inf"), "hard per-round resource cap R_n (inf = none)"),
    "budget": (float("inf"), "long-run average resource budget Rbar_n (inf = none)"),
    "mu_max": (None, "largest service rate mu_max_n"),
    "q_min": (0.01, "smallest participation probability q_min"),
}


def _draw(field: str, spec: dict, n: int, rng: np.random.Generator,
          section: str = "clients") -> np.ndarray:
    """``n`` draws of a ``{dist = "uniform" | "lognormal", ...}`` table; errors name
    ``section.field.key``."""
    spec = dict(spec)
    dist = spec.pop("dist", None)
    try:
        if dist == "uniform":
            lo, hi = float(spec.pop("low")), float(spec.pop("high"))
            if hi < lo:
                raise ValidationError(f"{section}.{field}.high",
                                      f"must be >= low ({lo:g}), got {hi:g}")
            out = rng.uniform(lo, hi, n)
        elif dist == "lognormal":
            mean, sigma = float(spec.pop("mean")), float(spec.pop("sigma"))
            check_range(f"{section}.{field}.mean", mean, gt=0.0)
            check_range(f"{section}.{field}.sigma", sigma, ge=0.0)
            out = rng.lognormal(np.log(mean) - 0.5 * sigma**2, sigma, n)
        else:
            raise ValidationError(f"{section}.{field}.dist",
                                  f"must be 'uniform' or 'lognormal', got {dist!r}")
    except KeyError as exc:
        raise ValidationError(f"{section}.{field}.{exc.args[0]}",
                              f"is required for dist={dist!r}") from None
    if spec:
        raise ValidationError(f"{section}.{field}.{next(iter(spec))}", "is not a known field")
    return out


class Clients(Section):
    """Per-client parameters as read-only float vectors of length ``count``."""

    count: int
    seed: Seed = 0
    data_weight: Vector
    arrival_rate: Vector
    deadline: Vector
    cost_train: Vector
    cost_download: Vector
    cost_service: Vector
    cap: Vector
    budget: Vector
    mu_max: Vector
    q_min: Vector

    @pydantic.model_validator(mode="before")
    @classmethod
    def _columns(cls, data):
        if isinstance(data, list | tuple):  # [[clients]] list of tables
            rows = list(data)
            if not rows:
                raise ValidationError("clients", "must list at least one client")
            for i, row in enumerate(rows):
                if not isinstance(row, dict):
                    raise ValidationError(f"clients[{i}]", "must be a table of client fields")
                for key in row:
                    if key not in CLIENT_FIELDS:
                        raise ValidationError(f"clients[{i}].{key}", "is not a known field")
            data = {"count": len(rows)}
            for key, (default, _) in CLIENT_FIELDS.items():
                if any(key in r for r in rows):
                    missing = [i for i, r in enumerate(rows) if key not in r]
                    if missing and default is None:
                        raise ValidationError(f"clients[{missing[0]}].{key}", "is required")
                    data[key] = [r.get(key, default) for r in rows]
        if not isinstance(data, dict):
            raise ValidationError("clients", "must be a table of per-client fields")
        data = dict(data)
        for key in data:
            if key not in CLIENT_FIELDS and key not in ("count", "seed"):
                raise ValidationError(f"clients.{key}", "is not a known field")
        n = vector_count(data, "clients", limit="clients")
        seed = check_seed("clients.seed", data.get("seed", 0))
        rng = np.random.default_rng(seed)
        out = {"count": n, "seed": seed}
        for key, (default, _) in CLIENT_FIELDS.items():
            value = data.get(key, default)
            if value is None:
                raise ValidationError(f"clients.{key}", "is required")
            if isinstance(value, dict):
                value = _draw(key, value, n, rng)
            out[key] = as_vector(f"clients.{key}", value, n)
        return out

    @pydantic.model_validator(mode="after")
    def _ranges(self):
        check_range("clients.data_weight", self.data_weight, gt=0.0)
        check_range("clients.arrival_rate", self.arrival_rate, ge=0.0)
        check_range("clients.deadline", self.deadline, gt=0.0, finite=False)
        for key in ("cost_train", "cost_download", "cost_service"):
            check_range(f"clients.{key}", getattr(self, key), ge=0.0)
        check_range("clients.cap", self.cap, gt=0.0, finite=False)
        check_range("clients.budget", self.budget, gt=0.0, finite=False)
        check_range("clients.mu_max", self.mu_max, gt=0.0)
        check_range("clients.q_min", self.q_min, gt=0.0, le=1.0)
        return self

    @cached_property
    def p(self) -> np.ndarray:
        """Data weights normalised to sum 1."""
        p = self.data_weight / self.data_weight.sum()
        p.flags.writeable = False
        return p


class ConvergenceSpec(Section):
    """``model = "fitted"`` with ``a, b, c``, or ``model = "analytic"`` with theory constants;
    ``b_rel`` (either model, default 0): variance that grows with the error
    (:mod:`jointopt.models.convergence`)."""

    model: Literal["fitted", "analytic"] = "fitted"
    a: float | None = None
    b: float | None = None
    c: float | None = None
    b_rel: float = 0.0
    lr: float | None = None
    smoothness: float | None = None
    strong_convexity: float | None = None
    local_steps: int | None = None
    grad_sq_bound: float | None = None
    noise_var: float | None = None

    @pydantic.model_validator(mode="after")
    def _complete(self):
        need = (("a", "b", "c") if self.model == "fitted" else
                ("lr", "smoothness", "strong_convexity", "local_steps", "grad_sq_bound",
                 "noise_var"))
        for key in need:
            if getattr(self, key) is None:
                raise ValidationError(f"convergence.{key}", f"is required for model={self.model!r}")
        if self.model == "fitted":
            ConvergenceModel.from_fitted(self.a, self.b, self.c, self.b_rel)  # range checks
        check_range("convergence.b_rel", self.b_rel, ge=0.0)
        return self

    def build(self, p: np.ndarray) -> ConvergenceModel:
        if self.model == "fitted":
            return ConvergenceModel.from_fitted(self.a, self.b, self.c, self.b_rel)
        model = ConvergenceModel.from_smoothness(
            lr=self.lr, smoothness=self.smoothness, strong_convexity=self.strong_convexity,
            local_steps=self.local_steps, grad_sq_bound=self.grad_sq_bound,
            noise_var=self.noise_var, p=p)
        return dataclasses.replace(model, b_rel=self.b_rel) if self.b_rel else model


class AccuracySpec(Section):
    """``map = "affine"`` (acc_max, kappa, acc_min), ``"exponential"`` (+ scale) or
    ``"logistic"`` (+ midpoint, width). ``calibrate``: the family the validation harness
    fits to real training for this scenario (None: ``map``'s own).

    ``aggregation_noise`` (``beta >= 0``, default 0): the surrogate reads a served version's
    accuracy at ``e + beta K_t sqrt(V_t)``, from the error ``K_t`` and the sampled spread
    ``V_t`` of the round that aggregated it (:func:`~jointopt.models.accuracy.aggregation_deficit`).
    What the policies observe, and so what they decide, is unchanged: the controller plans
    without it (its per-round solve needs a spread that adds up over clients). The
    validation harness fits it where ``calibration.aggregation_noise`` is on."""

    map: Literal["affine", "exponential", "logistic"] = "affine"
    calibrate: Literal["affine", "exponential", "logistic"] | None = None
    acc_max: float = 0.95
    acc_min: float = 0.0
    kappa: float = 0.3
    scale: float = 1.0
    midpoint: float = 1.0
    width: float = 0.3
    aggregation_noise: float = 0.0

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("accuracy.aggregation_noise", self.aggregation_noise, ge=0.0)
        self.build()
        return self

    def build(self):
        if self.map == "affine":
            return ACCURACY_MAPS["affine"](self.acc_max, self.kappa, self.acc_min)
        if self.map == "logistic":
            return ACCURACY_MAPS["logistic"](self.acc_max, self.midpoint, self.width,
                                             self.acc_min)
        return ACCURACY_MAPS["exponential"](self.acc_max, self.scale, self.acc_min)


class ControllerSpec(Section):
    """Drift-plus-penalty and block-coordinate-ascent settings.

    ``pricing``: ``"exact"`` (default) prices each client's resource at the virtual-queue
    backlog its decision leaves, ``max(Z + use - budget, 0)`` (the exact one-round drift; a
    few round solves a round, smooth spend at every ``V``); ``"backlog"`` at the backlog
    ``Z`` itself (the textbook linear bound; one solve a round, bang-bang below ``V ~ 10``
    on the default scenario). See :mod:`jointopt.controller`.

    ``closed_loop``: the online policy re-estimates its convergence constants and accuracy
    map every round from what it observes (recursive least squares, forgetting factor
    ``forgetting`` a round) and plans with the estimate (:mod:`jointopt.closed_loop`).
    """

    V: float = 1.0
    pricing: Literal["backlog", "exact"] = "exact"
    service_margin: float = 0.01
    refresh: Literal["download", "download_or_train"] = "download"
    horizon: float | Literal["auto"] = "auto"
    sweeps_per_round: int | None = None
    tol: float = 1e-9
    max_iter: int = 200
    pilot: int | Literal["auto"] = "auto"
    closed_loop: bool = False
    forgetting: float = 0.97

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("controller.V", self.V, gt=0.0)
        check_range("controller.forgetting", self.forgetting, gt=0.0, le=1.0)
        if self.sweeps_per_round is not None:
            check_range("controller.sweeps_per_round", self.sweeps_per_round, ge=1)
        if self.horizon != "auto":
            check_range("controller.horizon", self.horizon, ge=0.0)
        check_range("controller.service_margin", self.service_margin, ge=0.0)
        check_range("controller.tol", self.tol, gt=0.0)
        check_range("controller.max_iter", self.max_iter, ge=1)
        if self.pilot != "auto":
            check_range("controller.pilot", self.pilot, ge=0)
        return self

    def pilot_size(self, n: int) -> int | None:
        """Clients in the pilot that picks a cold start for ``n`` clients (None: no pilot,
        both starts are ascended at full size). ``"auto"``: 10,000 from 100,000 clients on;
        ``0``: never; ``m``: whenever there are more than ``m`` clients."""
        if self.pilot == "auto":
            return 10_000 if n >= 100_000 else None
        return self.pilot if 0 < self.pilot < n else None


class StateSpec(Section):
    """The state a round is solved at: global error ``K``, held errors ``ebar``, queues ``Z``."""

    K: float = 1.0
    ebar: float | list[float] | None = None
    Z: float | list[float] = 0.0

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("state.K", self.K, ge=0.0)
        return self


class DriftSpec(Section):
    """Non-stationary data (project choice, :mod:`jointopt.models.drift`).

    The data (what the real-training harness moves): every client's label mix rotates by
    ``rate`` label positions a round and jumps by ``shift`` positions at each round of
    ``jumps``; ``window`` (harness only) confines the clients' label mixes to that many
    neighbouring labels, so that the population's mix moves too (None: each client's own
    mix rotates). The model (what the surrogate and the controller use): a copy not
    retrained gains ``growth`` error a round and ``jump_error`` at a jump, and ``ageing k^2``
    by age ``k`` (the loss of a stale copy can grow faster than linearly with its age). The
    harness calibration fits ``growth``, ``ageing`` and ``jump_error`` to the moving data. No
    section, or all zeros: stationary data.
    """

    rate: float = 0.0
    shift: float = 0.0
    jumps: list[int] = []
    window: int | None = None
    growth: float = 0.0
    jump_error: float = 0.0
    ageing: float = 0.0

    @pydantic.model_validator(mode="after")
    def _valid(self):
        _ = self.labels, self.model  # their range checks
        if self.window is not None:
            check_range("drift.window", self.window, ge=1)
        return self

    @property
    def labels(self) -> LabelDrift:
        return LabelDrift(self.rate, self.shift, tuple(self.jumps))

    @property
    def model(self) -> DriftModel:
        return DriftModel(self.growth, self.jump_error, tuple(self.jumps), self.ageing)


class SimulationSpec(Section):
    """Defaults of a simulated run (the CLI and API can override ``rounds``).

    ``queue``: how the surrogate decides whether a request is on time: ``"stationary"``
    (default; independently, with the M/M/1 stationary probability) or ``"fifo"`` (each
    client's FIFO queue simulated request by request and carried over between rounds, as
    the real-training harness serves; a calibrated problem uses it).
    """

    rounds: Count("rounds") = 200
    slot: float = 1.0            # time units per round: arrivals per round = lambda * slot
    on_time_target: float = 0.95  # the inference-first baseline's on-time goal
    queue: Literal["stationary", "fifo"] = "stationary"

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("simulation.rounds", self.rounds, ge=1)
        check_range("simulation.slot", self.slot, gt=0.0)
        check_range("simulation.on_time_target", self.on_time_target, gt=0.0, lt=1.0)
        return self


#: Pilot runs of the validation harness's calibration, by default: constant participation
#: levels, every client at its ``q_min``, and a per-round uniform draw
#: (:func:`jointopt.harness.calibrate.calibrate`).
DEFAULT_PILOTS = (1.0, 0.5, 0.2, "q_min", "uniform")
PILOT_NAMES = ("q_min", "uniform")


class CalibrationSpec(Section):
    """How the validation harness calibrates this scenario to real training
    (:func:`jointopt.harness.calibrate.calibrate`).

    ``pilots``: the pilot runs the convergence constants and the accuracy map are fitted
    on: a number in ``(0, 1]`` holds every client's participation at that level (clipped
    to ``[q_min, 1]``), ``"q_min"`` holds every client at its least participation,
    ``"uniform"`` draws each client's level uniformly in ``[q_min, 1]`` every round. The
    fits weigh the levels the pilots cover, so a scenario whose policies train at low
    participation may add a pilot there (the built-in ``default`` adds ``0.1``).

    ``aggregation_noise`` (default off): fit ``accuracy.aggregation_noise`` together with
    the accuracy map on the pilots (the built-in ``analytic`` turns it on).
    """

    pilots: list[float | str] = list(DEFAULT_PILOTS)
    aggregation_noise: bool = False

    @pydantic.field_validator("pilots", mode="before")
    @classmethod
    def _levels(cls, value):
        if not isinstance(value, list | tuple) or not value:
            raise ValidationError("calibration.pilots", f"must be a non-empty list of "
                                                        f"levels, got {brief(value)}")
        check_size("calibration.pilots", len(value), "seeds")
        for i, level in enumerate(value):
            where = f"calibration.pilots[{i}]"
            number = isinstance(level, int | float) and not isinstance(level, bool)
            if number:
                check_range(where, level, gt=0.0, le=1.0)
            elif level not in PILOT_NAMES:
                raise ValidationError(where, f"must be a level in (0, 1], "
                                             f"{' or '.join(map(repr, PILOT_NAMES))}, "
                                             f"got {brief(level)}")
        return list(value)


class JointTrainingInferenceProblem(ProblemBase):
    """Per-round joint allocation of participation, downloads and service rates."""

    kind = "joint_training_inference"
    name: str = "unnamed"
    description: str = ""
    clients: Clients
    convergence: ConvergenceSpec
    accuracy: AccuracySpec = AccuracySpec()
    controller: ControllerSpec = ControllerSpec()
    state: StateSpec = StateSpec()
    simulation: SimulationSpec = SimulationSpec()
    drift: DriftSpec = DriftSpec()
    calibration: CalibrationSpec = CalibrationSpec()

    methods = ("fast", "numpy", "cvxpy")
    solver_methods = ("cvxpy",)
    simulator = "jointopt.surrogate:simulate_command"   # policies in the surrogate

    def solve(self, *, method: str | None = None, solver: str | None = None,
              state=None, warm=None, threads: int | None = None) -> SolveResult:
        """One drift-plus-penalty round at the scenario's state (or ``state``):
        ``method="fast"`` (closed forms in compiled passes, default), ``"numpy"`` (the same
        closed forms, vectorised numpy: the readable reference) or ``"cvxpy"`` (DPP block
        problems; ``solver`` picks the conic solver). ``threads``: how many threads the
        fast path's passes may use on large instances (default: ``JOINTOPT_THREADS``, else
        every core this process may run on)."""
        from jointopt.solvers.jti.round import solve_round

        return solve_round(self, state, method=self.check_method(method), warm=warm,
                           solver=solver, threads=threads)

    @pydantic.model_validator(mode="after")
    def _feasible(self):
        c = self.clients
        check_range("state.ebar", self.ebar, ge=0.0)
        check_range("state.Z", self.Z, ge=0.0)
        mu_lo = self.mu_lo
        bad = c.mu_max < mu_lo
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValidationError(
                culprit("clients.mu_max", i),
                f"must be >= arrival_rate*(1+service_margin) = {mu_lo[i]:g} for a stable "
                f"queue, got {c.mu_max[i]:g}")
        min_use = self.min_use
        for field, limit, family in (("cap", c.cap, "hard cap"),
                                     ("budget", c.budget, "average budget")):
            short = min_use - limit
            if (short > 1e-12).any():
                i = int(np.argmax(short))
                raise InfeasibleError(
                    family,
                    f"{culprit('clients.' + field, i)} = {limit[i]:g} is below the least "
                    f"resource use {min_use[i]:g} (q_min*cost_train + "
                    f"arrival_rate*(1+service_margin)*cost_service); short by {short[i]:g} "
                    f"({int((short > 1e-12).sum())} client(s) affected)",
                    field=culprit("clients." + field, i), shortfall=float(short[i]))
        return self

    def subset(self, clients, *, name: str | None = None,
               **fields) -> JointTrainingInferenceProblem:
        """The same model, controller and state over the clients ``clients`` (indices, in
        that order), with per-client ``fields`` replaced (one value per kept client, e.g.
        ``arrival_rate`` = the requests each device serves itself): the allocation problem of
        a group of devices. Per-client state (``ebar``, ``Z``) is restricted too."""
        idx, table = client_subset(self.clients, CLIENT_FIELDS, clients, self.n, fields)
        data = self.to_dict()
        data["clients"] = table
        data["state"] = {"K": self.K, "ebar": self.ebar[idx].tolist(),
                         "Z": self.Z[idx].tolist()}
        if name is not None:
            data["name"] = name
        return type(self).from_dict(data)

    # -- derived quantities ------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.clients.count

    @property
    def K(self) -> float:
        return self.state.K

    @cached_property
    def ebar(self) -> np.ndarray:
        return as_vector("state.ebar", self.K if self.state.ebar is None else self.state.ebar,
                         self.n)

    @cached_property
    def Z(self) -> np.ndarray:
        return as_vector("state.Z", self.state.Z, self.n)

    @cached_property
    def mu_lo(self) -> np.ndarray:
        """Least admissible service rate, ``lambda (1 + service_margin)``."""
        return self.clients.arrival_rate * (1.0 + self.controller.service_margin)

    @cached_property
    def min_use(self) -> np.ndarray:
        c = self.clients
        return c.q_min * c.cost_train + self.mu_lo * c.cost_service

    @cached_property
    def convergence_model(self) -> ConvergenceModel:
        return self.convergence.build(self.clients.p)

    @property
    def horizon(self) -> float:
        """Look-ahead of the per-round objective, in rounds (project extension; 0 gives the
        myopic per-round objective). ``"auto"``: ``a / (1 - a)``, the total weight
        ``a + a^2 + ...`` with which a one-round reduction of ``K`` persists under the
        recursion: the time scale on which the global model, and so the staleness of a held
        copy, changes."""
        h = self.controller.horizon
        if h == "auto":
            a = self.convergence_model.a
            return a / (1.0 - a)
        return float(h)

    @cached_property
    def accuracy_map(self):
        return self.accuracy.build()
