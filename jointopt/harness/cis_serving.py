"""Confidence-ordered serving of a trained early-exit model on a node tree: system accuracy.

Documented in ``docs/kinds/cis_early_exit.md``. Numpy only (no torch), so the torch harness
(:mod:`jointopt.harness.early_exit`) and the numpy surrogate
(:mod:`jointopt.harness.cis_surrogate`) score their models with the same code.

Nodes are processed children first (post-order) [authors' code]. At node ``n``:

1. ``mu_n(x)``: the request mass of test point ``x`` that ``n`` receives: ``a_n / |X_n|`` on
   its own test points ``X_n`` plus the mass its children forwarded;
2. ``u_n(x)``: uncertainty at exit ``k(n)``: softmax entropy divided by ``log C``
   [authors' code] (option ``1 - max probability``); points with ``mu_n(x) > 0`` are sorted by
   ``u`` ascending, ties broken by index (stable sort; fixes the authors' defect 6);
3. the prefix is served until the served mass reaches ``s_n``; the boundary point is split
   exactly: the part that completes ``s_n`` is served, the rest forwarded (fixes defect 5).
   When ``r_n < s_n + 1e-12`` (the root, or rounding) everything is served;
4. ``mu_n - sigma_n`` is forwarded to the parent.

Scores::

    Acc_n   = sum_x sigma_n(x) 1[yhat_k(n)(x) = y(x)] / sum_x sigma_n(x)      [authors' code]
    Acc_CIS = sum_n sum_x sigma_n(x) 1[yhat_k(n)(x) = y(x)] / sum_n a_n       [project choice]

The evaluation is offline and deterministic given the model's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import log_softmax

from jointopt.models.cis import ServingTree
from jointopt.models.errors import ValidationError


def uncertainty(logits: np.ndarray, kind: str = "entropy") -> np.ndarray:
    """Per-sample uncertainty of ``logits`` (..., C): normalised softmax entropy in [0, 1]
    (``p log p`` from ``log_softmax``, taken as 0 where ``p = 0``: never NaN), or
    ``1 - max p`` (``kind="max_prob"``)."""
    logits = np.asarray(logits, dtype=np.float64)
    logp = log_softmax(logits, axis=-1)
    p = np.exp(logp)
    if kind == "entropy":
        n_classes = logits.shape[-1]
        plogp = np.where(p > 0, p * np.where(p > 0, logp, 0.0), 0.0)
        return np.clip(-plogp.sum(axis=-1) / np.log(n_classes), 0.0, 1.0)
    if kind == "max_prob":
        return 1.0 - p.max(axis=-1)
    raise ValidationError("uncertainty", f"must be 'entropy' or 'max_prob', got {kind!r}")


def device_demand(tree: ServingTree, n_points: int,
                  test_points: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """``(N, X)`` exogenous request mass: node n spreads ``a_n`` evenly over its test points
    (``test_points[n]``, default: the full test set) [authors' code; slices: project choice]."""
    demand = np.zeros((tree.n_nodes, n_points))
    for n in np.flatnonzero(tree.arrival > 0):
        pts = np.arange(n_points) if test_points is None or n not in test_points \
            else np.asarray(test_points[n], dtype=int)
        if pts.size == 0:
            raise ValidationError(f"test_points[{n}]", "is empty although the node receives "
                                                       "requests")
        np.add.at(demand[n], pts, tree.arrival[n] / pts.size)
    return demand


@dataclass(frozen=True)
class ServingOutcome:
    """What the serving schedule did: ``served[n, x]`` (``sigma_n(x)``), ``received[n, x]``
    (``mu_n(x)``), the accuracies and the exit rates recomputed from the served masses."""

    served: np.ndarray = field(repr=False)
    received: np.ndarray = field(repr=False)
    system_accuracy: float
    node_accuracy: np.ndarray          # Acc_n, NaN where a node serves nothing
    tier_accuracy: np.ndarray          # served accuracy per exit (length E), NaN if unused
    exit_accuracy: np.ndarray          # plain full-test accuracy of each exit
    exit_rates: np.ndarray             # Lambda_e recomputed from the served masses

    def summary(self) -> dict:
        """Scores by name; a tier that served nothing has no accuracy (``None``, not NaN)."""
        out = {"acc_cis": self.system_accuracy}
        for e, (tier, plain) in enumerate(zip(self.tier_accuracy, self.exit_accuracy,
                                              strict=True), start=1):
            out[f"acc_tier{e}"] = float(tier) if np.isfinite(tier) else None
            out[f"acc_exit{e}"] = float(plain)
        return out


def serve(tree: ServingTree, demand: np.ndarray, uncert: np.ndarray,
          correct: np.ndarray) -> ServingOutcome:
    """Run the serving schedule on ``tree``.

    ``demand`` (N, X): exogenous request mass per node and test point (rows sum to
    ``a_n``; :func:`device_demand`); ``uncert`` (E, X): uncertainty of every test point at
    each exit; ``correct`` (E, X): whether exit e classifies the point right.
    """
    n_nodes, n_exits = tree.n_nodes, tree.n_exits
    demand = np.asarray(demand, dtype=float)
    uncert = np.asarray(uncert, dtype=float)
    correct = np.asarray(correct, dtype=bool)
    n_points = demand.shape[1] if demand.ndim == 2 else -1
    if demand.shape != (n_nodes, n_points) or uncert.shape != (n_exits, n_points) \
            or correct.shape != (n_exits, n_points):
        raise ValidationError("serve", f"shapes disagree: demand {demand.shape} (nodes x "
                                       f"points), uncertainty {uncert.shape} and correct "
                                       f"{correct.shape} (exits x points)")
    if (demand < 0).any():
        raise ValidationError("demand", "must be >= 0")
    incoming = demand.copy()
    served = np.zeros_like(demand)
    received = np.zeros_like(demand)
    index = np.arange(n_points)
    for n in tree.postorder:
        mu = incoming[n]
        received[n] = mu
        s = float(tree.serving[n])
        r = float(mu.sum())
        if r < s + 1e-12 * max(1.0, r) or n == 0:
            sig = mu.copy()
        else:
            u = uncert[tree.exits[n] - 1]
            live = np.flatnonzero(mu > 0)
            order = live[np.lexsort((index[live], u[live]))]
            m = mu[order]
            before = np.cumsum(m) - m
            sig = np.zeros(n_points)
            sig[order] = np.clip(s - before, 0.0, m)
            # the point the capacity runs out on is served up to a rounding residual at
            # most: serve it whole rather than forward a mass of ~1e-17 (which would make
            # a served point of the parent out of order, or one that receives nothing)
            sig = np.where((sig > 0) & (mu - sig <= 1e-12 * max(1.0, r)), mu, sig)
        served[n] = sig
        if n != 0:
            incoming[tree.parent[n]] += mu - sig
    hit = correct[tree.exits - 1]                      # (N, X)
    served_mass = served.sum(axis=1)
    good = (served * hit).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        node_acc = np.where(served_mass > 0, good / np.where(served_mass > 0, served_mass, 1),
                            np.nan)
    tier_mass = np.bincount(tree.exits - 1, weights=served_mass, minlength=n_exits)
    tier_good = np.bincount(tree.exits - 1, weights=good, minlength=n_exits)
    tier_acc = np.where(tier_mass > 0, tier_good / np.where(tier_mass > 0, tier_mass, 1),
                        np.nan)
    return ServingOutcome(served=served, received=received,
                          system_accuracy=float(good.sum() / tree.arrival.sum()),
                          node_accuracy=node_acc, tier_accuracy=tier_acc,
                          exit_accuracy=correct.mean(axis=1), exit_rates=tier_mass)


def evaluate_logits(tree: ServingTree, logits: np.ndarray, labels: np.ndarray, *,
                    test_points: dict[int, np.ndarray] | None = None,
                    kind: str = "entropy") -> ServingOutcome:
    """Serve the test set with per-exit ``logits`` (E, X, C) and ``labels`` (X,)."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    correct = logits.argmax(axis=-1) == labels[None, :]
    return serve(tree, device_demand(tree, labels.size, test_points),
                 uncertainty(logits, kind), correct)


__all__ = ["ServingOutcome", "device_demand", "evaluate_logits", "serve", "uncertainty"]
