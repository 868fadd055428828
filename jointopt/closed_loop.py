"""Closed-loop calibration: the online controller re-estimates its model while it runs.

Provenance: **project choice**. The controller plans with a convergence recursion and an
accuracy map fitted once (from pilot runs, or stated in the scenario). When the real system
departs from them, nothing corrects the plan. With the closed loop the controller re-fits
both every round from what it observes, by recursive least squares with exponential
forgetting, and plans with the current estimate:

* **convergence**: the server's validation loss ``K_t`` each round, and the round's
  realised participation spread ``V_t = sum_n p_n^2 (B_n / q_n - 1)^2`` (the server knows
  who took part and with which ``q``). Regression of ``K_{t+1} - shock(t + 1)`` (the drift
  model's shock, when the data moves) on ``(K_t, V_t, 1, K_t V_t)``: the constants
  ``(a, b, c, b_rel)`` of :class:`~jointopt.models.convergence.ConvergenceModel`.
* **accuracy map**: the clients' reports of the last round, per client the requests served
  on time and how many of them were right, and the error proxy of the copy that served
  them. Regression of the measured accuracy on the current map's prediction,
  ``acc_true(e) ~ s0 + s1 acc(e)`` (weighted by the requests): the planned map is the
  scenario's (or calibrated) map rescaled, :class:`ScaledAccuracy`, so it keeps its family.

Both regressions start at the model the controller was given (``theta0``) and are pulled
towards it by a prior of fixed weight that is never forgotten (ridge regression towards the
prior), so that rounds that carry little information (every client at the same error, no
participation spread) do not make the estimate wander. Estimates are projected onto the
models' ranges (``0 < a <= 0.999``, ``b, c, b_rel >= 0``, ``s1 > 0``) before planning.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from jointopt.models.convergence import ConvergenceModel


class RecursiveLeastSquares:
    """``y ~ x @ theta``, weighted, with forgetting ``lam`` and a fixed prior.

    Information form: ``R <- lam R + X' W X``, ``r <- lam r + X' W y``, and the estimate
    ``theta = (R + R0)^-1 (r + R0 theta0)`` with ``R0 = diag(prior_weight)``.
    """

    def __init__(self, theta0, prior_weight, forgetting: float):
        if not 0.0 < forgetting <= 1.0:
            raise ValueError(f"forgetting must be in (0, 1], got {forgetting}")
        self.theta0 = np.asarray(theta0, dtype=float)
        self.R0 = np.diag(np.broadcast_to(np.asarray(prior_weight, dtype=float),
                                          self.theta0.shape))
        k = self.theta0.size
        self.R, self.r = np.zeros((k, k)), np.zeros(k)
        self.lam = float(forgetting)
        self.theta = self.theta0.copy()
        self.updates = 0

    def update(self, X, y, w=None) -> np.ndarray:
        """Add the rows ``X`` (m, k) with targets ``y`` and weights ``w``; return theta."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        y = np.atleast_1d(np.asarray(y, dtype=float))
        w = np.ones(len(y)) if w is None else np.asarray(w, dtype=float)
        keep = np.isfinite(y) & np.isfinite(X).all(axis=1) & (w > 0)
        X, y, w = X[keep], y[keep], w[keep]
        self.R = self.lam * self.R + X.T @ (w[:, None] * X)
        self.r = self.lam * self.r + X.T @ (w * y)
        self.theta = np.linalg.solve(self.R + self.R0, self.r + self.R0 @ self.theta0)
        self.updates += 1
        return self.theta


@dataclass(frozen=True)
class ScaledAccuracy:
    """``s0 + s1 * base(e)``, clipped to ``[0, 1]``: a map re-scaled by the closed loop."""

    base: object
    s0: float = 0.0
    s1: float = 1.0

    @property
    def acc_max(self) -> float:
        return float(np.clip(self.s0 + self.s1 * self.base.acc_max, 0.0, 1.0))

    @property
    def acc_min(self) -> float:
        return float(np.clip(self.s0 + self.s1 * self.base.acc_min, 0.0, 1.0))

    def __call__(self, e) -> np.ndarray:
        return np.clip(self.s0 + self.s1 * self.base(e), 0.0, 1.0)

    def linearize(self, e0: float) -> tuple[float, float]:
        intercept, slope = self.base.linearize(e0)
        return self.s0 + self.s1 * intercept, self.s1 * slope

    def error_of(self, acc) -> np.ndarray:
        return self.base.error_of((np.asarray(acc, dtype=float) - self.s0) / self.s1)


@dataclass(frozen=True)
class Feedback:
    """What the system reports after a round (the closed loop's observations).

    ``spread``: the realised ``sum_n p_n^2 (B_n / q_n - 1)^2``; ``served_error``: the error
    proxy of the copy each client served with; ``on_time`` and ``correct``: per client, the
    requests answered within the deadline, and of those, the right ones.
    """

    spread: float
    served_error: np.ndarray
    on_time: np.ndarray
    correct: np.ndarray


class ClosedLoop:
    """Re-estimates the convergence constants and the accuracy map of one run.

    ``forgetting``: RLS forgetting factor a round; ``prior_rounds``: the weight of the given
    model, in rounds' worth of observations of the data's typical scale (see
    :class:`RecursiveLeastSquares`).
    """

    def __init__(self, problem, *, forgetting: float = 0.97, prior_rounds: float = 10.0):
        self.problem = problem
        self.drift = problem.drift.model
        conv = problem.convergence_model
        self.conv0 = conv
        self.acc0 = problem.accuracy_map
        self.p2 = problem.clients.p ** 2
        lam = problem.clients.arrival_rate
        self.weights = lam / lam.sum() if lam.sum() > 0 else np.full(lam.size, 1.0 / lam.size)
        # prior weight per coefficient: prior_rounds rounds of a regressor of typical size
        # (K ~ K0, V ~ its value at q = 1/2, intercept 1)
        K0 = max(problem.K, 1e-3)
        V0 = max(float(np.sum(self.p2)), 1e-6)
        self.conv_rls = RecursiveLeastSquares(
            [conv.a, conv.b, conv.c, conv.b_rel],
            prior_rounds * np.array([K0 ** 2, V0 ** 2, 1.0, (K0 * V0) ** 2]), forgetting)
        # the accuracy regression sees one row per client and round; its prior is worth
        # prior_rounds rounds of the typical request count
        per_round = max(float(lam.sum() * problem.simulation.slot), 1.0)
        self.acc_rls = RecursiveLeastSquares([0.0, 1.0], prior_rounds * per_round * np.array(
            [1.0, 0.25]), forgetting)
        self.history: list[dict] = []
        self._last = None  # (t, K_t) of the round whose outcome is pending

    @property
    def convergence(self) -> ConvergenceModel:
        a, b, c, b_rel = self.conv_rls.theta
        return dataclasses.replace(self.conv0, a=float(np.clip(a, 1e-3, 0.999)),
                                   b=float(max(b, 0.0)), c=float(max(c, 0.0)),
                                   b_rel=float(max(b_rel, 0.0)), source="closed_loop")

    @property
    def accuracy(self) -> ScaledAccuracy:
        s0, s1 = self.acc_rls.theta
        return ScaledAccuracy(self.acc0, float(s0), float(max(s1, 1e-3)))

    def observe(self, t: int, K: float, feedback: Feedback | None) -> None:
        """Round ``t`` starts at the measured ``K``; ``feedback`` reports round ``t - 1``."""
        if feedback is not None and self._last is not None and self._last[0] == t - 1:
            K_prev = self._last[1]
            V = float(feedback.spread)
            # a round into which the data jumped moved the loss by more than the recursion
            # describes: its step is left out of the convergence regression
            if t not in self.drift.jumps:
                shock = self.drift.shock(t) if self.drift.active else 0.0
                self.conv_rls.update([[K_prev, V, 1.0, K_prev * V]], [K - shock])
            m = np.asarray(feedback.on_time, dtype=float)
            served = m > 0
            if served.any():
                pred = self.acc0(np.asarray(feedback.served_error, dtype=float)[served])
                measured = np.asarray(feedback.correct, dtype=float)[served] / m[served]
                self.acc_rls.update(np.column_stack([np.ones(served.sum()), pred]),
                                    measured, m[served])
        self._last = (t, float(K))
        conv, acc = self.convergence, self.accuracy
        self.history.append({"round": t, "est_a": conv.a, "est_b": conv.b, "est_c": conv.c,
                             "est_b_rel": conv.b_rel, "est_acc_s0": acc.s0,
                             "est_acc_s1": acc.s1})

    @property
    def estimates(self) -> dict:
        """The current estimates (the last row of :attr:`history`)."""
        return self.history[-1] if self.history else {}
