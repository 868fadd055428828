"""Joint training-inference allocation (age of model): problem and per-round solvers."""

from jointopt.solvers.jti.problem import JointTrainingInferenceProblem
from jointopt.solvers.jti.round import Allocation, RoundSolver, RoundState, solve_round

__all__ = ["JointTrainingInferenceProblem", "Allocation", "RoundSolver", "RoundState",
           "solve_round"]
