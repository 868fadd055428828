"""Allocation policies: the proposed online controller and the baselines.

Every policy has one interface: :meth:`Policy.reset` with the problem before a run, then
:meth:`Policy.decide` once per round with an :class:`Observation`, returning an
:class:`~jointopt.solvers.jti.Allocation`. Policies are small objects over the compiled
per-round solver (the cvxportfolio split: policy / simulator / result).

Baselines (**project choice** in the details): rules that do not adapt their
spend over time get a per-round *allotment* ``min(cap, budget)`` per client (the full use
``c_tr + c_dl + c_inf mu_max`` where both are infinite), so that they meet the average
budget by construction and are compared with the online policy at equal resources.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jointopt.closed_loop import ClosedLoop, Feedback
from jointopt.controller import DriftPlusPenalty
from jointopt.solvers.jti import Allocation, JointTrainingInferenceProblem, RoundSolver, RoundState


@dataclass(frozen=True)
class Observation:
    """What a policy sees at the start of round ``t`` (``feedback``: what the last round
    reported, :class:`~jointopt.closed_loop.Feedback`; None in round 0 or where the
    environment reports nothing)."""

    t: int
    K: float                  # convergence-error proxy of the newest global model
    held_error: np.ndarray    # error proxy of the copy each client serves with
    age: np.ndarray           # age of model of each client's copy (rounds)
    feedback: Feedback | None = None


class Policy:
    """Decide an allocation each round. Subclasses set ``name`` and implement ``decide``."""

    name = "policy"

    def reset(self, problem: JointTrainingInferenceProblem) -> None:
        self.problem = problem

    def decide(self, obs: Observation) -> Allocation:
        raise NotImplementedError

    @property
    def backlog(self) -> float:
        """Mean virtual-queue backlog (0 for policies without queues)."""
        return 0.0

    def settle(self, use: np.ndarray) -> None:
        """The resources the last decision actually used, per client (measured after the
        round: sampled participation and downloads instead of their probabilities).
        Policies with virtual queues charge them this instead of the planned use; the
        others ignore it."""

    @property
    def estimates(self) -> dict:
        """The model estimates the policy plans with now (empty for open-loop policies)."""
        return {}


def allotment(problem: JointTrainingInferenceProblem) -> np.ndarray:
    """Per-round resource a static rule may spend: ``min(cap, budget)``, else the full use."""
    c = problem.clients
    limit = np.minimum(c.cap, c.budget)
    full = c.cost_train + c.cost_download + c.cost_service * c.mu_max
    return np.where(np.isfinite(limit), limit, full)


def _div(num, den):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.inf)


def fill(problem, spare, order, q=None, d=None, mu=None) -> Allocation:
    """Spend ``spare`` (resource beyond the least use) on the variables in ``order``.

    Starts from the least-use allocation (or the given levels, whose extra cost must be
    inside ``spare``) and raises each variable in turn as far as ``spare`` allows.
    """
    c = problem.clients
    x = {"q": c.q_min.copy() if q is None else q.copy(),
         "d": np.zeros(c.count) if d is None else d.copy(),
         "mu": problem.mu_lo.copy() if mu is None else mu.copy()}
    cost = {"q": c.cost_train, "d": c.cost_download, "mu": c.cost_service}
    top = {"q": np.ones(c.count), "d": np.ones(c.count), "mu": c.mu_max}
    spare = np.maximum(spare, 0.0)
    for key in order:
        room = np.minimum(top[key] - x[key], _div(spare, cost[key]))
        room = np.maximum(room, 0.0)
        x[key] = x[key] + room
        spare = np.maximum(spare - cost[key] * room, 0.0)
    return Allocation(x["q"], x["d"], x["mu"])


class TrainingFirst(Policy):
    """``q = 1`` and ``d = 1`` first, the rest of the allotment to the service rate.

    Where the allotment cannot pay for ``q = 1`` and ``d = 1`` together, training and the
    download of what was trained are raised together, at one level ``q = d = s`` (project
    choice: a participant downloads the model it helped train; raising ``q`` alone first
    would leave ``d = 0``, so that no client ever serves with a trained model). ``s`` is
    the largest level the spare resource pays for (``q`` never below ``q_min``); whatever
    is left after ``q = d = 1`` goes to ``mu``.
    """

    name = "training_first"

    def reset(self, problem):
        super().reset(problem)
        c = problem.clients
        spare = np.maximum(allotment(problem) - problem.min_use, 0.0)
        # cost of raising both to level s >= q_min: c_tr (s - q_min) + c_dl s, piecewise for
        # s < q_min (only d moves)
        below = _div(spare, c.cost_download)          # d alone up to q_min
        level = np.where(below <= c.q_min, below,
                         _div(spare + c.cost_train * c.q_min, c.cost_train + c.cost_download))
        level = np.clip(level, 0.0, 1.0)
        q = np.maximum(level, c.q_min)
        used = c.cost_train * (q - c.q_min) + c.cost_download * level
        self.x = fill(problem, spare - used, ("mu",), q=q, d=level)

    def decide(self, obs):
        return self.x


class InferenceFirst(Policy):
    """Service rate for an on-time target first, the rest split evenly to q and d.

    The target is ``simulation.on_time_target`` (fraction of requests within the deadline;
    clients without a deadline get the least rate).
    """

    name = "inference_first"

    def reset(self, problem):
        super().reset(problem)
        c = problem.clients
        target = problem.simulation.on_time_target
        with np.errstate(divide="ignore"):
            mu_goal = np.where(np.isfinite(c.deadline),
                               c.arrival_rate - np.log1p(-target) / c.deadline, 0.0)
        spare = allotment(problem) - problem.min_use
        want = np.clip(mu_goal, problem.mu_lo, c.mu_max) - problem.mu_lo
        take = np.minimum(want * c.cost_service, spare)
        mu = problem.mu_lo + _div(take, c.cost_service).clip(0.0, want)
        spare = spare - c.cost_service * (mu - problem.mu_lo)
        half = fill(problem, spare / 2, ("q",), mu=mu)
        both = fill(problem, spare / 2, ("d",), q=half.q, mu=mu)
        left = spare - c.cost_train * (both.q - c.q_min) - c.cost_download * both.d
        self.x = fill(problem, left, ("d", "q"), q=both.q, d=both.d, mu=mu)

    def decide(self, obs):
        return self.x


class EqualSplit(Policy):
    """A third of the allotment to each of training, download and service."""

    name = "equal_split"

    def reset(self, problem):
        super().reset(problem)
        c = problem.clients
        third = allotment(problem) / 3
        q = np.clip(_div(third, c.cost_train), c.q_min, 1.0)
        d = np.clip(_div(third, c.cost_download), 0.0, 1.0)
        mu = np.clip(_div(third, c.cost_service), problem.mu_lo, c.mu_max)
        # the floors (q_min, mu_lo) may push the use over the allotment: give back the excess,
        # download first, then service, then training
        x = {"q": q, "d": d, "mu": mu}
        over = c.cost_train * q + c.cost_download * d + c.cost_service * mu - allotment(problem)
        for key, cost, floor in (("d", c.cost_download, 0.0), ("mu", c.cost_service, problem.mu_lo),
                                 ("q", c.cost_train, c.q_min)):
            cut = np.minimum(np.maximum(over, 0.0), cost * (x[key] - floor))
            x[key] = x[key] - _div(cut, cost).clip(0.0, None) * (cost > 0)
            over = over - cut
        self.x = Allocation(x["q"], x["d"], x["mu"])

    def decide(self, obs):
        return self.x


class Fixed(Policy):
    """The same given allocation every round (for experiments and tests)."""

    name = "fixed"

    def __init__(self, allocation: Allocation, name: str = "fixed"):
        self.x = allocation
        self.name = name

    def decide(self, obs):
        return self.x


class Online(Policy):
    """The proposed policy: drift-plus-penalty over the per-round solver.

    ``closed_loop`` (default: the problem's ``controller.closed_loop``): re-estimate the
    convergence constants and the accuracy map every round from the observation's feedback
    and plan with the estimate (:class:`~jointopt.closed_loop.ClosedLoop`).

    Where the problem has ``accuracy.aggregation_noise``, the first round plans without it
    and every later round with the deficit linearised at that first decision
    (:meth:`~jointopt.solvers.jti.round.RoundSolver.linearise_deficit`, project choice).
    """

    name = "online"

    def __init__(self, method: str = "fast", closed_loop: bool | None = None):
        self.method = method
        self.closed_loop = closed_loop

    def _slot_problem(self, problem):
        return problem

    def reset(self, problem):
        super().reset(problem)
        self.solver = RoundSolver(self._slot_problem(problem), self.method)
        on = problem.controller.closed_loop if self.closed_loop is None else self.closed_loop
        self.loop = (ClosedLoop(problem, forgetting=problem.controller.forgetting) if on
                     else None)
        c = problem.clients
        top = np.minimum(c.cap, c.cost_train + c.cost_download + c.cost_service * c.mu_max)
        self.controller = DriftPlusPenalty(self._solve_slot, c.budget, problem.Z,
                                           pricing=problem.controller.pricing, max_use=top)

    def _solve_slot(self, obs: Observation, Z, warm):
        result = self.solver.solve(RoundState(obs.K, obs.held_error, Z), warm,
                                   max_iter=self._sweeps(warm))
        x = Allocation(result.decisions["q"], result.decisions["d"], result.decisions["mu"])
        return x, self.solver.use(x)

    def decide(self, obs):
        if self.loop is not None:
            self.loop.observe(obs.t, obs.K, obs.feedback)
            self.solver.retune(self.loop.convergence, self.loop.accuracy)
        x = self.controller.step(obs)
        if self.controller.slots == 1:  # plan with the aggregation deficit from here on
            self.solver.linearise_deficit(x)
        return x

    @property
    def estimates(self) -> dict:
        return {} if self.loop is None else self.loop.estimates

    def _sweeps(self, warm) -> int | None:
        """``controller.sweeps_per_round`` once warm (None: ascend to convergence).

        Drift-plus-penalty tolerates an approximate per-round solution, and the state moves
        little from one round to the next, so a few warm-started sweeps a round track the
        exact solution (measured on ``large`` resized to 10,000 clients, 150 rounds: timely
        accuracy 0.7932 with one sweep a round, 0.7930 to convergence, at 16 against 36 ms
        a round). The first round always ascends to convergence."""
        return None if warm is None else self.problem.controller.sweeps_per_round

    @property
    def backlog(self):
        return self.controller.backlog

    def settle(self, use):
        self.controller.settle(use)


class AoMUnaware(Online):
    """Optimises ``q`` and ``mu`` as if every copy were the newest model, with ``d = q``.

    It runs the same drift-plus-penalty controller on a problem where a download costs
    nothing extra beyond participation (training cost ``c_tr + c_dl``) and is always worth
    it, then ties the download to participation: freshness is never traded off. A client
    whose cap or budget cannot carry the tie even at ``q_min`` keeps its own costs and
    downloads what its cap leaves, up to ``q``.
    """

    name = "aom_unaware"

    def __init__(self, method: str = "fast"):
        super().__init__(method, closed_loop=False)  # the closed loop is online's option

    def _slot_problem(self, problem):
        c = problem.clients
        limit = np.minimum(c.cap, c.budget)
        self.tied = c.q_min * (c.cost_train + c.cost_download) + c.cost_service * problem.mu_lo \
            <= limit
        data = problem.to_dict()
        data["clients"]["cost_train"] = (c.cost_train + self.tied * c.cost_download).tolist()
        data["clients"]["cost_download"] = np.where(self.tied, 0.0, c.cost_download).tolist()
        return JointTrainingInferenceProblem.from_dict(data)

    def _solve_slot(self, obs, Z, warm):
        # "every copy is the newest": a held error far above any new model makes d = 1
        # optimal in the slot problem, so the accuracy term sees the new model's error
        blind = RoundState(obs.K, np.full_like(obs.held_error, 1e3 * (1.0 + obs.K)), Z)
        warm_blind = None
        if warm is not None:
            warm_blind = Allocation(warm.q, np.where(self.tied, 1.0, warm.d), warm.mu)
        result = self.solver.solve(blind, warm_blind, max_iter=self._sweeps(warm))
        q, mu = result.decisions["q"], result.decisions["mu"]
        c = self.problem.clients
        left = c.cap - c.cost_train * q - c.cost_service * mu
        d = np.where(self.tied, q, np.clip(_div(left, c.cost_download), 0.0, q))
        x = Allocation(q, d, mu)
        return x, c.cost_train * q + c.cost_download * d + c.cost_service * mu


class Static(Policy):
    """The per-round problem solved once, with the budget as the cap, and held fixed (where
    the problem has ``accuracy.aggregation_noise``: solved again with the deficit
    linearised at the first solution's participation)."""

    name = "static"

    def reset(self, problem):
        super().reset(problem)
        data = problem.to_dict()
        data["clients"]["cap"] = np.minimum(problem.clients.cap, problem.clients.budget).tolist()
        data["state"]["Z"] = 0.0
        held = JointTrainingInferenceProblem.from_dict(data)
        solver = RoundSolver(held)
        res = solver.solve()
        if solver.linearise_deficit(Allocation(res.decisions["q"], res.decisions["d"],
                                               res.decisions["mu"])):  # again, with the deficit
            res = solver.solve()
        self.x = Allocation(res.decisions["q"], res.decisions["d"], res.decisions["mu"])

    def decide(self, obs):
        return self.x


POLICIES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (Online, TrainingFirst, InferenceFirst, EqualSplit, AoMUnaware,
                              Static)
}


def make_policy(name: str) -> Policy:
    """A fresh policy by name (see :data:`POLICIES`)."""
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}") from None
