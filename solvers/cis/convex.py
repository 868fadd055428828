"""Choosing the exit weights by a convex program [project choice].

Bound model (a reconstruction of the usual bias + optimisation split of FedAvg-type
analyses, not the paper's theorem, which the project does not have)::

    B(x) = sum_e (lambda_e - x_e)^2 / x_e  +  rho sum_e Vhat_e x_e^2  +  kappa sum_e lambda_e / x_e
           bias: chi^2(lambda || x)            stochastic variance        slow progress of
                                                                          low-weight exits

    minimise B(x)  subject to  sum_e x_e = 1,  x_e >= eps       (eps < 1/E)

with ``Vhat = V / sum V`` (scale-free ``rho``). The bias term is zero iff ``x = lambda``
(option ``bias="kl"``: ``-sum lambda_e log x_e``; ``bias="none"`` drops it, for the limit
tests only). Limits: ``rho = kappa = 0`` gives lambda; no bias and ``kappa = 0`` gives
``x ∝ 1/V``; the progress term alone gives ``x ∝ sqrt(lambda)``.

Two paths, one answer: :class:`ConvexWeightProgram` (CVXPY, DPP, compiled once and
re-solved with new parameters; Clarabel, then SCS) and :func:`solve_slsqp` (scipy SLSQP on
the same objective), held to the same answer by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from jointopt.models.checks import as_vector, check_range
from jointopt.models.errors import SolverError, ValidationError

Bias = Literal["chi2", "kl", "none"]
SOLVER_ORDER = ("CLARABEL", "SCS")


@dataclass(frozen=True)
class ConvexWeights:
    """Solution of the weight program: ``weights`` and the value of each term of B."""

    weights: np.ndarray
    bias: float
    variance: float
    progress: float
    status: str
    solver: str
    solve_time_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def objective(self) -> float:
        return self.bias + self.variance + self.progress


def _inputs(target, variance, rho, kappa, n_exits=None):
    lam = as_vector("target_weights", target, n_exits)
    check_range("target_weights", lam, ge=0.0)
    if not lam.sum() > 0:
        raise ValidationError("target_weights", "must not be all zero")
    lam = lam / lam.sum()
    v = as_vector("variance", variance, lam.size)
    check_range("variance", v, gt=0.0, finite=False)
    check_range("convex.rho", rho, ge=0.0)
    check_range("convex.kappa", kappa, ge=0.0)
    finite = np.isfinite(v)
    # an exit nobody can train (V = inf) makes the variance term infinite unless its weight
    # is 0, which the floor forbids: treat its Vhat as the largest finite one instead.
    if not finite.any():
        raise ValidationError("variance", "is infinite for every exit (nobody trains)")
    v = np.where(finite, v, v[finite].max())
    return lam, v / v.sum()


def bound_terms(x, target, variance, rho: float = 1.0, kappa: float = 0.0,
                bias: Bias = "chi2") -> tuple[float, float, float]:
    """``(bias, variance, progress)`` terms of B at weights ``x`` (numpy; any x > 0)."""
    lam, vhat = _inputs(target, variance, rho, kappa)
    x = as_vector("weights", x, lam.size)
    check_range("weights", x, ge=0.0)
    pos = x > 0
    safe = np.where(pos, x, 1.0)
    # x_e = 0 costs nothing where lambda_e = 0 and infinitely much where lambda_e > 0
    hole = np.where(lam > 0, np.inf, 0.0)
    if bias == "chi2":
        b = float(np.sum(np.where(pos, (lam - x) ** 2 / safe, hole)))
    elif bias == "kl":
        ratio = np.where(lam > 0, lam, 1.0) / safe
        b = float(np.sum(np.where(lam > 0, np.where(pos, lam * np.log(ratio), np.inf), 0.0)))
    else:
        b = 0.0
    progress = float(kappa * np.sum(np.where(pos, lam / safe, hole))) if kappa > 0 else 0.0
    return b, float(rho * np.sum(vhat * x * x)), progress


def bound(x, target, variance, rho: float = 1.0, kappa: float = 0.0,
          bias: Bias = "chi2") -> float:
    """B(x) of the module docstring (the S1 bound ranking)."""
    return float(sum(bound_terms(x, target, variance, rho, kappa, bias)))


class ConvexWeightProgram:
    """The weight program for E exits, built once (DPP) and re-solved with new parameters
    ``lambda``, ``wv = rho Vhat`` and ``wp = kappa lambda`` without recompiling."""

    def __init__(self, n_exits: int, *, eps: float = 1e-3, bias: Bias = "chi2"):
        import cvxpy as cp  # lazy: importing jointopt must stay fast

        check_range("n_exits", n_exits, ge=1)
        check_range("convex.eps", eps, ge=0.0, lt=1.0 / n_exits)
        if bias not in ("chi2", "kl", "none"):
            raise ValidationError("convex.bias", f"must be 'chi2', 'kl' or 'none', got {bias!r}")
        self.n_exits, self.eps, self.bias = int(n_exits), float(eps), bias
        self._warm: set[str] = set()
        e = self.n_exits
        self.x = cp.Variable(e, name="weights")
        self.lam = cp.Parameter(e, nonneg=True, name="target")
        self.wv = cp.Parameter(e, nonneg=True, name="rho_vhat")
        self.wp = cp.Parameter(e, nonneg=True, name="kappa_lambda")
        if bias == "chi2":
            bias_expr = sum(cp.quad_over_lin(self.lam[i] - self.x[i], self.x[i])
                            for i in range(e))
        elif bias == "kl":
            bias_expr = -cp.sum(cp.multiply(self.lam, cp.log(self.x)))
        else:
            bias_expr = cp.Constant(0.0)
        self.terms = (bias_expr, cp.sum(cp.multiply(self.wv, cp.square(self.x))),
                      cp.sum(cp.multiply(self.wp, cp.inv_pos(self.x))))
        self.problem = cp.Problem(cp.Minimize(sum(self.terms)),
                                  [cp.sum(self.x) == 1, self.x >= self.eps])

    def solve(self, target, variance, rho: float = 1.0, kappa: float = 0.0,
              solver: str | None = None) -> ConvexWeights:
        """Minimise B; ``solver`` forces one CVXPY solver, else Clarabel then SCS. The
        answer is clipped at eps and renormalised; a non-optimal status raises."""
        import cvxpy as cp

        lam, vhat = _inputs(target, variance, rho, kappa, self.n_exits)
        self.lam.value = lam
        self.wv.value = rho * vhat
        self.wp.value = kappa * lam
        order = (solver,) if solver else SOLVER_ORDER
        errors = []
        for name in order:
            try:
                if name not in self._warm:
                    # CVXPY's first solve compiles and takes a different numerical path
                    # than the cached re-solves (answers differ by ~1e-10): run it once so
                    # that equal inputs always give bitwise-equal weights.
                    self.problem.solve(solver=name)
                    self._warm.add(name)
                self.problem.solve(solver=name)
            except (cp.SolverError, ValueError) as exc:
                errors.append(f"{name}: {exc}")
                continue
            if self.problem.status == cp.OPTIMAL:
                x = np.maximum(np.asarray(self.x.value, dtype=float), self.eps)
                x = x / x.sum()
                b, v, p = bound_terms(x, lam, vhat, rho, kappa,
                                      "chi2" if self.bias == "chi2" else self.bias)
                stats = self.problem.solver_stats
                return ConvexWeights(x, b, v, p, "optimal", name,
                                     float(stats.solve_time or 0.0),
                                     {"iterations": int(stats.num_iters or 0)})
            errors.append(f"{name}: status {self.problem.status}")
        raise SolverError("convex exit-weight program failed: " + "; ".join(errors))


_PROGRAMS: dict[tuple, ConvexWeightProgram] = {}


def convex_weights(target, variance, rho: float = 1.0, kappa: float = 0.0, *,
                   eps: float = 1e-3, bias: Bias = "chi2", solver: str | None = None
                   ) -> ConvexWeights:
    """Solve the program with a cached compiled :class:`ConvexWeightProgram` per
    ``(E, eps, bias)``."""
    e = len(np.atleast_1d(target))
    key = (e, float(eps), bias)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = ConvexWeightProgram(e, eps=eps, bias=bias)
    return _PROGRAMS[key].solve(target, variance, rho, kappa, solver=solver)


def solve_slsqp(target, variance, rho: float = 1.0, kappa: float = 0.0, *,
                eps: float = 1e-3, bias: Bias = "chi2") -> ConvexWeights:
    """Second path: scipy SLSQP on the same objective and constraints."""
    from scipy.optimize import minimize

    lam, vhat = _inputs(target, variance, rho, kappa)
    e = lam.size
    check_range("convex.eps", eps, ge=0.0, lt=1.0 / e)
    lo = max(eps, 1e-9)

    def f(x):
        return bound(x, lam, vhat, rho, kappa, bias)

    def grad(x):
        g = 2.0 * rho * vhat * x - kappa * lam / x**2
        if bias == "chi2":
            g = g + 1.0 - (lam / x) ** 2
        elif bias == "kl":
            g = g - lam / x
        return g

    x0 = np.maximum(lam, lo)
    x0 = x0 / x0.sum()
    res = minimize(f, x0, jac=grad, method="SLSQP", bounds=[(lo, 1.0)] * e,
                   constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0,
                                 "jac": lambda x: np.ones_like(x)}],
                   options={"ftol": 1e-15, "maxiter": 500})
    if not res.success:
        raise SolverError(f"SLSQP failed on the exit-weight program: {res.message}")
    x = np.maximum(res.x, eps)
    x = x / x.sum()
    b, v, p = bound_terms(x, lam, vhat, rho, kappa, bias)
    return ConvexWeights(x, b, v, p, "optimal", "SLSQP", 0.0, {"iterations": int(res.nit)})


__all__ = ["ConvexWeightProgram", "ConvexWeights", "bound", "bound_terms", "convex_weights",
           "solve_slsqp"]
