"""One edge system, one plan: placement (hfl), serving (split_learning / cis_early_exit) and
allocation (joint_training_inference) joined by a block-coordinate loop."""

from jointopt.solvers.system.problem import EdgeSystemProblem

__all__ = ["EdgeSystemProblem"]
