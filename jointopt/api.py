"""The Python entry points: load a scenario, solve it."""

from __future__ import annotations

from pathlib import Path

from jointopt import scenarios
from jointopt.solvers import ProblemBase, SolveResult


def load_scenario(source: str | Path) -> ProblemBase:
    """A validated problem from a built-in scenario name or a TOML/YAML file path."""
    return scenarios.load(source)


def solve(problem: str | Path | ProblemBase = "default", *, method: str | None = None,
          **options) -> SolveResult:
    """Solve a problem (object, built-in name or scenario path) and return a result.

    ``method`` is one of the problem kind's ``methods`` (the first is the default);
    ``options`` go to that kind's ``solve``. For a joint training-inference problem this
    is one drift-plus-penalty round at the scenario's state (or ``state=``):
    ``method="fast"`` (closed forms, default) or ``"cvxpy"`` (DPP block problems;
    ``solver=`` picks the conic solver). A ``solver`` for a method that takes none
    (the kind's ``solver_methods``) raises ``ValidationError`` rather than being ignored.
    """
    problem = scenarios.load(problem)
    problem.check_solver(method, options.get("solver"))
    return problem.solve(method=method, **options)
