"""Accuracy maps: inference accuracy of a model copy from its convergence-error proxy.

Provenance: **project choice**. The paper uses the convergence error as a proxy
of inference performance; the map from error to accuracy is ours, calibrated by the
validation harness. The default is affine and clipped; an exponential and a logistic map are
offered as swappable alternatives (the logistic one follows a classifier's accuracy against
its loss from the untrained model on; a scenario's ``accuracy.calibrate`` may ask the
validation harness to fit it). The
per-round solver uses a map through :meth:`linearize`, which is exact for the affine map
inside its clip range.

Aggregation noise (project extension, :func:`aggregation_deficit`, off unless a scenario sets
``accuracy.aggregation_noise``): a version aggregated from few clients is less accurate than
its loss says. In real training on the digits, at equal training loss, the model of a round
where every client took part is 0.18-0.23 more accurate at rounds 3-5 than one aggregated at
participation 0.2 (``benchmarks/explore_loss_accuracy.py``), and the deficit goes within one
or two rounds once participation rises: it belongs to the round that aggregated the version,
not to its history. The surrogate reads a served version at error ``e + beta K_t sqrt(V_t)``,
``K_t`` the error that round started from and ``V_t`` its sampled aggregation spread
``sum_n p_n^2 (B_n / q_n - 1)^2`` (``sqrt``: the spread of the aggregate in standard-deviation
units; fitted offline to 16 seeds of runs at participation 1, 0.5 and 0.2, ``beta`` came out
alike on the ``analytic`` and ``default`` scenarios with ``sqrt``, 0.44 and 0.48, and a
factor 1.6 apart with ``V_t`` itself). The per-round solver plans with the deficit's tangent
in the expected spread (:func:`deficit_slope`), which adds up over clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from jointopt.models.checks import check_range
from jointopt.models.errors import ValidationError


class AccuracyMap(Protocol):
    """A decreasing map from error proxy ``e >= 0`` to accuracy in ``[acc_min, acc_max]``."""

    acc_max: float
    acc_min: float

    def __call__(self, e) -> np.ndarray: ...

    def linearize(self, e0: float) -> tuple[float, float]:
        """``(intercept, slope)`` with ``acc(e) ~ intercept - slope * e`` near ``e0``."""
        ...

    def error_of(self, acc) -> np.ndarray:
        """The error proxy the unclipped map takes to accuracy ``acc`` (its inverse)."""
        ...


def aggregation_deficit(beta: float, K, spread):
    """Error a version adds to its loss as it serves, from the round that aggregated it:
    ``beta K sqrt(spread)`` (module docstring); 0 when ``beta`` is 0 or every client took
    part."""
    return beta * np.asarray(K, dtype=float) * np.sqrt(np.asarray(spread, dtype=float))


def deficit_slope(beta: float, spread: float) -> float:
    """Slope of the deficit's tangent in the spread, per unit of ``K``: ``beta / (2
    sqrt(spread))``, so that ``beta K sqrt(S) <= beta K (sqrt(spread) + slope (S - spread))``
    with equality at ``S = spread`` (``sqrt`` is concave). A planner reads the deficit through
    it as a spread that adds up over clients. 0 when ``beta`` or ``spread`` is 0 (every client
    takes part: the deficit is already gone and has no finite slope)."""
    if beta < 0 or spread < 0:
        raise ValueError(f"beta and spread must be >= 0, got {beta} and {spread}")
    return 0.0 if beta == 0 or spread == 0 else beta / (2.0 * float(np.sqrt(spread)))


def _check_levels(acc_max: float, acc_min: float) -> None:
    check_range("accuracy.acc_max", acc_max, gt=0.0, le=1.0)
    check_range("accuracy.acc_min", acc_min, ge=0.0)
    if acc_min >= acc_max:
        raise ValidationError("accuracy.acc_min",
                              f"must be < acc_max ({acc_max:g}), got {acc_min:g}")


@dataclass(frozen=True)
class AffineAccuracy:
    """``acc(e) = clip(acc_max - kappa * e, acc_min, acc_max)`` (default map)."""

    acc_max: float = 0.95
    kappa: float = 0.3
    acc_min: float = 0.0

    def __post_init__(self):
        _check_levels(self.acc_max, self.acc_min)
        check_range("accuracy.kappa", self.kappa, gt=0.0)

    def __call__(self, e) -> np.ndarray:
        return np.clip(self.acc_max - self.kappa * np.asarray(e, dtype=float),
                       self.acc_min, self.acc_max)

    def linearize(self, e0: float) -> tuple[float, float]:
        return self.acc_max, self.kappa

    def error_of(self, acc) -> np.ndarray:
        return (self.acc_max - np.asarray(acc, dtype=float)) / self.kappa


@dataclass(frozen=True)
class ExponentialAccuracy:
    """``acc(e) = acc_min + (acc_max - acc_min) exp(-e / scale)``."""

    acc_max: float = 0.95
    scale: float = 1.0
    acc_min: float = 0.0

    def __post_init__(self):
        _check_levels(self.acc_max, self.acc_min)
        check_range("accuracy.scale", self.scale, gt=0.0)

    def __call__(self, e) -> np.ndarray:
        e = np.asarray(e, dtype=float)
        return self.acc_min + (self.acc_max - self.acc_min) * np.exp(-e / self.scale)

    def linearize(self, e0: float) -> tuple[float, float]:
        slope = (self.acc_max - self.acc_min) / self.scale * float(np.exp(-e0 / self.scale))
        return float(self(e0)) + slope * e0, slope

    def error_of(self, acc) -> np.ndarray:
        """Accuracies at or beyond the map's range are taken 1e-6 inside it."""
        span = self.acc_max - self.acc_min
        frac = np.clip((np.asarray(acc, dtype=float) - self.acc_min) / span, 1e-6, 1.0)
        return -self.scale * np.log(frac)


@dataclass(frozen=True)
class LogisticAccuracy:
    """``acc(e) = acc_min + (acc_max - acc_min) / (1 + exp((e - midpoint) / width))``.

    An S-shaped map: flat near ``acc_min`` for a model that has not learnt (large error),
    steepest at ``midpoint``, flat again towards ``acc_max`` for a converged one. It is
    what a classifier's accuracy does against its loss from the untrained model on, which
    neither the affine nor the exponential map can follow over a whole training run.
    """

    acc_max: float = 0.95
    midpoint: float = 1.0
    width: float = 0.3
    acc_min: float = 0.0

    def __post_init__(self):
        _check_levels(self.acc_max, self.acc_min)
        check_range("accuracy.midpoint", self.midpoint)
        check_range("accuracy.width", self.width, gt=0.0)

    def _share(self, e) -> np.ndarray:
        z = (np.asarray(e, dtype=float) - self.midpoint) / self.width
        return 0.5 * (1.0 - np.tanh(0.5 * z))          # 1 / (1 + exp(z)), overflow-free

    def __call__(self, e) -> np.ndarray:
        return self.acc_min + (self.acc_max - self.acc_min) * self._share(e)

    def linearize(self, e0: float) -> tuple[float, float]:
        s = float(self._share(e0))
        slope = (self.acc_max - self.acc_min) * s * (1.0 - s) / self.width
        return float(self(e0)) + slope * e0, slope

    def error_of(self, acc) -> np.ndarray:
        """Accuracies at or beyond the map's range are taken 1e-6 inside it."""
        span = self.acc_max - self.acc_min
        frac = np.clip((np.asarray(acc, dtype=float) - self.acc_min) / span, 1e-6, 1 - 1e-6)
        return self.midpoint + self.width * np.log(1.0 / frac - 1.0)


ACCURACY_MAPS = {"affine": AffineAccuracy, "exponential": ExponentialAccuracy,
                 "logistic": LogisticAccuracy}
