"""Error types shared by every layer of jointopt.

They live in ``jointopt.models`` (the bottom layer) so that models, solvers and the
public package raise the same classes; ``jointopt.errors`` re-exports them.
"""

from __future__ import annotations


class JointoptError(Exception):
    """Base class of every error jointopt raises on purpose."""


class ValidationError(JointoptError, ValueError):
    """Bad input. ``field`` is the dotted path of the culprit, e.g. ``clients[3].arrival_rate``."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field} {message}" if field else message)

    def __reduce__(self):  # picklable: errors cross process and Dask worker boundaries
        return (type(self), (self.field, self.message))


class InfeasibleError(JointoptError):
    """The constraints cannot all hold.

    ``constraint`` names the constraint family, ``field`` the culprit when one can be
    named, ``shortfall`` by how much the family is violated when it can be computed.
    """

    def __init__(self, constraint: str, message: str, *, field: str = "",
                 shortfall: float | None = None):
        self.constraint = constraint
        self.field = field
        self.shortfall = shortfall
        self.message = message
        super().__init__(message)

    def __reduce__(self):
        return (_rebuild_infeasible, (self.constraint, self.message, self.field, self.shortfall))


def _rebuild_infeasible(constraint, message, field, shortfall):
    return InfeasibleError(constraint, message, field=field, shortfall=shortfall)


class SolverError(JointoptError):
    """A numerical solver failed and no fallback was left."""
