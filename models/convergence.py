"""Convergence-error recursion of FedAvg under Bernoulli participation.

Provenance: **project choice** (``docs/kinds/joint_training_inference.md``). The source paper
uses the global model's convergence error as the proxy of inference quality; its exact
bound is not available to the project, so we use the standard one-step contraction

    K_{t+1} = a K_t + b * sum_n p_n^2 (1 - q_n) / q_n + c,      0 < a < 1,

whose middle term is the extra variance of unbiased (inverse-probability weighted)
aggregation when client n takes part with probability ``q_n``. The constants come from a
:class:`ConvergenceModel`, built either from smoothness / strong-convexity theory
(:meth:`ConvergenceModel.from_smoothness`) or from constants fitted to real training
(:meth:`ConvergenceModel.from_fitted`, used by the validation harness).

Error-scaled variance (project extension, ``b_rel``, default 0): the variance that partial
participation adds is that of the clients' updates, and an update is large where the model
is far from the optimum (for an L-smooth loss ``|grad F_n|^2 <= 2 L (F_n - F_n^*)``). With
``b_rel > 0`` the coefficient of the variance term grows with the error,

    K_{t+1} = a K_t + (b + b_rel K_t) * sum_n p_n^2 (1 - q_n) / q_n + c,

so the contraction ``a + b_rel sum p^2 (1-q)/q`` is set by participation: a model far from
its optimum (early in training, or after the data moved) recovers faster the more clients
take part, and a model tracking moving data lags less. Within one round ``K_t`` is known, so
the round's recursion is the plain one with ``b + b_rel K_t`` (:meth:`ConvergenceModel.at`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jointopt.models.checks import check_range
from jointopt.models.errors import ValidationError


def participation_variance(q: np.ndarray, p: np.ndarray) -> float:
    """``sum_n p_n^2 (1 - q_n) / q_n``: zero at full participation, grows as q drops."""
    q = np.asarray(q, dtype=float)
    p = np.asarray(p, dtype=float)
    return float(np.sum(p * p * (1.0 - q) / q))


@dataclass(frozen=True)
class ConvergenceModel:
    """Constants ``(a, b, c)`` of the recursion, and ``b_rel`` (error-scaled variance, module
    docstring); ``source`` says where they came from."""

    a: float
    b: float
    c: float
    source: str = "fitted"
    b_rel: float = 0.0

    def __post_init__(self):
        check_range("convergence.a", self.a, gt=0.0, lt=1.0)
        check_range("convergence.b", self.b, ge=0.0)
        check_range("convergence.c", self.c, ge=0.0)
        check_range("convergence.b_rel", self.b_rel, ge=0.0)

    @classmethod
    def from_fitted(cls, a: float, b: float, c: float, b_rel: float = 0.0) -> ConvergenceModel:
        """Constants fitted to a measured loss-gap curve (e.g. by the validation harness)."""
        return cls(float(a), float(b), float(c), source="fitted", b_rel=float(b_rel))

    @classmethod
    def from_smoothness(cls, *, lr: float, smoothness: float, strong_convexity: float,
                        local_steps: int, grad_sq_bound: float, noise_var: float,
                        p: np.ndarray) -> ConvergenceModel:
        """Analytic constants for an L-smooth, rho-strongly-convex objective.

        ``a = 1 - lr*rho*I``, ``b = lr^2 L I G^2``, ``c = lr^2 L I sigma^2 sum_n p_n^2``
        (project choice following the standard local-SGD analysis). Needs ``lr*rho*I < 1``.
        """
        check_range("convergence.lr", lr, gt=0.0)
        check_range("convergence.smoothness", smoothness, gt=0.0)
        check_range("convergence.strong_convexity", strong_convexity, gt=0.0)
        check_range("convergence.local_steps", local_steps, ge=1)
        check_range("convergence.grad_sq_bound", grad_sq_bound, ge=0.0)
        check_range("convergence.noise_var", noise_var, ge=0.0)
        if strong_convexity > smoothness:
            raise ValidationError(
                "convergence.strong_convexity",
                f"must be <= smoothness ({smoothness:g}), got {strong_convexity:g}")
        contraction = lr * strong_convexity * local_steps
        if contraction >= 1.0:
            raise ValidationError(
                "convergence.lr",
                f"is too large: lr*strong_convexity*local_steps = {contraction:g} must be < 1")
        p = np.asarray(p, dtype=float)
        scale = lr * lr * smoothness * local_steps
        return cls(1.0 - contraction, scale * grad_sq_bound,
                   scale * noise_var * float(np.sum(p * p)), source="analytic")

    def next(self, K, spread):
        """``K_{t+1}`` from ``K_t`` and a variance term ``spread`` (the expected
        ``sum p^2 (1-q)/q``, or a sampled ``sum p^2 (B/q - 1)^2``)."""
        return self.a * K + (self.b + self.b_rel * K) * spread + self.c

    def at(self, K: float) -> ConvergenceModel:
        """The recursion of a round that starts at ``K``: ``b + b_rel K`` as its ``b``."""
        if self.b_rel == 0.0:
            return self
        return ConvergenceModel(self.a, self.b + self.b_rel * float(K), self.c, self.source)

    def step(self, K: float, q: np.ndarray, p: np.ndarray) -> float:
        """One round of the recursion: ``K_{t+1}`` from ``K_t`` and this round's ``q``."""
        return self.next(K, participation_variance(q, p))

    def contraction(self, q: np.ndarray, p: np.ndarray) -> float:
        """``a + b_rel sum p^2 (1-q)/q``: the factor the error contracts by under ``q``."""
        return self.a + self.b_rel * participation_variance(q, p)

    def fixed_point(self, q: np.ndarray, p: np.ndarray) -> float:
        """Limit of ``K_t`` under a constant ``q`` (``inf`` where the contraction is not
        below 1: with ``b_rel > 0``, too little participation never converges)."""
        rho = self.contraction(q, p)
        if rho >= 1.0:
            return float("inf")
        return (self.b * participation_variance(q, p) + self.c) / (1.0 - rho)

    def trajectory(self, K0: float, q: np.ndarray, p: np.ndarray, rounds: int) -> np.ndarray:
        """``K_0 .. K_rounds`` under a constant ``q`` (closed form of the linear recursion)."""
        rho = self.contraction(q, p)
        t = np.arange(rounds + 1)
        if rho >= 1.0:
            out = [float(K0)]
            for _ in range(rounds):
                out.append(self.step(out[-1], q, p))
            return np.asarray(out)
        target = self.fixed_point(q, p)
        return target + (K0 - target) * rho ** t
