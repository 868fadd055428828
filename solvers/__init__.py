"""Formulations and algorithms of jointopt. Imports ``jointopt.models`` only.

Installed as ``jointopt.solvers``.
"""

from jointopt.solvers.base import ProblemBase, SolveResult
from jointopt.solvers.jti import JointTrainingInferenceProblem, RoundSolver, RoundState

PROBLEM_KINDS = {JointTrainingInferenceProblem.kind: JointTrainingInferenceProblem}

__all__ = ["PROBLEM_KINDS", "ProblemBase", "SolveResult", "JointTrainingInferenceProblem",
           "RoundSolver", "RoundState"]
