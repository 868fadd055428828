"""Torch-free surrogate S3 of CIS early-exit training: nested softmax regression on digits.

Documented in ``docs/kinds/cis_early_exit.md`` (S3) [project choice]. A fixed random feature map
``phi(x) = ReLU(R z + b)`` (``z``: pixels standardised with training statistics,
``R ~ N(0, 1/64)`` of shape 512 x 64, ``b ~ U(-1, 1)``, each feature then divided by its
training standard deviation; fixed seed). Exit e reads the first ``n_e`` features,
``n = (16, 64, 512)``. Parameters: ``W`` (512 x 10) split into row groups ``W1 = [0, 16)``,
``W2 = [16, 64)``, ``W3 = [64, 512)`` (group j used by exits ``>= j``) and one bias vector
``c_e`` per exit (the heads). Exit logits ``phi_{1:n_e} W_{1:n_e} + c_e``. Plain SGD
(``eta = 0.05``, weight decay ``5e-4``, ``B = 32``, ``K = ceil(m_0 / B)``, ``T = 60``).
The ``flops`` rule uses ``C_e = n_e (64 + 10)``; the variance rules use the problem's
``sigma2`` (default 1: no gradient-variance estimate for S3).

The round is the one of the torch harness (:mod:`jointopt.harness.early_exit`): same
assignment stream, same batches (reshuffled passes, ``min(B, m_n)``), block-wise
aggregation by :func:`jointopt.solvers.cis.aggregate_stacked`, same serving evaluation
(:mod:`jointopt.harness.cis_serving`) on the same data partition. All nodes train at once
(stacked parameters). The objective is convex, the nesting exact, and the exits conflict on
the shared rows: a cheap predictor of how the weighting rules rank, not of CNN accuracies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import softmax

from jointopt.harness.cis_serving import evaluate_logits
from jointopt.harness.early_exit import EarlyExitData, EarlyExitRun, local_batches, partition
from jointopt.models.cis import exit_sets, sample_assignment, softmax_regression_costs
from jointopt.models.errors import ValidationError


@dataclass(frozen=True)
class SurrogateConfig:
    """S3 settings [project choice]."""

    widths: tuple[int, ...] = (16, 64, 512)
    rounds: int = 60
    local_steps: int | None = None     # None: ceil(m_0 / B), m_0 the cloud's data
    batch_size: int = 32
    lr: float = 0.05
    weight_decay: float = 5e-4
    server_lr: float = 1.0
    weighting: str = "unbiased"
    block_normalize: bool = False
    uncertainty: str = "entropy"
    feature_seed: int = 0
    data_seed: int = 0


@lru_cache(maxsize=4)
def _features(X_key: bytes, shape: tuple[int, int], n_features: int, seed: int):
    """Random ReLU features fitted on the training pool (cached per pool)."""
    X = np.frombuffer(X_key, dtype=np.float32).reshape(shape).astype(np.float64)
    mean, std = X.mean(axis=0), X.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    rng = np.random.default_rng(seed)
    R = rng.normal(0.0, 1.0 / 8.0, size=(n_features, shape[1]))
    b = rng.uniform(-1.0, 1.0, size=n_features)
    phi = np.maximum((X - mean) / std @ R.T + b, 0.0)
    scale = phi.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return mean, std, R, b, scale


def feature_map(data: EarlyExitData, n_features: int = 512, seed: int = 0):
    """``(phi_train, phi_test)`` of the fixed random feature map."""
    X = np.ascontiguousarray(data.X, dtype=np.float32)
    mean, std, R, b, scale = _features(X.tobytes(), X.shape, n_features, seed)

    def phi(Z):
        return np.maximum((np.asarray(Z, dtype=np.float64) - mean) / std @ R.T + b, 0.0) / scale

    return phi(X), phi(data.X_test)


def groups(n_exits: int = 3) -> dict[str, frozenset[int]]:
    """``W1..WE`` row groups (block e used by exits ``>= e``) and heads ``c1..cE``."""
    return exit_sets(n_exits, {f"W{e}": e for e in range(1, n_exits + 1)},
                     {f"c{e}": e for e in range(1, n_exits + 1)})


def train(problem, rule: str = "serving_rate", *, seed: int = 0,
          config: SurrogateConfig | None = None, weights=None,
          data: EarlyExitData | None = None) -> EarlyExitRun:
    """One S3 run on ``problem``; same interface and result type as
    :func:`jointopt.harness.early_exit.train`."""
    from jointopt.harness.early_exit import _weights_fn, with_training
    from jointopt.solvers.cis import aggregate_stacked

    cfg = config or SurrogateConfig()
    E = problem.E
    if len(cfg.widths) != E:
        raise ValidationError("config.widths", f"must list one width per exit ({E}), got "
                                               f"{cfg.widths}")
    data = data or partition(problem, cfg.data_seed)
    start = time.perf_counter()
    phi, phi_test = feature_map(data, cfg.widths[-1], cfg.feature_seed)
    n_classes = data.n_classes
    edges = np.concatenate([[0], cfg.widths]).astype(int)
    grp = groups(E)
    params = {f"W{e}": np.zeros((edges[e] - edges[e - 1], n_classes)) for e in range(1, E + 1)}
    params |= {f"c{e}": np.zeros(n_classes) for e in range(1, E + 1)}
    rng_init = np.random.default_rng([seed, 0])
    for e in range(1, E + 1):
        params[f"W{e}"] = rng_init.normal(0.0, 0.01, params[f"W{e}"].shape)
    rounds = cfg.rounds
    wproblem = problem
    if rule == "flops" and weights is None and problem.training.flops is None:
        wproblem = with_training(problem, flops=softmax_regression_costs(cfg.widths).tolist())
    weights_at = _weights_fn(wproblem, rule, weights, rounds)
    sizes = data.sizes
    steps = cfg.local_steps or int(np.ceil(sizes[0] / cfg.batch_size))
    rng_assign = np.random.default_rng([seed, 1])
    rng_batch = np.random.default_rng([seed, 2])
    q, p = problem.data_weight, problem.participation
    onehot = np.eye(n_classes)[data.y]
    losses = []
    for t in range(rounds):
        a = sample_assignment(problem.exits, problem.pi, rng_assign, nu=problem.training.nu)
        a = np.where(sizes > 0, a, 0)
        active = np.flatnonzero(a > 0)
        W = np.concatenate([params[f"W{e}"] for e in range(1, E + 1)])
        C = np.stack([params[f"c{e}"] for e in range(1, E + 1)])
        Wn = np.repeat(W[None], active.size, axis=0)
        Cn = np.repeat(C[None], active.size, axis=0)
        ex = a[active] - 1
        rows = np.arange(active.size)
        feat_mask = (np.arange(edges[-1])[None, :] < edges[ex + 1][:, None]).astype(float)
        batches = local_batches(sizes[active], steps, cfg.batch_size, rng_batch)
        B = max(bt.shape[1] for bt in batches)
        idx = np.zeros((steps, active.size, B), dtype=np.int64)
        valid = np.zeros((active.size, B))
        for i, (n, bt) in enumerate(zip(active, batches, strict=True)):
            idx[:, i, :bt.shape[1]] = data.parts[n][bt]
            valid[i, :bt.shape[1]] = 1.0
        count = valid.sum(axis=1)
        decay_mask = feat_mask[:, :, None]
        loss = 0.0
        for k in range(steps):
            f = phi[idx[k]] * feat_mask[:, None, :]                 # (m, B, F)
            z = f @ Wn + Cn[rows, ex][:, None, :]
            pr = softmax(z, axis=2)
            yk = data.y[idx[k]]
            picked = np.take_along_axis(pr, yk[..., None], axis=2)[..., 0]
            loss -= float((np.log(np.maximum(picked, 1e-300)) * valid).sum(axis=1)
                          .__truediv__(count).mean())
            g = (pr - onehot[idx[k]]) * (valid / count[:, None])[..., None]
            Wn -= cfg.lr * (f.transpose(0, 2, 1) @ g + cfg.weight_decay * Wn * decay_mask)
            Cn[rows, ex] -= cfg.lr * (g.sum(axis=1) + cfg.weight_decay * Cn[rows, ex])
        losses.append(loss / steps)
        stacked = {}
        for e in range(1, E + 1):
            full_W = np.repeat(params[f"W{e}"][None], problem.n_nodes, axis=0)
            full_W[active] = Wn[:, edges[e - 1]:edges[e]]
            stacked[f"W{e}"] = full_W
            full_c = np.repeat(params[f"c{e}"][None], problem.n_nodes, axis=0)
            full_c[active] = Cn[rows, e - 1]
            stacked[f"c{e}"] = full_c
        params = aggregate_stacked(params, stacked, a, weights_at(t), q, p, grp,
                                   weighting=cfg.weighting,
                                   block_normalize=cfg.block_normalize,
                                   server_lr=cfg.server_lr)
    W = np.concatenate([params[f"W{e}"] for e in range(1, E + 1)])
    logits = np.stack([phi_test[:, :edges[e]] @ W[:edges[e]] + params[f"c{e}"]
                       for e in range(1, E + 1)])
    outcome = evaluate_logits(problem.serving_tree, logits, data.y_test,
                              test_points=data.test_points, kind=cfg.uncertainty)
    label = rule if weights is None else "fixed"
    return EarlyExitRun(label, seed, np.asarray(weights_at(0)), np.asarray(weights_at(rounds - 1)),
                        params, outcome, np.asarray(losses), time.perf_counter() - start)


__all__ = ["SurrogateConfig", "feature_map", "groups", "train"]
