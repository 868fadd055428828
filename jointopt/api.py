"""The Python entry points: load a scenario, solve it."""

from __future__ import annotations

from pathlib import Path

from jointopt import scenarios
from jointopt.solvers import ProblemBase, SolveResult
from jointopt.solvers.jti import JointTrainingInferenceProblem, RoundState, solve_round


def load_scenario(source: str | Path) -> ProblemBase:
    """A validated problem from a built-in scenario name or a TOML/YAML file path."""
    return scenarios.load(source)


def solve(problem: str | Path | ProblemBase = "default", *, method: str = "fast",
          solver: str | None = None, state: RoundState | None = None) -> SolveResult:
    """Solve a problem (object, built-in name or scenario path) and return a result.

    For a joint training-inference problem this is one round of the drift-plus-penalty
    allocation at the scenario's state (or ``state``): ``method="fast"`` (closed forms,
    default) or ``"cvxpy"`` (DPP block problems; ``solver`` picks the conic solver).
    """
    problem = scenarios.load(problem)
    if isinstance(problem, JointTrainingInferenceProblem):
        return solve_round(problem, state, method=method, solver=solver)
    raise TypeError(f"no solver for problem kind {problem.kind!r}")
