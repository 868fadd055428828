"""The errors jointopt raises on purpose (defined in ``jointopt.models.errors``)."""

from jointopt.models.errors import InfeasibleError, JointoptError, SolverError, ValidationError

__all__ = ["InfeasibleError", "JointoptError", "SolverError", "ValidationError"]
