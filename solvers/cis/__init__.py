"""Cooperative inference with early exits (``docs/kinds/cis_early_exit.md``): exit-weight rules,
the convex weight program, the block-wise aggregation and the problem value."""

from jointopt.solvers.cis.convex import (
    ConvexWeightProgram,
    ConvexWeights,
    bound,
    bound_terms,
    convex_weights,
    solve_slsqp,
)
from jointopt.solvers.cis.problem import (
    AUGMENTED_POOL,
    DIGITS_POOL,
    CooperativeInferenceProblem,
    scenario_grid,
)
from jointopt.solvers.cis.weights import (
    AUTHORS_RULE_IDS,
    SPEC_RULE_NAMES,
    aggregate,
    aggregate_stacked,
    balanced_weights,
    equal_weights,
    flops_weights,
    gen_weights,
    inverse_sqrt_variance_weights,
    inverse_variance_weights,
    node_coefficients,
    serving_rate_weights,
)

__all__ = [
    "AUGMENTED_POOL", "AUTHORS_RULE_IDS", "DIGITS_POOL", "SPEC_RULE_NAMES",
    "ConvexWeightProgram", "ConvexWeights", "CooperativeInferenceProblem", "aggregate",
    "aggregate_stacked", "balanced_weights", "bound", "bound_terms", "convex_weights",
    "equal_weights", "flops_weights", "gen_weights", "inverse_sqrt_variance_weights",
    "inverse_variance_weights", "node_coefficients", "scenario_grid", "serving_rate_weights",
    "solve_slsqp",
]
