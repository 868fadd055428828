"""Deployment planner: is cross-device FL worth it, and what will it cost?

Documented in ``docs/kinds/deployment_plan.md``. Modules: :mod:`.problem` (the validated scenario),
:mod:`.estimate` (the estimates, orchestrating :mod:`jointopt.models.planner`, the
convergence model and the joint allocator), :mod:`.gates` (gates, verdict, levers),
:mod:`.whatif` (grids, Pareto front, tornado) and :mod:`.des` (the SimPy validation model).
"""

from jointopt.solvers.planner.problem import (
    BudgetInfeasibleError,
    DeploymentPlanProblem,
    PlannerInputError,
)

__all__ = ["BudgetInfeasibleError", "DeploymentPlanProblem", "PlannerInputError"]
