"""jointopt: joint training-inference resource allocation for federated and edge learning.

    >>> import jointopt
    >>> result = jointopt.solve("default")
    >>> result.decisions["q"]   # participation probability per client
"""

from jointopt.api import load_scenario, solve
from jointopt.errors import InfeasibleError, JointoptError, SolverError, ValidationError
from jointopt.scenarios import builtin_names, dump
from jointopt.solvers import JointTrainingInferenceProblem, RoundSolver, RoundState, SolveResult

__version__ = "0.1.0"

__all__ = [
    "InfeasibleError", "JointTrainingInferenceProblem", "JointoptError", "RoundSolver",
    "RoundState", "SolveResult", "SolverError", "ValidationError", "builtin_names", "dump",
    "load_scenario", "solve",
]
