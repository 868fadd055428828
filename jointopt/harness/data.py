"""Data for the harness: scikit-learn's bundled 8x8 digits and label-skew partitioners.

Provenance: **project choice** (``docs/kinds/joint_training_inference.md``; the same pieces
serve ``docs/kinds/cis_early_exit.md`` and ``docs/kinds/split_learning.md``). Numpy only: torch is
not
imported here. The digits come with scikit-learn (``train`` extra); pixels are divided by
16.

Partitioners return one array of training indices per client; together they cover every
index exactly once.

* :func:`dirichlet_partition`: each client's label mix is drawn from ``Dirichlet(alpha)``
  (small ``alpha``: few labels per client), and its size follows ``weights``. The count
  matrix ``clients x labels`` is the Dirichlet mix scaled by iterative proportional
  fitting (Sinkhorn) until its rows match the client sizes and its columns the label stock,
  then rounded per label by largest remainders (project choice: the classic per-label
  Dirichlet split of Hsu et al. 2019 cannot honour given client sizes).
* :func:`shard_partition`: the label-shard split of ``docs/kinds/split_learning.md``
  (``class_aligned`` default, or ``sorted_cut``, the original FedAvg recipe).

:func:`window_mixes` draws label mixes confined to a window of labels, for drifting data
(the harness rotates them round by round and draws training samples and requests by label).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DigitsData:
    """Train / validation / test arrays (float32 pixels in [0, 1], int64 labels)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int = 10

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])


def load_digits_data(*, test_size: float = 0.3, val_size: float = 0.0,
                     seed: int = 0) -> DigitsData:
    """Stratified split of the digits: ``test_size`` of all samples to test, then
    ``val_size`` of the remainder to validation (the split-learning harness uses 0.3 and
    1/7)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the harness needs scikit-learn: pip install -e \".[train]\"") from exc

    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, stratify=y,
                                              random_state=seed)
    if val_size > 0:
        X_tr, X_va, y_tr, y_va = train_test_split(X_tr, y_tr, test_size=val_size,
                                                  stratify=y_tr, random_state=seed)
    else:
        X_va, y_va = X_tr[:0], y_tr[:0]
    return DigitsData(X_tr, y_tr, X_va, y_va, X_te, y_te, int(y.max()) + 1)


def _largest_remainder(total: int, shares: np.ndarray) -> np.ndarray:
    """Integers summing to ``total`` proportional to ``shares`` (largest remainders)."""
    shares = np.asarray(shares, dtype=float)
    if total == 0 or shares.sum() <= 0:
        return np.zeros(len(shares), dtype=np.int64)
    raw = total * shares / shares.sum()
    out = np.floor(raw).astype(np.int64)
    left = total - int(out.sum())
    if left > 0:
        out[np.argsort(-(raw - out), kind="stable")[:left]] += 1
    return out


def dirichlet_partition(labels: np.ndarray, n_clients: int, alpha: float = 0.5, *,
                        weights: np.ndarray | None = None,
                        rng: np.random.Generator | int | None = 0,
                        sinkhorn_iters: int = 200) -> list[np.ndarray]:
    """Label-skewed split: client n's label mix ~ ``Dirichlet(alpha)``, size ~ ``weights``.

    Every index goes to exactly one client, and every client gets at least one sample when
    there are at least as many samples as clients.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(rng)
    if n_clients < 1:
        raise ValueError(f"n_clients must be >= 1, got {n_clients}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    classes, stock = np.unique(labels, return_counts=True)
    w = np.ones(n_clients) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (n_clients,) or (w <= 0).any():
        raise ValueError("weights must be n_clients positive numbers")
    sizes = len(labels) * w / w.sum()
    mix = rng.dirichlet(np.full(len(classes), alpha), size=n_clients) + 1e-6
    C = mix * sizes[:, None]
    for _ in range(sinkhorn_iters):  # rows -> client sizes, columns -> label stock
        C *= (stock / C.sum(axis=0))[None, :]
        C *= (sizes / C.sum(axis=1))[:, None]
    counts = np.stack([_largest_remainder(int(s), C[:, j]) for j, s in enumerate(stock)], axis=1)
    # no client left empty: move one sample from the largest client of some label, among
    # the clients that keep one (with about as many clients as samples, the largest count
    # of every label may be a client's only sample)
    for n in np.flatnonzero(counts.sum(axis=1) == 0):
        donors = counts * (counts.sum(axis=1) >= 2)[:, None]
        j = int(np.argmax(donors.max(axis=0)))
        counts[int(np.argmax(donors[:, j])), j] -= 1
        counts[n, j] += 1
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for j, cls in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        for n, chunk in enumerate(np.split(idx, np.cumsum(counts[:, j])[:-1])):
            parts[n].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def shard_partition(labels: np.ndarray, n_clients: int, shards_per_client: int = 2, *,
                    mode: str = "class_aligned",
                    rng: np.random.Generator | int | None = 0) -> list[np.ndarray]:
    """Label shards (``docs/kinds/split_learning.md``): ``n_clients * shards_per_client`` shards,
    dealt ``shards_per_client`` to each client.

    ``class_aligned``: each label's indices are shuffled and cut into ``S / C`` near-equal
    shards (``S`` shards, ``C`` labels; needs ``S`` divisible by ``C``), so a client holds at
    most ``shards_per_client`` labels. ``sorted_cut``: sort by label and cut ``S``
    contiguous shards (may straddle label boundaries).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(rng)
    S = n_clients * shards_per_client
    if mode == "class_aligned":
        classes = np.unique(labels)
        if S % len(classes):
            raise ValueError(f"class_aligned needs n_clients*shards_per_client ({S}) divisible "
                             f"by the number of labels ({len(classes)})")
        shards = []
        for cls in classes:
            idx = rng.permutation(np.flatnonzero(labels == cls))
            shards += np.array_split(idx, S // len(classes))
    elif mode == "sorted_cut":
        shards = np.array_split(np.argsort(labels, kind="stable"), S)
    else:
        raise ValueError(f"mode must be 'class_aligned' or 'sorted_cut', got {mode!r}")
    order = rng.permutation(S)
    return [np.sort(np.concatenate([shards[k] for k in order[i::n_clients]]))
            for i in range(n_clients)]


def window_mixes(n_clients: int, n_classes: int, window: int, alpha: float = 0.5, *,
                 rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """``(clients, classes)`` label mixes confined to the first ``window`` labels: each
    client's mix over them ~ ``Dirichlet(alpha)`` (the population's mix then sits on those
    labels, and moves when the mixes are rotated; project choice for drifting data)."""
    if not 1 <= window <= n_classes:
        raise ValueError(f"window must be in 1..{n_classes}, got {window}")
    rng = np.random.default_rng(rng)
    out = np.zeros((n_clients, n_classes))
    out[:, :window] = rng.dirichlet(np.full(window, alpha), size=n_clients) + 1e-6
    return out / out.sum(axis=1, keepdims=True)


def label_distribution(labels: np.ndarray, parts: list[np.ndarray],
                       n_classes: int) -> np.ndarray:
    """``(clients, classes)`` label frequencies of each part (rows sum to 1)."""
    labels = np.asarray(labels)
    counts = np.stack([np.bincount(labels[p], minlength=n_classes) for p in parts]).astype(float)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)


def sample_requests(test_labels: np.ndarray, dist: np.ndarray, client: np.ndarray,
                    rng: np.random.Generator, n_classes: int | None = None) -> np.ndarray:
    """Test-set indices for requests of ``client`` (one entry per request): the label is
    drawn from that client's row of ``dist``, then a test sample of that label uniformly."""
    test_labels = np.asarray(test_labels)
    C = dist.shape[1] if n_classes is None else n_classes
    order = np.argsort(test_labels, kind="stable")
    start = np.searchsorted(test_labels[order], np.arange(C))
    stock = np.bincount(test_labels, minlength=C)
    cdf = np.cumsum(dist, axis=1)
    cdf[:, -1] = 1.0
    u = rng.random(len(client))
    lab = (u[:, None] > cdf[client]).sum(axis=1)
    lab = np.minimum(lab, C - 1)
    pick = np.floor(rng.random(len(client)) * stock[lab]).astype(np.int64)
    return order[start[lab] + pick]
