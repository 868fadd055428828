"""The CIS exit-weight problem (cooperative inference with early exits), as a validated value.

Documented in ``docs/kinds/cis_early_exit.md``. A node tree with nested early exits and inference
traffic, the
nodes' training-data sizes and the training settings in; per-exit training weights
``lambda~`` (one rule of :mod:`.weights` or the convex program of :mod:`.convex`) and the
node-exit participation probabilities out.

Scenario files give the tree either by the three-tier generator [authors' code]::

    kind = "cis_early_exit"
    name = "cis_tree7"
    [tree]
    nodes = 7                # 7, 17, 100, ... (1 + D + D*g)
    device_share = 0.80      # 0.05 0.10 0.20 0.33 0.45 0.60 0.80 "0.80*", or shares = [P1, P2, P3]
    [data]
    split = "eq"             # "eq", "2x", "tiny" or [cloud, edges, devices] shares
    total = 1437             # training pool size M

or node by node (``[nodes]`` with ``parent``, ``exit``, ``arrival``, ``forward`` and
optionally ``data_size``). ``[training]`` holds ``pi`` ("p0", "p40" or a list), ``nu``,
``rounds``, ``sigma2`` and ``flops``; ``[convex]`` the bound program's knobs.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

import numpy as np
import pydantic
from jointopt.models.checks import as_vector, check_range
from jointopt.models.cis import (
    DATA_SPLITS,
    DEVICE_SHARES,
    ServingTree,
    check_pi,
    data_weights,
    digits_ee_costs,
    exit_vector,
    node_data_sizes,
    participation_probabilities,
    serving_split,
    variance_proxy,
)
from jointopt.models.errors import ValidationError
from jointopt.solvers.base import Count, ProblemBase, Section, SolveResult, Timer, check_size
from jointopt.solvers.cis import convex as cvx
from jointopt.solvers.cis import weights as rules

#: Size of the digits training pool (stratified 80/20 split of 1797 images) [project choice].
DIGITS_POOL = 1437
#: The 100-node tree partitions a pool grown 5x by one-pixel shifts [project choice].
AUGMENTED_POOL = 5 * DIGITS_POOL

Number = float | int
Numbers = Number | list[Number]


class TreeSpec(Section):
    """Three-tier generated tree [authors' code]; ``shares`` overrides ``device_share``."""

    nodes: Count("nodes") = 7
    device_share: str | float = "0.80"
    shares: list[float] | None = None
    total_arrival: float = 10.0

    @pydantic.model_validator(mode="after")
    def _valid(self):
        if self.shares is None:
            serving_split(self.device_share)
        check_range("tree.total_arrival", self.total_arrival, gt=0.0)
        return self

    def build(self) -> ServingTree:
        return ServingTree.three_tier(self.nodes, self.shares if self.shares is not None
                                      else serving_split(self.device_share),
                                      self.total_arrival)


class NodesSpec(Section):
    """An explicit tree, one entry per node (node 0 the root, ``parent = -1``)."""

    parent: int | list[int]
    exit: int | list[int]
    arrival: Numbers
    forward: Numbers = 0.0
    data_size: Numbers | None = None

    def build(self, n_exits: int | None) -> ServingTree:
        parent = np.atleast_1d(np.asarray(self.parent))
        n = check_size("nodes.parent", parent.size, "nodes")
        exits = np.broadcast_to(np.asarray(self.exit), (n,))
        return ServingTree(parent, exits, as_vector("nodes.arrival", self.arrival, n),
                           as_vector("nodes.forward", self.forward, n), n_exits or 0)


class DataSpec(Section):
    """Training-data split over the tiers [authors' code] and how the harness partitions
    it: ``device_label_dirichlet`` (label skew of the devices, e.g. 0.5 on 100 nodes;
    ``None`` = IID) and ``test_points_per_device`` (``None`` = every device's requests
    spread over the full test set) [project choice]."""

    split: str | Numbers = "eq"
    total: int = DIGITS_POOL
    device_label_dirichlet: float | None = None
    test_points_per_device: int | None = None

    @pydantic.model_validator(mode="after")
    def _valid(self):
        if isinstance(self.split, str) and self.split not in DATA_SPLITS:
            raise ValidationError("data.split", f"must be one of {', '.join(DATA_SPLITS)} or "
                                                f"three tier shares, got {self.split!r}")
        check_range("data.total", self.total, ge=1)
        if self.device_label_dirichlet is not None:
            check_range("data.device_label_dirichlet", self.device_label_dirichlet, gt=0.0)
        if self.test_points_per_device is not None:
            check_range("data.test_points_per_device", self.test_points_per_device, ge=1)
        return self


class TrainingSpec(Section):
    """Round settings the weights depend on: exit-switch probabilities ``pi`` ("p0",
    "p40" or per exit) and node sampling ``nu``; ``rounds`` T (flops schedule); per-exit
    gradient variance ``sigma2`` (default 1, to be replaced by the harness' estimate) and
    forward cost ``flops`` (default: ``DigitsEE`` multiply-accumulates)."""

    pi: str | Numbers = "p0"
    nu: float = 1.0
    rounds: Count("rounds") = 40
    sigma2: Numbers = 1.0
    flops: Numbers | None = None

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("training.nu", self.nu, gt=0.0, le=1.0)
        check_range("training.rounds", self.rounds, ge=1)
        return self


class ConvexSpec(Section):
    """Knobs of the bound program [project choice]."""

    rho: float = 1.0
    kappa: float = 0.0
    eps: float = 1e-3
    bias: Literal["chi2", "kl"] = "chi2"

    @pydantic.model_validator(mode="after")
    def _valid(self):
        check_range("convex.rho", self.rho, ge=0.0)
        check_range("convex.kappa", self.kappa, ge=0.0)
        check_range("convex.eps", self.eps, ge=0.0)
        return self


class CooperativeInferenceProblem(ProblemBase):
    """Exit weights for serving-rate-aware federated training of an early-exit network."""

    kind = "cis_early_exit"
    methods = ("serving_rate", "equal", "flops", "inverse_variance", "balanced", "convex",
               "inverse_sqrt_variance", "gen")
    solver_methods = ("convex",)

    name: str = "unnamed"
    description: str = ""
    n_exits: Count("exits") | None = None
    tree: TreeSpec | None = None
    nodes: NodesSpec | None = None
    data: DataSpec = DataSpec()
    training: TrainingSpec = TrainingSpec()
    convex: ConvexSpec = ConvexSpec()

    @pydantic.model_validator(mode="before")
    @classmethod
    def _one_tree(cls, data):
        # before the sections are validated, so that a file with both is told so (and not
        # that a field of the one it did not mean is missing)
        if isinstance(data, dict) and (data.get("tree") is None) == (data.get("nodes") is None):
            if data.get("tree") is None:
                raise ValidationError("tree", "is required (or [nodes], an explicit tree)")
            raise ValidationError("tree", "and [nodes] are both given; give one: [tree] (a "
                                          "generated tree) or [nodes] (an explicit tree)")
        return data

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        if self.tree is not None and self.n_exits not in (None, 3):
            raise ValidationError("n_exits", f"must be 3 for a generated tree, got "
                                             f"{self.n_exits}")
        tree = self.serving_tree  # validates the tree and the rates
        e = tree.n_exits
        check_range("convex.eps", self.convex.eps, lt=1.0 / e)
        check_pi(self.training.pi, e)
        _ = self.data_sizes, self.sigma2, self.flops
        return self

    # -- construction ------------------------------------------------------------------
    @classmethod
    def three_tier(cls, nodes: int = 7, device_share="0.80", data_split="eq", *,
                   pi="p0", total: int | None = None, name: str | None = None,
                   **sections) -> CooperativeInferenceProblem:
        """A generated scenario of the experiment grid: 7-, 17- or 100-node tree, a serving split
        by device share and a data split. 100 nodes (and more) default to the augmented
        pool, Dirichlet(0.5) device labels and 4 test points per device [project choice]."""
        big = nodes >= 100
        data = {"split": data_split, "total": total or (AUGMENTED_POOL if big else DIGITS_POOL)}
        if big:
            data.update(device_label_dirichlet=0.5, test_points_per_device=4)
        data.update(sections.pop("data", {}))
        training = {"pi": pi, **sections.pop("training", {})}
        share = device_share if isinstance(device_share, str) else f"{float(device_share):.2f}"
        label = name or f"cis_tree{nodes}_{share}_{data_split}" + ("" if pi == "p0" else f"_{pi}")
        return cls.from_dict({"name": label, "tree": {"nodes": nodes,
                                                      "device_share": device_share},
                              "data": data, "training": training, **sections})

    @classmethod
    def from_association(cls, association, arrival, forward, *, device_data, host_data=0.0,
                         cloud_data=0.0, host_forward=0.0, name: str = "association",
                         **sections) -> CooperativeInferenceProblem:
        """The three-tier tree a host-device association induces [project choice]: node 0 the
        cloud (exit 3), nodes ``1..H`` the hosts some device is associated with (exit 2, in
        increasing host index), then one node per device (exit 1, device ``i`` is node
        ``1 + H + i``) whose parent is its host, or the cloud when ``association[i] = -1``.
        ``arrival`` and ``forward`` are the devices' request and forwarded rates,
        ``host_forward`` what each used host forwards to the cloud (scalar or one per used
        host); ``device_data``, ``host_data``, ``cloud_data`` the training-data sizes.
        ``sections`` (``training``, ``convex``) as in a scenario file."""
        a = np.asarray(association).reshape(-1)
        if not np.all(np.equal(np.mod(a, 1), 0)) or (a < -1).any():
            raise ValidationError("association", "must hold host indices or -1")
        a = a.astype(int)
        n = a.size
        hosts = np.unique(a[a >= 0])
        h = hosts.size
        node_of_host = np.full(int(a.max()) + 2 if n else 1, -1)
        node_of_host[hosts] = np.arange(1, h + 1)
        parent = np.concatenate([[-1], np.zeros(h, int), np.where(a >= 0, node_of_host[a], 0)])
        exits = np.concatenate([[3], np.full(h, 2), np.ones(n, int)])
        lam = as_vector("arrival", arrival, n)
        fwd = as_vector("forward", forward, n)
        hf = np.broadcast_to(np.asarray(host_forward, float), (h,))
        data = np.concatenate([[float(cloud_data)],
                               np.broadcast_to(np.asarray(host_data, float), (h,)),
                               as_vector("device_data", device_data, n)])
        return cls.from_dict({
            "name": name, "n_exits": 3,
            "nodes": {"parent": parent.tolist(), "exit": exits.tolist(),
                      "arrival": np.concatenate([np.zeros(1 + h), lam]).tolist(),
                      "forward": np.concatenate([[0.0], hf, fwd]).tolist(),
                      "data_size": data.tolist()},
            **sections})

    # -- derived quantities --------------------------------------------------------------
    @cached_property
    def serving_tree(self) -> ServingTree:
        if self.tree is not None:
            return self.tree.build()
        return self.nodes.build(self.n_exits)

    @property
    def n_nodes(self) -> int:
        return self.serving_tree.n_nodes

    @property
    def exits(self) -> np.ndarray:
        """``k(n)``: the largest exit each node hosts."""
        return self.serving_tree.exits

    @property
    def E(self) -> int:
        return self.serving_tree.n_exits

    @cached_property
    def data_sizes(self) -> np.ndarray:
        """``m_n``: explicit ``nodes.data_size`` or the tier split of ``data``."""
        if self.nodes is not None and self.nodes.data_size is not None:
            m = as_vector("nodes.data_size", self.nodes.data_size, self.n_nodes)
            check_range("nodes.data_size", m, ge=0.0)
        else:
            split = self.data.split
            if not isinstance(split, str):
                split = exit_vector("data.split", split, 3, per="tier")
            m = node_data_sizes(self.exits, split, self.data.total).astype(float)
        if not m.sum() > 0:
            raise ValidationError("nodes.data_size", "must not be all zero")
        m.flags.writeable = False
        return m

    @cached_property
    def pi(self) -> np.ndarray:
        return check_pi(self.training.pi, self.E)

    @cached_property
    def participation(self) -> np.ndarray:
        """``p[n, e-1]``: probability that node n trains exit e in a round."""
        return participation_probabilities(self.exits, self.pi, self.training.nu, self.E)

    @cached_property
    def data_weight(self) -> np.ndarray:
        """``q[n, e-1] = m_n / M_e`` over the potential trainers of exit e."""
        return data_weights(self.exits, self.data_sizes, self.pi, self.E)

    @cached_property
    def data_mass(self) -> np.ndarray:
        """``M_e``: data of the potential trainers of exit e."""
        member = self.data_weight > 0
        return (member * self.data_sizes[:, None]).sum(axis=0)

    @cached_property
    def sigma2(self) -> np.ndarray:
        s = exit_vector("training.sigma2", self.training.sigma2, self.E, gt=0.0)
        return s

    @cached_property
    def flops(self) -> np.ndarray:
        """``C_e`` (default: the digits DigitsEE, 3 exits)."""
        if self.training.flops is None:
            if self.E != 3:
                raise ValidationError("training.flops", f"is required for {self.E} exits "
                                                        "(the default is DigitsEE's 3)")
            return digits_ee_costs()
        c = exit_vector("training.flops", self.training.flops, self.E, gt=0.0)
        return c

    @cached_property
    def variance(self) -> np.ndarray:
        """``V_e = sigma_e^2 sum_n q_{n,e}^2 / p_{n,e}``."""
        return variance_proxy(self.sigma2, self.data_weight, self.participation)

    # -- the rules -----------------------------------------------------------------------
    def exit_weights(self, method: str | None = None, *, t: int | None = None,
                     solver: str | None = None) -> np.ndarray:
        """``lambda~`` of one rule (``t``: round of the flops schedule, default 0)."""
        return self._weights(self.check_method(method), t, solver)[0]

    def _weights(self, method: str, t: int | None, solver: str | None):
        tree = self.serving_tree
        if method == "serving_rate":
            return rules.serving_rate_weights(tree.exit_rates), None
        if method == "equal":
            return rules.equal_weights(self.E), None
        if method == "flops":
            return rules.flops_weights(self.flops, 0 if t is None else t,
                                       rounds=self.training.rounds), None
        if method == "inverse_variance":
            return rules.inverse_variance_weights(self.variance), None
        if method == "inverse_sqrt_variance":
            return rules.inverse_sqrt_variance_weights(self.variance), None
        if method == "balanced":
            return rules.balanced_weights(tree.exit_rates, self.variance), None
        if method == "gen":
            return rules.gen_weights(self.data_mass, self.flops), None
        c = self.convex
        sol = cvx.convex_weights(tree.target_weights, self.variance, c.rho, c.kappa,
                                 eps=c.eps, bias=c.bias, solver=solver)
        return sol.weights, sol

    def bound(self, weights) -> float:
        """The bound B of the convex program at ``weights`` (S1 ranking)."""
        c = self.convex
        return cvx.bound(weights, self.serving_tree.target_weights, self.variance, c.rho,
                         c.kappa, c.bias)

    def solve(self, *, method: str | None = None, solver: str | None = None,
              round: int | None = None) -> SolveResult:  # noqa: A002 - CLI-facing name
        """Exit weights by ``method`` (default ``serving_rate``), with the node-exit
        participation probabilities and the bound B of every rule in the diagnostics.
        ``round`` is the round of the flops schedule (default 0; the last round's weights
        are in the diagnostics too); ``solver`` forces a CVXPY solver for ``convex``."""
        method = self.check_method(method)
        tree = self.serving_tree
        c = self.convex
        with Timer() as timer:
            weights, sol = self._weights(method, round, solver)
        terms = cvx.bound_terms(weights, tree.target_weights, self.variance, c.rho, c.kappa,
                                c.bias)
        closed = {m: self._weights(m, None, None)[0] for m in self.methods if m != "convex"}
        diagnostics = {
            "method": method,
            "authors_rule_id": rules.AUTHORS_RULE_IDS.get(method),
            "bound_terms": {"bias": terms[0], "variance": terms[1], "progress": terms[2]},
            "convex_knobs": c.model_dump(),
            "exit_rate": tree.exit_rates,
            "variance_proxy": self.variance,
            "flops_ratio": self.flops / self.flops[-1],
            "data_mass": self.data_mass,
            "trainers": (self.data_weight > 0).sum(axis=0),
            "pi": self.pi,
            "node_exit": tree.exits,
            "node_arrival": tree.arrival,
            "node_forward": tree.forward,
            "node_received": tree.received,
            "node_serving": tree.serving,
            "node_served_fraction": tree.served_fraction,
            "node_data_size": self.data_sizes,
            "participation": self.participation,
            "data_weight": self.data_weight,
            "weights_by_rule": closed,
            "bound_by_rule": {m: self.bound(w) for m, w in closed.items()},
        }
        if method == "flops":
            diagnostics["round"] = 0 if round is None else round
            diagnostics["weights_last_round"] = rules.flops_weights(
                self.flops, self.training.rounds - 1, rounds=self.training.rounds)
        iterations = 0
        solver_name = "closed form"
        if sol is not None:
            solver_name, iterations = sol.solver, sol.extra.get("iterations", 0)
        return SolveResult(
            kind=self.kind, scenario=self.name, status="optimal", objective=float(sum(terms)),
            solver=solver_name, solve_time_s=timer.seconds, iterations=int(iterations),
            decisions={"exit": np.arange(1, self.E + 1), "weight": weights,
                       "target_weight": tree.target_weights},
            diagnostics=diagnostics)


def scenario_grid(nodes=(7,), shares=DEVICE_SHARES, splits=tuple(DATA_SPLITS), *,
                  pi="p0", **sections):
    """Generated problems of the experiment grid, one per (nodes, device share, data split)."""
    for n in nodes:
        for split in splits:
            for share in shares:
                yield CooperativeInferenceProblem.three_tier(n, share, split, pi=pi,
                                                             **sections)


__all__ = ["AUGMENTED_POOL", "DIGITS_POOL", "CooperativeInferenceProblem", "scenario_grid"]
