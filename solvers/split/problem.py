"""Split learning (SplitGP) inference planning as a validated problem value.

Documented in ``docs/kinds/split_learning.md``. Decides the common cut (split layer) and each
client's
offload rate / entropy threshold so that every client's expected latency, including the
wait at the shared server (M/M/1), stays within its budget, maximizing the request-weighted
accuracy (P-ACC). **Project reconstruction** (the paper's formulation is not
available); the idea of tuning the threshold to network resources is the paper's (TMC 2024).

Scenario layout (TOML)::

    kind = "split_learning"
    name = "..."
    n_classes = 10
    [network]    preset = "digits_cnn" | "digits_mlp" (or explicit macs, params, act_elems,
                 aux_macs, aux_params lists); bits_per_element; cuts (candidates)
    [server]     f_server (FLOP/s), tau0 (s), rho_max
    [clients]    count, f_client (FLOP/s), uplink_rate (bit/s), request_rate (1/s),
                 latency_budget (s), ood_ratio  -- scalar or one entry per client
    [entropy]    synthetic Beta entropy model per candidate cut (scalar or one entry per cut)
    [optimizer]  w_grid, refine, n_threshold_grid

Methods: ``exact`` (P-ACC, default), ``lp`` (P-ACC, HiGHS cross-check), ``decoupled``
(queue-agnostic baseline), ``min_latency`` (P-LAT, needs ``clients.accuracy_floor``),
``per_client`` (one cut per client, M/G/1 server).

Measured curves from the training harness replace ``[entropy]`` at solve time:
``problem.solve(curves={cut: [OffloadCurve per client]})``, see :func:`curves_from_records`.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pydantic
from jointopt.models import split as sm
from jointopt.models.checks import as_vector, check_range
from jointopt.models.errors import ValidationError
from jointopt.solvers.base import (
    Count,
    ProblemBase,
    Section,
    SolveResult,
    Vector,
    client_subset,
    vector_count,
)

CLIENT_FIELDS: dict[str, tuple[float | None, str]] = {
    "f_client": (None, "client compute speed f_C,k (FLOP/s)"),
    "uplink_rate": (None, "uplink rate R_k (bit/s)"),
    "request_rate": (1.0, "Poisson inference-request rate nu_k (1/s)"),
    "latency_budget": (None, "expected-latency budget T_max,k (s)"),
    "ood_ratio": (0.0, "OOD portion p_k of the client's requests (#OOD / #main)"),
    "accuracy_floor": (0.0, "least accuracy a_min,k (method min_latency only)"),
}

ENTROPY_FIELDS = ("main_a", "main_b", "ood_a", "ood_b", "client_acc_main", "client_acc_ood",
                  "server_acc_main", "server_acc_ood")


class Network(Section):
    """A preset network or explicit per-block lists (see :class:`models.split.LayeredNetwork`)."""

    preset: str | None = "digits_cnn"
    macs: list[float] | None = None
    params: list[float] | None = None
    act_elems: list[float] | None = None
    aux_macs: list[float] | None = None
    aux_params: list[float] | None = None
    bits_per_element: float = 32.0
    cuts: list[int] | None = None

    @pydantic.model_validator(mode="after")
    def _valid(self):
        explicit = [self.macs, self.params, self.act_elems, self.aux_macs, self.aux_params]
        if any(v is not None for v in explicit):
            if any(v is None for v in explicit):
                raise ValidationError("network", "explicit networks need macs, params, "
                                                 "act_elems, aux_macs and aux_params")
            object.__setattr__(self, "preset", None)
        elif self.preset not in sm.NETWORKS:
            raise ValidationError("network.preset", f"must be one of {sorted(sm.NETWORKS)}, "
                                                    f"got {self.preset!r}")
        check_range("network.bits_per_element", self.bits_per_element, gt=0.0)
        return self

    def build(self, n_classes: int) -> sm.LayeredNetwork:
        if self.preset is not None:
            return sm.NETWORKS[self.preset](n_classes)
        return sm.LayeredNetwork(np.array(self.macs), np.array(self.params),
                                 np.array(self.act_elems), np.array(self.aux_macs),
                                 np.array(self.aux_params), name="network")


class Server(Section):
    """The shared server: speed ``f_server`` (FLOP/s), per-offload overhead ``tau0`` (s),
    stability margin ``rho_max``; ``max_load`` (requests/s, optional) caps the offloaded
    rate below the stability limit, e.g. the requests an edge host may take."""

    f_server: float
    tau0: float = 0.0
    rho_max: float = 0.95
    max_load: float | None = None

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("server.f_server", self.f_server, gt=0.0)
        check_range("server.tau0", self.tau0, ge=0.0)
        check_range("server.rho_max", self.rho_max, gt=0.0, lt=1.0)
        if self.max_load is not None:
            check_range("server.max_load", self.max_load, ge=0.0)
        return self

    def load_cap(self, mu: float) -> float:
        """The largest offloaded rate the server takes at service rate ``mu``."""
        cap = self.rho_max * mu
        return cap if self.max_load is None else min(cap, self.max_load)


class Clients(Section):
    """Per-client vectors of length ``count`` (a scalar in the file is broadcast)."""

    count: int
    f_client: Vector
    uplink_rate: Vector
    request_rate: Vector
    latency_budget: Vector
    ood_ratio: Vector
    accuracy_floor: Vector

    @pydantic.model_validator(mode="before")
    @classmethod
    def _columns(cls, data):
        if not isinstance(data, dict):
            raise ValidationError("clients", "must be a table of per-client fields")
        for key in data:
            if key not in CLIENT_FIELDS and key != "count":
                raise ValidationError(f"clients.{key}", "is not a known field")
        n = vector_count(data, "clients", limit="split_clients")
        out = {"count": n}
        for key, (default, _) in CLIENT_FIELDS.items():
            value = data.get(key, default)
            if value is None:
                raise ValidationError(f"clients.{key}", "is required")
            out[key] = as_vector(f"clients.{key}", value, n)
        return out

    @pydantic.model_validator(mode="after")
    def _ranges(self):
        for key in ("f_client", "uplink_rate", "request_rate", "latency_budget"):
            check_range(f"clients.{key}", getattr(self, key), gt=0.0)
        check_range("clients.ood_ratio", self.ood_ratio, ge=0.0)
        check_range("clients.accuracy_floor", self.accuracy_floor, ge=0.0, le=1.0)
        return self


class Entropy(Section):
    """Synthetic per-cut Beta entropy model [project choice]: each field is a
    scalar or one entry per candidate cut."""

    main_a: float | list[float] = 1.5
    main_b: float | list[float] = 4.0
    ood_a: float | list[float] = 5.0
    ood_b: float | list[float] = 1.5
    client_acc_main: float | list[float] = 0.9
    client_acc_ood: float | list[float] = 0.05
    server_acc_main: float | list[float] = 0.97
    server_acc_ood: float | list[float] = 0.9

    def per_cut(self, n_cuts: int) -> dict[str, np.ndarray]:
        out = {}
        for key in ENTROPY_FIELDS:
            value = getattr(self, key)
            if isinstance(value, list) and len(value) != n_cuts:
                raise ValidationError(f"entropy.{key}", f"must have one entry per candidate "
                                                        f"cut ({n_cuts}), got {len(value)}")
            arr = as_vector(f"entropy.{key}", value, n_cuts)
            if key.endswith(("_a", "_b")):
                check_range(f"entropy.{key}", arr, gt=0.0)
            else:
                check_range(f"entropy.{key}", arr, ge=0.0, le=1.0)
            out[key] = arr
        return out


class Optimizer(Section):
    w_grid: Count("grid") = 200
    refine: bool = True
    n_threshold_grid: Count("grid") = 257

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("optimizer.w_grid", self.w_grid, ge=2)
        check_range("optimizer.n_threshold_grid", self.n_threshold_grid, ge=2)
        return self


class SplitProblem(ProblemBase):
    """Choose the split layer and per-client offload thresholds (P-ACC).

    Methods: ``"exact"`` (default; outer scan over the server-sojourn cap W̄, inner problem
    solved exactly as a fractional knapsack over the operating-curve segments), ``"lp"``
    (same outer scan, inner LP by HiGHS through ``scipy.optimize.linprog``: the second path
    the tests hold to the same answer), ``"decoupled"`` (queue-agnostic baseline: each client
    picks its budgeted threshold with the server wait fixed at the service time; evaluated with
    the exact wait and reported with its budget violations), ``"min_latency"`` (P-LAT:
    minimize the request-weighted mean latency subject to ``clients.accuracy_floor``,
    convex, CVXPY with CLARABEL then SCS, ``solver=`` picks one; the objective is then the
    mean latency in seconds and the budgets are reported, not imposed), ``"per_client"``
    (extension, one cut per client, M/G/1 server; see
    :mod:`jointopt.solvers.split.per_client`; option ``search``).

    ``"timely"`` (P-TIME, project extension): the same decisions for the request-weighted
    **on-time** accuracy, an offloaded request counting only with the chance that the
    server's M/M/1 sojourn ends within its deadline ``latency_budget``, and no
    expected-latency budget (:func:`jointopt.solvers.split.optimize.solve_cut_timely`).
    """

    kind = "split_learning"
    methods = ("exact", "lp", "decoupled", "min_latency", "per_client", "timely")
    solver_methods = ("min_latency",)

    name: str = "unnamed"
    description: str = ""
    n_classes: int = 10
    network: Network = Network()
    server: Server
    clients: Clients
    entropy: Entropy = Entropy()
    optimizer: Optimizer = Optimizer()

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("n_classes", self.n_classes, ge=2)
        net = self.net
        for i, s in enumerate(self.cuts):
            if not 1 <= s <= net.n_blocks - 1:
                raise ValidationError(f"network.cuts[{i}]",
                                      f"must lie in 1..{net.n_blocks - 1} (a cut with both a "
                                      f"client and a server part), got {s}")
        if len(set(self.cuts)) != len(self.cuts):
            raise ValidationError("network.cuts", "must not repeat a cut")
        self.entropy.per_cut(len(self.cuts))
        return self

    # -- derived --------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.clients.count

    @cached_property
    def net(self) -> sm.LayeredNetwork:
        return self.network.build(self.n_classes)

    @cached_property
    def cuts(self) -> list[int]:
        if self.network.cuts is not None:
            return list(self.network.cuts)
        return list(range(1, self.net.n_blocks))

    @cached_property
    def link(self) -> sm.Link:
        c = self.clients
        return sm.Link(f_client=c.f_client, f_server=self.server.f_server, rate=c.uplink_rate,
                       tau0=self.server.tau0, bits_per_element=self.network.bits_per_element)

    def subset(self, clients, *, server: dict | None = None, name: str | None = None,
               **fields) -> SplitProblem:
        """The same network, entropy model and optimizer over the clients ``clients``
        (indices, in that order), optionally with another ``server`` (fields replaced) and
        per-client ``fields`` replaced (one value per kept client, e.g. ``latency_budget``):
        the split problem of a group of devices sharing one server, e.g. the devices an edge
        host aggregates."""
        _, table = client_subset(self.clients, CLIENT_FIELDS, clients, self.n, fields)
        data = self.to_dict()
        data["clients"] = table
        if server is not None:
            data["server"] = {**data["server"], **server}
        if name is not None:
            data["name"] = name
        return type(self).from_dict(data)

    def entropy_model(self, cut: int) -> sm.BetaEntropyModel:
        """The synthetic entropy model at ``cut``."""
        j = self.cuts.index(cut)
        par = self.entropy.per_cut(len(self.cuts))
        return sm.BetaEntropyModel(**{k: float(v[j]) for k, v in par.items()},
                                   n_classes=self.n_classes)

    def synthetic_curves(self) -> dict[int, list[sm.OffloadCurve]]:
        """Per cut, per client offload curves of the synthetic entropy model."""
        return {s: self.entropy_model(s).curves(self.clients.ood_ratio,
                                                self.optimizer.n_threshold_grid)
                for s in self.cuts}

    def solve(self, *, method: str | None = None, curves=None, solver: str | None = None,
              **options) -> SolveResult:
        """Solve P-ACC. ``curves``: optional ``{cut: [OffloadCurve per client]}`` measured by
        the harness (replaces the synthetic ``[entropy]`` model; only those cuts are
        considered). ``solver``: conic solver of ``min_latency`` (refused with any other method)."""
        from jointopt.solvers.split.optimize import solve_split

        method = self.check_method(method)
        if self.server.max_load is not None and method in ("decoupled", "per_client"):
            raise ValidationError("server.max_load", f"is supported by methods exact, lp, timely "
                                                     f"and min_latency, not {method!r}")
        if method == "per_client":
            from jointopt.solvers.split.per_client import solve_per_client

            return solve_per_client(self, curves=curves, **options)
        return solve_split(self, method=method, curves=curves,
                           solver=solver, **options)


def curves_from_records(records: dict[int, list[dict]], ood_ratio, n_classes: int
                        ) -> dict[int, list[sm.OffloadCurve]]:
    """Measured curves for :meth:`SplitProblem.solve`: ``records[cut][k]`` is a dict with
    arrays ``h`` (client-exit entropy, nats), ``is_ood``, ``correct_client``,
    ``correct_server`` from client k's validation mixture; ``ood_ratio`` one p per client."""
    p = np.broadcast_to(np.asarray(ood_ratio, float),
                        (len(next(iter(records.values()))),))
    return {int(s): [sm.offload_curve(r["h"], r["is_ood"], r["correct_client"],
                                      r["correct_server"], float(p[k]), n_classes)
                     for k, r in enumerate(rows)]
            for s, rows in records.items()}
