"""Split learning (SplitGP) inference planning: split layer and offload thresholds under
latency budgets with a shared server queue (``docs/kinds/split_learning.md``)."""

from jointopt.solvers.split.optimize import inner_greedy, inner_lp, solve_split
from jointopt.solvers.split.per_client import solve_per_client
from jointopt.solvers.split.problem import SplitProblem, curves_from_records

__all__ = ["SplitProblem", "curves_from_records", "inner_greedy", "inner_lp", "solve_per_client",
           "solve_split"]
