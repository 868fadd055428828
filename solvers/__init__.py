"""Formulations and algorithms of jointopt. Imports ``jointopt.models`` only.

Installed as ``jointopt.solvers``.
"""

from jointopt.solvers.base import ProblemBase, SolveResult
from jointopt.solvers.cis import CooperativeInferenceProblem
from jointopt.solvers.hfl.problem import HFLProblem
from jointopt.solvers.jti import JointTrainingInferenceProblem, RoundSolver, RoundState
from jointopt.solvers.planner.problem import DeploymentPlanProblem
from jointopt.solvers.split import SplitProblem
from jointopt.solvers.system import EdgeSystemProblem

PROBLEM_KINDS = {cls.kind: cls for cls in (
    JointTrainingInferenceProblem, HFLProblem, CooperativeInferenceProblem, SplitProblem,
    DeploymentPlanProblem, EdgeSystemProblem)}

__all__ = ["PROBLEM_KINDS", "CooperativeInferenceProblem", "DeploymentPlanProblem",
           "EdgeSystemProblem", "HFLProblem", "JointTrainingInferenceProblem", "ProblemBase",
           "RoundSolver", "RoundState", "SolveResult", "SplitProblem"]
