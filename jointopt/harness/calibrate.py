"""Calibration: fit the surrogate's convergence constants and accuracy map to real runs.

Provenance: **project choice** (``docs/kinds/joint_training_inference.md``). Numpy/scipy only;
:func:`calibrate` runs the harness and so imports torch.

* :func:`fit_convergence`: bounded linear least squares (``scipy.optimize.lsq_linear``) of
  ``K_{t+1} = a K_t + b V_t + c`` over every round of every pilot run, with ``0 <= a < 1``,
  ``b, c >= 0``. ``V_t`` is the round's sampled aggregation spread
  ``sum_n p_n^2 (B_n / q_n - 1)^2``, whose expectation is the model's
  ``sum_n p_n^2 (1 - q_n) / q_n``.
* :func:`fit_accuracy`: nonlinear least squares (``scipy.optimize.least_squares``) of the
  scenario's accuracy-map family (affine, clipped; or exponential) to pairs (error of a
  global-model version, its measured accuracy on the request mix). In :func:`calibrate`
  the error is by default the fitted recursion's own open-loop prediction ``K^_t`` for that
  round (``accuracy_on="predicted"``), so that the composite ``acc(K^_t)``, which is what the
  surrogate computes, tracks the measured accuracy even where the linear recursion bends
  differently from the real loss curve; ``"measured"`` uses the measured loss ``K_t``
  (measured on the default scenario, 4 policies, seed 0, 100 rounds: mean absolute error of the
  validation 0.011 against 0.016).

Pilot runs (:func:`calibrate`) hold constant participation levels ``q``, or draw them per
client and round (downloads and service at their maximum; serving plays no part in the
fit), so the fit sees several variance levels and is independent of the policies it then
judges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares, lsq_linear

from jointopt.models.accuracy import ACCURACY_MAPS
from jointopt.models.convergence import ConvergenceModel

A_MAX = 0.999  # a < 1 is required by ConvergenceModel


def _quality(y: np.ndarray, fit: np.ndarray) -> dict:
    resid = y - fit
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {"rmse": float(np.sqrt(np.mean(resid ** 2))),
            "r2": float(1.0 - np.sum(resid ** 2) / ss_tot) if ss_tot > 0 else float("nan"),
            "n": int(len(y))}


@dataclass(frozen=True)
class ConvergenceFit:
    """Fitted ``(a, b, c)`` with fit quality (``rmse``, ``r2`` of the one-step prediction)."""

    a: float
    b: float
    c: float
    rmse: float
    r2: float
    n: int

    def model(self) -> ConvergenceModel:
        return ConvergenceModel.from_fitted(self.a, self.b, self.c)


def fit_convergence(runs, method: str = "trajectory") -> ConvergenceFit:
    """Least squares of ``K_{t+1} = a K_t + b V_t + c`` over ``runs``.

    ``runs``: iterable of ``(K, V)`` with ``K`` of length ``T + 1`` (``K_0 .. K_T``) and
    ``V`` of length ``T`` (the spread of each round). ``method="one_step"``: bounded linear
    least squares of each measured ``K_{t+1}`` on the measured ``K_t``.
    ``"trajectory"`` (default): the recursion is run open loop from each run's ``K_0`` with
    its ``V_t`` (as the surrogate runs it) and ``(a, b, c)`` minimise the squared gap to
    the measured ``K_1 .. K_T`` (``least_squares``, started from the one-step fit). Fit
    quality (``rmse``, ``r2``) is of the chosen method's predictions.
    """
    runs = [(np.asarray(K, dtype=float), np.asarray(V, dtype=float)) for K, V in runs]
    rows, target = [], []
    for K, V in runs:
        if len(K) != len(V) + 1:
            raise ValueError(f"K needs one more entry than V, got {len(K)} and {len(V)}")
        rows.append(np.column_stack([K[:-1], V, np.ones(len(V))]))
        target.append(K[1:])
    A, y = np.vstack(rows), np.concatenate(target)
    scale = np.maximum(np.abs(A).max(axis=0), 1e-12)  # column scaling for conditioning
    sol = lsq_linear(A / scale, y, bounds=([0.0, 0.0, 0.0], [A_MAX * scale[0], np.inf, np.inf]))
    x = np.clip(sol.x / scale, [1e-9, 0.0, 0.0], [A_MAX, np.inf, np.inf])
    if method == "one_step":
        fit = A @ x
    elif method == "trajectory":
        def predict(x):
            out = []
            for K, V in runs:
                k, path = K[0], np.empty(len(V))
                for t, v in enumerate(V):
                    k = x[0] * k + x[1] * v + x[2]
                    path[t] = k
                out.append(path)
            return np.concatenate(out)

        x = least_squares(lambda x: predict(x) - y, x, x_scale=np.maximum(np.abs(x), 1e-3),
                          bounds=([1e-9, 0.0, 0.0], [A_MAX, np.inf, np.inf])).x
        fit = predict(x)
    else:
        raise ValueError(f"method must be 'one_step' or 'trajectory', got {method!r}")
    a, b, c = (float(v) for v in x)
    return ConvergenceFit(a, b, c, **_quality(y, fit))


@dataclass(frozen=True)
class AccuracyFit:
    """Fitted accuracy map (``params`` for :data:`ACCURACY_MAPS`) with fit quality."""

    map: str
    params: dict
    rmse: float
    r2: float
    n: int

    def build(self):
        return ACCURACY_MAPS[self.map](**self.params)


def fit_accuracy(error, accuracy, map: str = "affine") -> AccuracyFit:
    """Least squares of ``accuracy ~ acc(error)`` within the ``map`` family.

    ``affine``: ``clip(acc_max - kappa e, acc_min, acc_max)``; ``exponential``:
    ``acc_min + (acc_max - acc_min) exp(-e / scale)``; all three constants are fitted.
    """
    e, y = np.asarray(error, dtype=float), np.asarray(accuracy, dtype=float)
    if e.shape != y.shape or len(e) < 3:
        raise ValueError("need at least 3 (error, accuracy) pairs of equal length")
    lo_acc = float(max(y.min(), 0.0))
    hi_acc = float(min(max(y.max(), lo_acc + 1e-3), 1.0))
    if map == "affine":
        slope, intercept = np.polyfit(e, y, 1)
        x0 = [min(max(intercept, lo_acc + 2e-3), 1.0), max(-slope, 1e-3), lo_acc]

        def f(x, e=e):
            return np.clip(x[0] - x[1] * e, x[2], x[0])

        names, lb, ub = ("acc_max", "kappa", "acc_min"), [1e-3, 1e-6, 0.0], [1.0, np.inf, 1.0]
    elif map == "exponential":
        x0 = [hi_acc, max(float(np.median(e)), 1e-3), lo_acc]

        def f(x, e=e):
            return x[2] + (x[0] - x[2]) * np.exp(-e / x[1])

        names, lb, ub = ("acc_max", "scale", "acc_min"), [1e-3, 1e-6, 0.0], [1.0, np.inf, 1.0]
    else:
        raise ValueError(f"map must be one of {', '.join(ACCURACY_MAPS)}, got {map!r}")
    x0 = np.clip(x0, np.array(lb) + 1e-9, np.array(ub))
    sol = least_squares(lambda x: f(x) - y, x0, bounds=(lb, ub))
    x = sol.x.copy()
    x[2] = min(x[2], x[0] - 1e-3)  # the map needs acc_min < acc_max
    x[2] = max(x[2], 0.0)
    return AccuracyFit(map, dict(zip(names, (float(v) for v in x), strict=True)),
                       **_quality(y, f(x)))


@dataclass
class Calibration:
    """Fitted constants, the measured initial loss ``K0`` and the pilot runs."""

    convergence: ConvergenceFit
    accuracy: AccuracyFit
    K0: float
    pilots: list = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        conv = self.convergence
        return {"convergence": {"a": conv.a, "b": conv.b, "c": conv.c, "rmse": conv.rmse,
                                "r2": conv.r2, "n": conv.n},
                "accuracy": {"map": self.accuracy.map, **self.accuracy.params,
                             "rmse": self.accuracy.rmse, "r2": self.accuracy.r2,
                             "n": self.accuracy.n},
                "K0": self.K0}

    def apply(self, problem):
        """A copy of ``problem`` with the fitted constants, started at ``K = ebar = K0``."""
        data = problem.to_dict()
        data["convergence"] = {"model": "fitted", "a": self.convergence.a,
                               "b": self.convergence.b, "c": self.convergence.c}
        data["accuracy"] = {"map": self.accuracy.map, **self.accuracy.params}
        data["state"] = {**data["state"], "K": self.K0, "ebar": None}
        data["state"] = {k: v for k, v in data["state"].items() if v is not None}
        return type(problem).from_dict(data)


def conv_path(fit: ConvergenceFit, K0: float, V) -> np.ndarray:
    """``K_0 .. K_T`` of the fitted recursion run open loop from ``K0`` with spreads ``V``."""
    out = [float(K0)]
    for v in np.asarray(V, dtype=float):
        out.append(fit.a * out[-1] + fit.b * v + fit.c)
    return np.asarray(out)


class _UniformParticipation:
    """Pilot policy: ``q_n ~ U[q_min_n, 1]`` afresh every round, ``d = 1``, ``mu = mu_max``."""

    name = "pilot_uniform"
    backlog = 0.0

    def __init__(self, seed: int):
        self.seed = seed

    def reset(self, problem):
        self.problem = problem
        self.rng = np.random.default_rng(self.seed)

    def decide(self, obs):
        from jointopt.solvers.jti import Allocation

        c = self.problem.clients
        q = self.rng.uniform(c.q_min, 1.0)
        return Allocation(q, np.ones(c.count), c.mu_max.copy())


def calibrate(harness, *, rounds: int, seed: int = 0,
              pilots=(1.0, 0.5, 0.2, "uniform"), accuracy_on: str = "predicted",
              progress: bool = False) -> Calibration:
    """Pilot runs (seeds ``seed*1000 + 1 + i``), then the fits.

    A number in ``pilots`` is a constant participation level for every client (clipped to
    ``[q_min, 1]``); ``"uniform"`` draws each client's ``q`` uniformly in ``[q_min, 1]``
    every round, so the fit sees the spread of per-client levels a policy may choose.
    Downloads and service are at their maximum (serving plays no part in the fit).
    ``accuracy_on``: which error the accuracy map is fitted against (module docstring). ``K0``
    is the loss of run seed ``seed``'s initial model (the validated runs' start).
    """
    from jointopt.policies import Fixed
    from jointopt.solvers.jti import Allocation

    problem = harness.problem
    c = problem.clients
    runs = []
    for i, level in enumerate(pilots):
        run_seed = seed * 1000 + 1 + i
        if level == "uniform":
            policy = _UniformParticipation(run_seed)
        else:
            q = np.clip(np.full(c.count, float(level)), c.q_min, 1.0)
            policy = Fixed(Allocation(q, np.ones(c.count), c.mu_max.copy()),
                           name=f"pilot_q{level:g}")
        runs.append(harness.run(policy, rounds=rounds, seed=run_seed, progress=progress))
    conv = fit_convergence([(r.K, r.V) for r in runs])
    if accuracy_on == "predicted":
        errors = [conv_path(conv, r.K[0], r.V) for r in runs]
    elif accuracy_on == "measured":
        errors = [r.K for r in runs]
    else:
        raise ValueError(f"accuracy_on must be 'predicted' or 'measured', got {accuracy_on!r}")
    acc = fit_accuracy(np.concatenate(errors),
                       np.concatenate([r.version_accuracy for r in runs]),
                       problem.accuracy.map)
    model = harness.build_model(seed)
    K0, _, _ = harness.measure(model, model.flat())
    return Calibration(conv, acc, K0, runs)
