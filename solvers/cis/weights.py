"""Exit-weight rules and the block-wise aggregation of CIS early-exit training.

Documented in ``docs/kinds/cis_early_exit.md``. Every rule returns a non-negative float64 vector
``w`` of length E on the simplex (exit e at position e - 1). Rule names of this module
(left) and the authors' ``--lambda-tilde-strategy`` ids [authors' code]:

=========================  ====  ==============================================
rule                       id    weight of exit e proportional to
=========================  ====  ==============================================
``serving_rate``           0     lambda_e (the inference-aware target)
``equal``                  1     1
``flops``                  2     min(tau_t, gamma_e), tau_t = min(1, (t+1) step)
``inverse_variance``       15    1 / V_e
``inverse_sqrt_variance``  16    1 / sqrt(V_e)
``balanced``               11    (lambda_e + inverse_variance_e) / 2
``gen``                    4     sqrt(M_e / C_e)
``convex``                 --    the bound program of :mod:`.convex`
=========================  ====  ==============================================

Provenance: every closed-form rule follows the authors' code; the flops step ``1/T``
(the authors hard-wired 0.01, i.e. T = 100) and the convex rule are project choices.

The aggregation (:func:`aggregate`) is framework-agnostic: parameter blocks may be numpy
arrays or torch tensors (only ``+``, ``-``, ``*`` by Python floats and ``clone``/``copy``
are used), so the torch harness calls the same function as the numpy surrogate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from jointopt.models.checks import as_vector, check_range
from jointopt.models.errors import ValidationError

#: The authors' ``--lambda-tilde-strategy`` id of each closed-form rule [authors' code].
AUTHORS_RULE_IDS = {"serving_rate": 0, "equal": 1, "flops": 2, "gen": 4, "balanced": 11,
                    "inverse_variance": 15, "inverse_sqrt_variance": 16}
#: Short rule names (as in the source's experiment scripts) -> this module's.
SPEC_RULE_NAMES = {"serving_rate": "serving_rate", "equal": "equal", "flops_prop": "flops",
                   "inv_var": "inverse_variance", "inv_sqrt_var": "inverse_sqrt_variance",
                   "balanced": "balanced", "gen": "gen", "convex": "convex"}


def _simplex(field: str, raw: np.ndarray) -> np.ndarray:
    raw = np.asarray(raw, dtype=float)
    check_range(field, raw, ge=0.0)
    total = raw.sum()
    if not total > 0:
        raise ValidationError(field, "are all zero: no exit gets any weight")
    out = raw / total
    return out


# -- closed-form rules ---------------------------------------------------------------------
def serving_rate_weights(exit_rates) -> np.ndarray:
    """``lambda_e = Lambda_e / sum Lambda`` [authors' code; the paper's inference-aware
    rule]. Invariant to rescaling every rate."""
    return _simplex("exit_rates", as_vector("exit_rates", exit_rates))


def equal_weights(n_exits: int) -> np.ndarray:
    """``1 / E`` each [authors' code; baseline]."""
    check_range("n_exits", n_exits, ge=1)
    return np.full(int(n_exits), 1.0 / int(n_exits))


def flops_weights(costs, t: int, rounds: int | None = None, step: float | None = None
                  ) -> np.ndarray:
    """FLOPs-proportional schedule ``min(tau_t, gamma_e)``, ``gamma_e = C_e / C_E``,
    ``tau_t = min(1, (t + 1) step)`` [authors' code]. The authors hard-wired
    ``step = 0.01`` (i.e. T = 100); default here ``step = 1 / rounds`` [project choice], so
    the last round ``t = rounds - 1`` is proportional to gamma. Equal weights while
    ``tau_t <= min gamma``; the deepest exit's weight never decreases in t."""
    c = as_vector("flops", costs)
    check_range("flops", c, gt=0.0)
    if step is None:
        if rounds is None:
            raise ValidationError("rounds", "or step is required for the flops schedule")
        check_range("rounds", rounds, ge=1)
        step = 1.0 / rounds
    check_range("step", step, gt=0.0)
    check_range("t", t, ge=0)
    gamma = c / c[-1]
    tau = min(1.0, (t + 1) * step)
    return _simplex("flops", np.minimum(tau, gamma))


def inverse_variance_weights(variance) -> np.ndarray:
    """``1 / V_e`` normalised [authors' code]: the minimiser of ``sum w_e^2 V_e`` on the
    simplex. An exit with ``V_e = inf`` (nobody can train it) gets weight 0."""
    v = as_vector("variance", variance)
    check_range("variance", v, gt=0.0, finite=False)
    return _simplex("variance", 1.0 / v)


def inverse_sqrt_variance_weights(variance) -> np.ndarray:
    """``1 / sqrt(V_e)`` normalised [authors' code; optional]."""
    v = as_vector("variance", variance)
    check_range("variance", v, gt=0.0, finite=False)
    return _simplex("variance", 1.0 / np.sqrt(v))


def balanced_weights(exit_rates, variance) -> np.ndarray:
    """``(lambda + inverse_variance) / 2``, both normalised first [authors' code]: halfway
    between zero bias and least variance."""
    return 0.5 * (serving_rate_weights(exit_rates) + inverse_variance_weights(variance))


def gen_weights(data_mass, costs) -> np.ndarray:
    """``sqrt(M_e / C_e)`` normalised [authors' code; unused by their scripts]."""
    m = as_vector("data_mass", data_mass)
    c = as_vector("flops", costs, m.size)
    check_range("data_mass", m, ge=0.0)
    check_range("flops", c, gt=0.0)
    return _simplex("data_mass", np.sqrt(m / c))


# -- aggregation ----------------------------------------------------------------------------
Weighting = Literal["unbiased", "authors"]


def node_coefficients(assignment, weights, q, p, weighting: Weighting = "unbiased"
                      ) -> np.ndarray:
    """Per-node multiplier ``lambda~_{e_n} c_{n,e_n}`` of its update in :func:`aggregate`
    (0 for a node that trained nothing, ``e_n = 0``).

    ``weighting="unbiased"`` (default) [project choice]: ``c = q / p``, so the expectation
    over the random assignment is the full-participation update. ``"authors"``
    [authors' code]: ``c = q p``, biased (expected weight ``q p^2``) whenever some ``p < 1``;
    the two agree when ``pi = 0`` and ``nu = 1``."""
    a = np.asarray(assignment)
    q = np.asarray(q, dtype=float)
    p = np.asarray(p, dtype=float)
    w = np.asarray(weights, dtype=float)
    n, e = q.shape
    if a.shape != (n,) or p.shape != (n, e) or w.shape != (e,):
        raise ValidationError("assignment", f"shapes disagree: assignment {a.shape}, weights "
                                            f"{w.shape}, q {q.shape}, p {p.shape}")
    if ((a < 0) | (a > e)).any():
        i = int(np.flatnonzero((a < 0) | (a > e))[0])
        raise ValidationError(f"assignment[{i}]", f"must be an exit in 0..{e}, got {a[i]}")
    active = a > 0
    col = np.where(active, a - 1, 0)
    rows = np.arange(n)
    qa, pa = q[rows, col], p[rows, col]
    if (active & (pa <= 0)).any():
        i = int(np.flatnonzero(active & (pa <= 0))[0])
        raise ValidationError(f"assignment[{i}]", f"node {i} trained exit {a[i]}, which it "
                                                  "trains with probability 0")
    if weighting == "unbiased":
        c = qa / np.where(pa > 0, pa, 1.0)
    elif weighting == "authors":
        c = qa * pa
    else:
        raise ValidationError("weighting", f"must be 'unbiased' or 'authors', got {weighting!r}")
    return np.where(active, w[col] * c, 0.0)


def _exit_mask(key: str, exits, n_exits: int) -> np.ndarray:
    """Boolean mask over 0..E (slot 0: "did not train") of the exits using group ``key``."""
    ids = np.fromiter((int(e) for e in exits), dtype=int)
    bad = (ids < 1) | (ids > n_exits)
    if bad.any():
        raise ValidationError(f"groups.{key}", f"must list exits in 1..{n_exits}, "
                                               f"got {int(ids[bad][0])}")
    mask = np.zeros(n_exits + 1, dtype=bool)
    mask[ids] = True
    return mask


def _copy(x):
    clone = getattr(x, "clone", None)
    return clone() if callable(clone) else x.copy()


def aggregate(global_params: Mapping[str, Any], local_params: Sequence[Mapping[str, Any] | None],
              assignment, weights, q, p, groups: Mapping[str, Any], *,
              weighting: Weighting = "unbiased", block_normalize: bool = False,
              server_lr: float = 1.0) -> dict[str, Any]:
    """One block-wise server update [intended rule: project choice; structure: authors'
    code]. For every parameter key (group) ``g`` with exit set ``X(g)``::

        Delta_g = sum_{e in X(g)} w_e sum_{n : e_n = e} c_{n,e} (w_{n,g} - w_g)
        new_g   = w_g + server_lr * Delta_g          (/ sum_{e in X(g)} w_e if block_normalize)

    Arguments:

    - ``global_params``: the server's own copy ``w^t`` (key -> array or tensor). It is never
      modified and never aliased to a node's model (fixes the authors' defect 1).
    - ``local_params[n]``: node n's parameters after local training (only keys of groups it
      trained are read; ``None`` for a node with ``assignment[n] == 0``).
    - ``assignment[n]``: the exit node n trained (1..E), 0 when it did not take part.
    - ``weights``: the exit weights ``lambda~`` (length E); ``q``, ``p``: the (N, E) data
      weights and participation probabilities (:func:`jointopt.models.cis.data_weights`,
      :func:`jointopt.models.cis.participation_probabilities`).
    - ``groups[g]``: the exits using group g (1-based, e.g. from
      :func:`jointopt.models.cis.exit_sets`); every key of ``global_params`` must appear.
      Heads are matched by name, so exit e's head gets exactly exit e's update (fixes the
      authors' defect 2); ``weighting="unbiased"`` divides by p (fixes defect 3).

    Groups without any contribution (no trainer this round, or zero weight on all their
    exits) come back as exact copies: bitwise unchanged. The result order over nodes does
    not matter up to float rounding. Returns a new dict; the inputs are left untouched.
    """
    coef = node_coefficients(assignment, weights, q, p, weighting)
    a = np.asarray(assignment)
    w = np.asarray(weights, dtype=float)
    if len(local_params) != a.size:
        raise ValidationError("local_params", f"must have one entry per node ({a.size}), "
                                              f"got {len(local_params)}")
    missing = [k for k in global_params if k not in groups]
    if missing:
        raise ValidationError(f"groups.{missing[0]}", "is missing: every parameter key needs "
                                                      "its exit set X(g)")
    check_range("server_lr", server_lr, gt=0.0)
    out: dict[str, Any] = {}
    for key, w_g in global_params.items():
        exits_g = _exit_mask(key, groups[key], w.size)
        scale = server_lr
        if block_normalize:
            total = float(w[exits_g[1:]].sum())
            scale = server_lr / total if total > 0 else 0.0
        delta = None
        for n in np.flatnonzero(exits_g[a] & (coef != 0)):
            local = local_params[n]
            if local is None or key not in local:
                raise ValidationError(f"local_params[{n}].{key}",
                                      f"is missing although node {n} trained exit {a[n]}")
            term = (local[key] - w_g) * float(coef[n] * scale)
            delta = term if delta is None else delta + term
        out[key] = _copy(w_g) if delta is None or scale == 0.0 else w_g + delta
    return out


def aggregate_stacked(global_params: Mapping[str, np.ndarray],
                      local_params: Mapping[str, np.ndarray], assignment, weights, q, p,
                      groups: Mapping[str, Any], *, weighting: Weighting = "unbiased",
                      block_normalize: bool = False, server_lr: float = 1.0
                      ) -> dict[str, np.ndarray]:
    """:func:`aggregate` for numpy parameters stacked over nodes: ``local_params[g]`` has
    shape ``(N, *global_params[g].shape)`` (rows of nodes that did not train g are
    ignored). Vectorised over nodes; the numpy surrogate's path."""
    coef = node_coefficients(assignment, weights, q, p, weighting)
    a = np.asarray(assignment)
    w = np.asarray(weights, dtype=float)
    check_range("server_lr", server_lr, gt=0.0)
    out = {}
    for key, w_g in global_params.items():
        if key not in groups:
            raise ValidationError(f"groups.{key}", "is missing: every parameter key needs "
                                                   "its exit set X(g)")
        exits_g = _exit_mask(key, groups[key], w.size)
        c = np.where(exits_g[a], coef, 0.0) * server_lr
        if block_normalize:
            total = float(w[exits_g[1:]].sum())
            c = c / total if total > 0 else c * 0.0
        rows = np.flatnonzero(c != 0)
        w_g = np.asarray(w_g)
        if rows.size == 0:
            out[key] = w_g.copy()
            continue
        diff = np.asarray(local_params[key])[rows] - w_g
        out[key] = w_g + np.tensordot(c[rows], diff, axes=1)
    return out


__all__ = [
    "AUTHORS_RULE_IDS", "SPEC_RULE_NAMES", "aggregate", "aggregate_stacked", "balanced_weights",
    "equal_weights", "flops_weights", "gen_weights", "inverse_sqrt_variance_weights",
    "inverse_variance_weights", "node_coefficients", "serving_rate_weights",
]
