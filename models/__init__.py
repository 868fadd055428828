"""Analytical models of jointopt: pure numpy/scipy functions and small value types.

Imports nothing else of the project. Installed as ``jointopt.models``.
"""

from jointopt.models.accuracy import (
    ACCURACY_MAPS,
    AffineAccuracy,
    ExponentialAccuracy,
    LogisticAccuracy,
)
from jointopt.models.convergence import ConvergenceModel, participation_variance
from jointopt.models.errors import InfeasibleError, JointoptError, SolverError, ValidationError

__all__ = [
    "ACCURACY_MAPS", "AffineAccuracy", "ExponentialAccuracy", "LogisticAccuracy",
    "ConvergenceModel",
    "participation_variance", "InfeasibleError", "JointoptError", "SolverError",
    "ValidationError",
]
