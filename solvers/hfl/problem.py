"""The HFLOP instance as a validated, immutable problem value (``docs/kinds/hfl.md``).

Keys follow the authors' JSON instance files where they exist [project choice]:
``workload`` (D_i, req/s), ``capacities`` (R_j, req/s), ``device_costs`` (c^d, N x M),
``edge_costs`` (c^e), ``local_to_global_ratio`` (l), ``participation_ratio`` (rho). A
zero-cost-LAN instance may give ``homes`` (h(i)) instead of ``device_costs``: then
``c^d_{i h(i)} = 0`` and 1 elsewhere [authors' code, generator semantics]. Scalars broadcast.

``[latency]`` switches on the M/M/1 latency extension (weighted sum ``beta`` and/or
epsilon-constraint ``max_latency``); ``[accounting]`` holds the totals over training.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, Literal

import numpy as np
import pydantic
from jointopt.models import hfl as hm
from jointopt.models.checks import as_vector, brief, check_range, culprit
from jointopt.models.errors import InfeasibleError, ValidationError
from jointopt.solvers.base import Count, ProblemBase, Section, SolveResult, Vector, check_size


class LatencySpec(Section):
    """M/M/1 latency extension [project choice]. Units: req/s and s."""

    beta: float = 0.0                    # cost units per second of mean latency
    max_latency: float | None = None     # epsilon-constraint L_max (s)
    service_rate: Vector | None = None   # mu_j; default R_j / u_max
    u_max: float = 0.9
    delay: Vector | None = None          # delta_ij (s), N x M; default from home/other
    delay_home: float = 0.0054
    delay_other: float = 0.0108
    cloud_delay: float = 0.075           # tau_0 (s)
    cuts: Count("grid") = 12             # initial tangent grid K
    eps_rel: float = 1e-6
    eps_abs: float = 1e-9
    max_iter: int = 100

    @pydantic.field_validator("service_rate", "delay", mode="before")
    @classmethod
    def _arr(cls, v, info):
        if v is None:
            return None
        arr = np.asarray(v, dtype=float)
        if np.isnan(arr).any():
            raise ValidationError(f"latency.{info.field_name}", "contains NaN")
        arr.flags.writeable = False
        return arr

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("latency.beta", self.beta, ge=0.0)
        if self.max_latency is not None:
            check_range("latency.max_latency", self.max_latency, gt=0.0)
        check_range("latency.u_max", self.u_max, gt=0.0, lt=1.0)
        for key in ("delay_home", "delay_other", "cloud_delay", "eps_abs"):
            check_range(f"latency.{key}", getattr(self, key), ge=0.0)
        check_range("latency.eps_rel", self.eps_rel, gt=0.0)
        check_range("latency.cuts", self.cuts, ge=2)
        check_range("latency.max_iter", self.max_iter, ge=1)
        if self.service_rate is not None:
            check_range("latency.service_rate", np.ravel(self.service_rate), ge=0.0)
        if self.delay is not None:
            check_range("latency.delay", np.ravel(self.delay), ge=0.0)
        return self


class AccountingSpec(Section):
    """Totals over training [authors' code defaults for the figures]."""

    model_size_mb: float = 0.593
    rounds_hfl: int = 50
    rounds_fl: int = 100
    unit_costs: bool = False
    fl_participants: Literal["all", "T"] = "all"

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("accounting.model_size_mb", self.model_size_mb, gt=0.0)
        check_range("accounting.rounds_hfl", self.rounds_hfl, ge=1)
        check_range("accounting.rounds_fl", self.rounds_fl, ge=1)
        return self


class HFLProblem(ProblemBase):
    """HFLOP: open edge aggregators (``y``) and associate devices (``x``) at least cost per
    global round, within each host's inference capacity.

    Methods: ``highs`` (default; matrix-built MILP through highspy with heuristic incumbent,
    exact reductions and staged bounds), ``pyomo`` (the readable Pyomo model, HiGHS via
    appsi), ``heuristic`` (greedy + local search, with the staged lower bounds), and the
    cost baselines: ``uncapacitated`` (inference-unaware HFLOP: C1 dropped, solved
    exactly) and ``proximity`` (every device joins its cheapest host; capacities ignored,
    status "overloaded" when a host is over its capacity)."""

    kind = "hfl"
    methods = ("highs", "pyomo", "heuristic", "uncapacitated", "proximity")
    solver_methods = ("highs", "pyomo")
    simulator = "jointopt.hfl:simulate_command"   # testbed latency simulator
    takes_time_limit = True

    name: str = "unnamed"
    description: str = ""
    devices: int
    hosts: int
    workload: Vector
    capacities: Vector
    edge_costs: Vector
    device_costs: Vector | None = None
    homes: Vector | None = None
    local_to_global_ratio: float = 4.0
    participation_ratio: float = 1.0
    linking: Literal["v1", "v2", "v3"] = "v3"
    cap_times_y: bool = True
    labels: list[str] | None = None
    latency: LatencySpec | None = None
    accounting: AccountingSpec = AccountingSpec()

    @pydantic.model_validator(mode="before")
    @classmethod
    def _columns(cls, data):
        if not isinstance(data, dict):
            raise ValidationError("", "an hfl problem must be a table of fields")
        data = dict(data)
        for key in ("workload", "capacities"):
            if key not in data:
                raise ValidationError(key, "is required")
        cd = data.get("device_costs")
        homes = data.get("homes")
        if cd is None and homes is None:
            raise ValidationError("device_costs", "is required (or give homes for a "
                                                  "zero-cost LAN)")
        if cd is not None and homes is not None:
            raise ValidationError("homes", "give either device_costs or homes, not both")

        def length(v):
            return None if np.ndim(v) == 0 else len(v)

        n = data.get("devices")
        if n is None:
            n = length(data["workload"]) or (len(cd) if cd is not None else length(homes))
            if n is None:
                raise ValidationError("devices", "is required when no per-device field is "
                                                 "a list")
        m = data.get("hosts")
        if m is None:
            m = length(data["capacities"]) or length(data.get("edge_costs", 1.0))
            if m is None and cd is not None and np.ndim(cd) == 2:
                m = np.shape(cd)[1]
            if m is None:
                raise ValidationError("hosts", "is required when no per-host field is a list")
        for key, v in (("devices", n), ("hosts", m)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValidationError(key, f"must be a positive integer, got {brief(v)}")
            check_size(key, int(v), key)
        n, m = int(n), int(m)
        check_size("devices x hosts", n * m, "device_host_pairs")
        data["devices"], data["hosts"] = n, m
        data["workload"] = as_vector("workload", data["workload"], n, per="device")
        data["capacities"] = as_vector("capacities", data["capacities"], m, per="host")
        data["edge_costs"] = as_vector("edge_costs", data.get("edge_costs", 1.0), m, per="host")
        if cd is not None:
            arr = np.asarray(cd, dtype=float)
            if arr.ndim == 0:
                arr = np.full((n, m), float(arr))
            if arr.shape != (n, m):
                raise ValidationError("device_costs", f"must be {n} x {m} (devices x hosts), "
                                                      f"got shape {arr.shape}")
            if np.isnan(arr).any():
                i, j = np.argwhere(np.isnan(arr))[0]
                raise ValidationError(f"device_costs[{i}][{j}]", "is NaN")
            arr = arr.copy()
            arr.flags.writeable = False
            data["device_costs"] = arr
        if homes is not None:
            h = as_vector("homes", homes, n, per="device")
            bad = (h != np.round(h)) | (h < 0) | (h >= m)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValidationError(culprit("homes", i),
                                      f"must be a host index in 0..{m - 1}, got {h[i]:g}")
            data["homes"] = h
        labels = data.get("labels")
        if labels is not None and len(labels) != n:
            raise ValidationError("labels", f"must have one entry per device ({n}), "
                                            f"got {len(labels)}")
        return data

    @pydantic.model_validator(mode="after")
    def _ranges(self):
        check_range("workload", self.workload, ge=0.0)
        check_range("capacities", self.capacities, ge=0.0)
        check_range("edge_costs", self.edge_costs, ge=0.0)
        if self.device_costs is not None:
            bad = ~(np.isfinite(self.device_costs) & (self.device_costs >= 0))
            if bad.any():
                i, j = np.argwhere(bad)[0]
                raise ValidationError(f"device_costs[{i}][{j}]", "must be finite and >= 0, "
                                                                 f"got {self.device_costs[i, j]!r}")
        check_range("local_to_global_ratio", self.local_to_global_ratio, gt=0.0)
        check_range("participation_ratio", self.participation_ratio, ge=0.0, le=1.0)
        lat = self.latency
        if lat is not None:
            if lat.service_rate is not None and np.shape(lat.service_rate) not in ((), (self.M,)):
                raise ValidationError("latency.service_rate", f"must have one entry per host "
                                                              f"({self.M})")
            if lat.delay is not None and np.shape(lat.delay) not in ((), (self.N, self.M)):
                raise ValidationError("latency.delay", f"must be {self.N} x {self.M}")
        return self

    # -- derived ------------------------------------------------------------------------
    @property
    def N(self) -> int:
        return self.devices

    @property
    def M(self) -> int:
        return self.hosts

    @property
    def l(self) -> float:  # noqa: E743 - the model's symbol
        return self.local_to_global_ratio

    @property
    def T(self) -> int:
        """Required participants ``floor(rho N)``."""
        return hm.required_participants(self.N, self.participation_ratio)

    @cached_property
    def cd(self) -> np.ndarray:
        """``c^d`` (N x M); built from ``homes`` for a zero-cost LAN."""
        if self.device_costs is not None:
            return self.device_costs
        out = np.ones((self.N, self.M))
        out[np.arange(self.N), self.homes.astype(np.int64)] = 0.0
        out.flags.writeable = False
        return out

    @property
    def ce(self) -> np.ndarray:
        return self.edge_costs

    @cached_property
    def home(self) -> np.ndarray:
        """``h(i)`` when given, else the cheapest host ``e(i)``."""
        if self.homes is not None:
            return self.homes.astype(np.int64)
        return hm.cheapest_host(self.cd)

    @cached_property
    def service_rate(self) -> np.ndarray:
        """``mu_j``: explicit, or ``R_j / u_max`` (so C1 is the stability cap)."""
        lat = self.latency or LatencySpec()
        if lat.service_rate is None:
            return self.capacities / lat.u_max
        return np.broadcast_to(np.asarray(lat.service_rate, float), (self.M,)).copy()

    @cached_property
    def load_cap(self) -> np.ndarray:
        lat = self.latency or LatencySpec()
        return hm.load_cap(self.capacities, self.service_rate, lat.u_max)

    @cached_property
    def delay(self) -> np.ndarray:
        lat = self.latency or LatencySpec()
        if lat.delay is not None:
            return np.broadcast_to(np.asarray(lat.delay, float), (self.N, self.M)).copy()
        return hm.home_delay_matrix(self.home, self.M, lat.delay_home, lat.delay_other)

    def integral_costs(self) -> bool:
        """All of ``l c^d`` and ``c^e`` are integers (enables the ``Delta = 1`` reductions)."""
        lc = self.l * self.cd
        return bool(np.all(lc == np.round(lc)) and np.all(self.ce == np.round(self.ce)))

    def evaluate(self, assignment) -> hm.Evaluation:
        """Feasibility and (O) of an assignment, from scratch."""
        return hm.evaluate(assignment, self.workload, self.capacities, self.cd, self.ce,
                           self.l, self.T)

    def mean_latency(self, assignment) -> float:
        lat = self.latency or LatencySpec()
        return hm.mean_latency(assignment, self.workload, self.service_rate, self.delay,
                               lat.cloud_delay)

    # -- feasibility ---------------------------------------------------------
    def check_feasible(self, *, capacity: bool = True) -> None:
        """Necessary conditions; raise ``InfeasibleError`` naming the constraint family.

        These checks are necessary, not sufficient: the solver may still prove the
        instance infeasible (bin packing)."""
        T = self.T
        if T == 0:
            return
        if T > self.N:  # cannot happen with rho <= 1, kept for clarity
            raise InfeasibleError("participation", f"T = {T} exceeds N = {self.N}")
        if not capacity:
            return
        D = self.workload
        R = self.capacities
        fits = D <= R.max()
        if fits.sum() < T:
            worst = int(np.argmax(np.where(fits, -np.inf, D)))
            raise InfeasibleError(
                "participation",
                f"participation needs T = floor({self.participation_ratio:g} * {self.N}) = {T} "
                f"devices but only {int(fits.sum())} have workload <= the largest capacity "
                f"{R.max():g} (e.g. {culprit('workload', worst)} = {D[worst]:g})",
                field="workload", shortfall=float(T - fits.sum()))
        smallest = float(np.sort(D)[:T].sum())
        if smallest > R.sum() * (1 + 1e-12):
            raise InfeasibleError(
                "capacity",
                f"capacity: the {T} smallest workloads sum to {smallest:g} req/s, more than "
                f"the total capacity {R.sum():g} of all hosts (short by "
                f"{smallest - R.sum():g}); participation T = {T} cannot be met",
                field="capacities", shortfall=smallest - float(R.sum()))

    def infeasible_by_solver(self) -> InfeasibleError:
        return InfeasibleError(
            "capacity",
            f"capacity: bin-packing infeasible (proved by solver): no {self.T} devices can be "
            f"packed into the host capacities (participation T = {self.T}, total demand of "
            f"the {self.T} smallest {float(np.sort(self.workload)[:self.T].sum()):g} <= total "
            f"capacity {float(self.capacities.sum()):g}, so the necessary checks pass)",
            field="capacities")

    # -- solving ------------------------------------------------------------------------
    def solve(self, *, method: str | None = None, solver: str | None = None,
              **options) -> SolveResult:
        """Solve. ``method``: ``highs`` (default), ``pyomo``,
        ``heuristic``, ``uncapacitated``, ``proximity``. Options (all optional):
        ``time_limit`` (s, every stage included), ``mip_rel_gap``, ``heuristics`` (bool,
        incumbent for the exact paths), ``reductions`` (bool: R1-R2 and, on the matrix
        path, the staged bounds and the reduced model; False solves the full pair model),
        ``lp_fixing`` (bool, fixing by the cover LP and the LP-guided H4), ``cover_mip``
        (bool, the uncapacitated cover MIP stage), ``linking`` / ``cap_times_y`` (the
        formulation of the full pair model), ``threads``, ``heuristic_time`` (s),
        ``verbose``, ``uncapacitated`` (drop C1: inference-unaware HFLOP). With
        ``[latency]`` the exact methods run the tangent-cut loop (``time_limit``,
        ``threads``); the heuristic method and the baselines refuse it. ``solver`` is
        accepted for CLI symmetry and must be ``highs`` or None."""
        if solver not in (None, "highs", "HIGHS"):
            raise ValidationError("solver", f"hfl problems are solved by HiGHS, got {solver!r}")
        method = self.check_method(method)
        from jointopt.solvers.hfl.milp import solve_problem

        return solve_problem(self, method, **options)


@dataclass
class HFLResult(SolveResult):
    """A :class:`SolveResult` whose decisions mix per-device (``association``) and per-host
    (``placement``: list of used hosts) arrays; the decisions frame is the per-device
    table. A heuristic's ``feasible`` solution counts as ok (it is what
    ``method="heuristic"`` promises); ``time_limit`` does not (optimality unproven)."""

    OK_STATUSES: ClassVar[tuple[str, ...]] = ("optimal", "converged", "feasible")

    def decisions_frame(self):
        import pandas as pd

        a = np.asarray(self.decisions["association"])
        frame = pd.DataFrame({"association": a})
        if "device_cost" in self.diagnostics:
            frame["device_cost"] = np.asarray(self.diagnostics["device_cost"])
        return frame.rename_axis("device").reset_index()
