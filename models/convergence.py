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
    """Constants ``(a, b, c)`` of the recursion; ``source`` says where they came from."""

    a: float
    b: float
    c: float
    source: str = "fitted"

    def __post_init__(self):
        check_range("convergence.a", self.a, gt=0.0, lt=1.0)
        check_range("convergence.b", self.b, ge=0.0)
        check_range("convergence.c", self.c, ge=0.0)

    @classmethod
    def from_fitted(cls, a: float, b: float, c: float) -> ConvergenceModel:
        """Constants fitted to a measured loss-gap curve (e.g. by the validation harness)."""
        return cls(float(a), float(b), float(c), source="fitted")

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

    def step(self, K: float, q: np.ndarray, p: np.ndarray) -> float:
        """One round of the recursion: ``K_{t+1}`` from ``K_t`` and this round's ``q``."""
        return self.a * K + self.b * participation_variance(q, p) + self.c

    def fixed_point(self, q: np.ndarray, p: np.ndarray) -> float:
        """Limit of ``K_t`` under a constant ``q``."""
        return (self.b * participation_variance(q, p) + self.c) / (1.0 - self.a)

    def trajectory(self, K0: float, q: np.ndarray, p: np.ndarray, rounds: int) -> np.ndarray:
        """``K_0 .. K_rounds`` under a constant ``q`` (closed form of the linear recursion)."""
        target = self.fixed_point(q, p)
        t = np.arange(rounds + 1)
        return target + (K0 - target) * self.a ** t
