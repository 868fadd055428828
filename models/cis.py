"""Cooperative inference systems (CIS) with early exits: serving rates on a node tree.

Documented in ``docs/kinds/cis_early_exit.md``. Source system: Kaplan, Rodio, Si Salem, Xu, Neglia,
"Federated Learning for Cooperative Inference Systems: The Case of Early Exit Networks"
(arXiv 2405.04249) and the authors' code release ``arodio/FedCIS``.

Provenance labels used below: **[paper]** (abstract and opening of the introduction only),
**[authors' code]** (behaviour read in ``arodio/FedCIS``), **[project choice]** (our
reconstruction, fix or extension). No formula here is captioned as the paper's.

Conventions [project choice]:

- Nodes are ``0..N-1``; node 0 is the root (cloud); ``parent[0] == -1``.
- Exits are numbered ``1..E`` as *values* (``exits[n]`` is the largest exit node ``n``
  hosts, an assignment entry is the exit a node trains, ``0`` meaning "does not take
  part"); per-exit *arrays* have length ``E`` with exit ``e`` at position ``e - 1``, and
  node-exit matrices have shape ``(N, E)``.
- Errors name the culprit as ``nodes[3].forward``.

Everything is pure numpy; nothing here imports the rest of the project but the checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from jointopt.models.checks import as_vector, brief, check_range, culprit
from jointopt.models.errors import ValidationError

#: Requested serving shares (P1, P2, P3) = (device, edge, cloud) per device share
#: [authors' code]; ``"0.33"`` is exact thirds [project choice] (the authors' 100-node file
#: used 0.34/0.33/0.33); ``"0.80*"`` (empty edge tier) only serves the zero-weight oracle.
SERVING_SPLITS: dict[str, tuple[float, float, float]] = {
    "0.05": (0.05, 0.15, 0.80),
    "0.10": (0.10, 0.30, 0.60),
    "0.20": (0.20, 0.35, 0.45),
    "0.33": (1 / 3, 1 / 3, 1 / 3),
    "0.45": (0.45, 0.35, 0.20),
    "0.60": (0.60, 0.30, 0.10),
    "0.80": (0.80, 0.15, 0.05),
    "0.80*": (0.80, 0.0, 0.20),
}
#: The seven device shares of the experiment grid (``"0.80*"`` excluded).
DEVICE_SHARES: tuple[str, ...] = ("0.05", "0.10", "0.20", "0.33", "0.45", "0.60", "0.80")

#: Training-data tier shares (cloud, edges, devices) [authors' code]: ``eq`` equal tiers,
#: ``2x`` each tier twice the tier below, ``tiny`` devices almost without data.
DATA_SPLITS: dict[str, tuple[float, float, float]] = {
    "eq": (1 / 3, 1 / 3, 1 / 3),
    "2x": (4 / 7, 2 / 7, 1 / 7),
    "tiny": (0.767, 0.199, 0.034),
}

#: Named exit-switch configurations pi = (pi_1, pi_2, pi_3) [authors' code]: ``p0`` (default)
#: and ``p40`` (cloud and edges help train shallow exits).
PI_CONFIGS: dict[str, tuple[float, float, float]] = {
    "p0": (0.0, 0.0, 0.0),
    "p40": (0.0, 0.4, 0.8),
}


def serving_split(share) -> tuple[float, float, float]:
    """(P1, P2, P3) for a device share given as a name (``"0.45"``, ``"0.80*"``) or a float
    (``0.45``, ``1/3``)."""
    if isinstance(share, str):
        key = share.strip()
    else:
        try:
            x = float(share)
        except (TypeError, ValueError):
            raise ValidationError("tree.device_share",
                                  f"must be a number or one of {', '.join(SERVING_SPLITS)}, "
                                  f"got {brief(share)}") from None
        key = "0.33" if abs(x - 1 / 3) < 1e-9 else f"{x:.2f}"
    if key not in SERVING_SPLITS:
        raise ValidationError("tree.device_share",
                              f"must be one of {', '.join(SERVING_SPLITS)}, got {brief(share)}")
    return SERVING_SPLITS[key]


def tier_shape(n_nodes: int) -> tuple[int, int]:
    """``(D, g)``: D edges with g devices each, ``N = 1 + D + D g``, minimising ``|g - D|``
    (ties: fewer edges) [authors' code]. 7 -> (2, 2), 17 -> (4, 3), 100 -> (9, 10)."""
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, int | np.integer):
        raise ValidationError("tree.nodes", f"must be an integer, got {n_nodes!r}")
    best = None
    for d in range(1, n_nodes):
        rest = n_nodes - 1 - d
        if rest >= d and rest % d == 0:
            g = rest // d
            if best is None or abs(g - d) < abs(best[1] - best[0]):
                best = (d, g)
    if best is None:
        raise ValidationError("tree.nodes", f"must be 1 + D + D*g for some D, g >= 1 "
                                            f"(N >= 3; e.g. 7, 17, 100), got {n_nodes}")
    return best


def exit_vector(field: str, value, n: int | None = None, *, per: str = "exit",
                **bounds) -> np.ndarray:
    """``as_vector`` + ``check_range`` for a per-exit (or per-tier) vector; errors name the
    entry as ``training.sigma2[2]`` (not ``training[2].sigma2``, the per-client form)."""
    section, _, name = field.rpartition(".")
    try:
        arr = as_vector(name, value, n)
        if bounds:
            check_range(name, arr, **bounds)
    except ValidationError as err:
        msg = err.message.replace("one entry per client", f"one entry per {per}")
        raise ValidationError(f"{section}.{err.field}" if section else err.field, msg) from None
    return arr


@dataclass(frozen=True, eq=False)
class ServingTree:
    """A tree of nodes with nested early exits and inference traffic [authors' code].

    ``parent[n]`` (``-1`` for the root 0), ``exits[n] = k(n)`` (the largest exit node n
    hosts), ``arrival[n] = a_n`` (exogenous request rate) and ``forward[n] = d_n`` (rate n
    forwards to its parent). Derived [authors' code]::

        r_n = a_n + sum_{c in ch(n)} d_c          received
        s_n = r_n - d_n                           serving rate
        phi_n = s_n / r_n (1 when r_n = 0)        served fraction
        Lambda_e = sum_{n: k(n) = e} s_n,  lambda_e = Lambda_e / sum Lambda   (target)

    Validation [project choice]: a tree rooted at 0 (no cycle, one root, every node
    reaches it), ``k(par(n)) >= k(n)``, ``a_n >= 0``, ``0 <= d_n <= r_n``, ``d_0 = 0``,
    ``sum a_n > 0``. Violations raise :class:`ValidationError` naming the node. The authors
    clip negative serving rates to zero silently [authors' code]; we raise instead.
    """

    parent: np.ndarray
    exits: np.ndarray
    arrival: np.ndarray
    forward: np.ndarray
    n_exits: int = 0

    def __post_init__(self):
        parent = np.asarray(self.parent)
        if parent.ndim != 1 or parent.size == 0:
            raise ValidationError("nodes.parent", "must be a non-empty list, one entry per node")
        if not np.all(np.equal(np.mod(parent, 1), 0)):
            raise ValidationError("nodes.parent", "must hold integer node ids")
        parent = parent.astype(int)
        n = parent.size
        exits = np.asarray(self.exits)
        if exits.shape != (n,) or not np.all(np.equal(np.mod(exits, 1), 0)):
            raise ValidationError("nodes.exit", f"must list one integer exit per node ({n})")
        exits = exits.astype(int)
        arrival = as_vector("nodes.arrival", self.arrival, n)
        forward = as_vector("nodes.forward", self.forward, n)
        _check_tree(parent)
        n_exits = int(self.n_exits) if self.n_exits else int(exits.max())
        check_range("nodes.exit", exits, ge=1, le=n_exits)
        below = exits[1:] > exits[parent[1:]]
        if below.any():
            i = int(np.flatnonzero(below)[0]) + 1
            raise ValidationError(culprit("nodes.exit", i),
                                  f"must be <= its parent's exit (node {parent[i]} hosts exit "
                                  f"{exits[parent[i]]}), got {exits[i]}")
        check_range("nodes.arrival", arrival, ge=0.0)
        check_range("nodes.forward", forward, ge=0.0)
        if forward[0] != 0.0:
            raise ValidationError(culprit("nodes.forward", 0),
                                  f"must be 0 (the root has no parent), got {forward[0]!r}")
        if not arrival.sum() > 0.0:
            raise ValidationError("nodes.arrival", "must have a positive total (no requests)")
        received = arrival.copy()
        np.add.at(received, parent[1:], forward[1:])
        over = forward - received
        tol = 1e-12 * max(1.0, float(received.max()))
        if (over > tol).any():
            i = int(np.argmax(over))
            raise ValidationError(culprit("nodes.forward", i),
                                  f"must be <= the rate node {i} receives ({received[i]:g}), "
                                  f"got {forward[i]:g}: it forwards more than it receives")
        for name, value in (("parent", parent), ("exits", exits)):
            value.flags.writeable = False
            object.__setattr__(self, name, value)
        object.__setattr__(self, "arrival", arrival)
        object.__setattr__(self, "forward", forward)
        object.__setattr__(self, "n_exits", n_exits)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_edges(cls, edges: Sequence[tuple[int, int]], exits, arrival, forward,
                   n_exits: int = 0) -> ServingTree:
        """From ``(child, parent)`` pairs; a node listed with two parents, a missing node, a
        cycle or a second root raise errors naming the node."""
        n = len(np.asarray(exits))
        parent = np.full(n, -2, dtype=int)
        parent[0] = -1
        for j, pair in enumerate(edges):
            try:
                c, p = (int(x) for x in pair)
            except (TypeError, ValueError):
                raise ValidationError(f"edges[{j}]", f"must be a (child, parent) pair, "
                                                     f"got {pair!r}") from None
            for v in (c, p):
                if not 0 <= v < n:
                    raise ValidationError(f"edges[{j}]", f"names node {v}, outside 0..{n - 1}")
            if c == 0:
                raise ValidationError(f"edges[{j}]", "gives the root (node 0) a parent: "
                                                     "not a tree rooted at 0")
            if parent[c] != -2:
                raise ValidationError(culprit("nodes.parent", c),
                                      f"node {c} has two parents ({parent[c]} and {p}): "
                                      "not a tree")
            parent[c] = p
        missing = np.flatnonzero(parent == -2)
        if missing.size:
            raise ValidationError(culprit("nodes.parent", int(missing[0])),
                                  f"node {int(missing[0])} has no parent: not connected to "
                                  "the root, not a tree")
        return cls(parent, exits, arrival, forward, n_exits)

    @classmethod
    def three_tier(cls, n_nodes: int, shares=(1 / 3, 1 / 3, 1 / 3),
                   total_arrival: float = 10.0) -> ServingTree:
        """The authors' three-tier generator [authors' code]: cloud 0, edges 1..D, then the
        devices in consecutive groups of g per edge; requests arrive at the devices only::

            a_dev = A / (D g),  d_dev = a_dev (P2 + P3),  d_edge = a_dev g P3,  d_cloud = 0

        so that the exit shares equal ``shares = (P1, P2, P3)``. ``shares`` may also be a
        device-share name or number (:func:`serving_split`). Default ``A = 10`` [project
        choice]; results do not depend on A."""
        if isinstance(shares, str | float | int):
            shares = serving_split(shares)
        p = exit_vector("tree.shares", shares, 3, per="tier", ge=0.0)
        if abs(p.sum() - 1.0) > 1e-9:
            raise ValidationError("tree.shares", f"must sum to 1, got {p.sum():.12g}")
        check_range("tree.total_arrival", total_arrival, gt=0.0)
        d, g = tier_shape(n_nodes)
        parent = np.concatenate([[-1], np.zeros(d, int), np.repeat(np.arange(1, d + 1), g)])
        exits = np.concatenate([[3], np.full(d, 2), np.ones(d * g, int)])
        a_dev = total_arrival / (d * g)
        arrival = np.concatenate([[0.0], np.zeros(d), np.full(d * g, a_dev)])
        forward = np.concatenate([[0.0], np.full(d, a_dev * g * p[2]),
                                  np.full(d * g, a_dev * (p[1] + p[2]))])
        return cls(parent, exits, arrival, forward, 3)

    def scaled(self, c: float) -> ServingTree:
        """The same tree with every rate multiplied by ``c > 0`` (rescaling invariance)."""
        check_range("scale", c, gt=0.0)
        return ServingTree(self.parent, self.exits, self.arrival * c, self.forward * c,
                           self.n_exits)

    # -- derived -----------------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        return int(self.parent.size)

    @cached_property
    def received(self) -> np.ndarray:
        """``r_n = a_n + sum of the children's forwarded rates``."""
        r = self.arrival.copy()
        np.add.at(r, self.parent[1:], self.forward[1:])
        return _frozen(r)

    @cached_property
    def serving(self) -> np.ndarray:
        """``s_n = r_n - d_n`` (>= 0 up to rounding; tiny negatives from rounding are 0)."""
        return _frozen(np.maximum(self.received - self.forward, 0.0))

    @cached_property
    def served_fraction(self) -> np.ndarray:
        """``phi_n = s_n / r_n``, 1 where a node receives nothing."""
        r = self.received
        safe = np.where(r > 0, r, 1.0)
        return _frozen(np.where(r > 0, self.serving / safe, 1.0))

    @cached_property
    def exit_rates(self) -> np.ndarray:
        """``Lambda_e``: the rate served by exit e (length E)."""
        return _frozen(np.bincount(self.exits - 1, weights=self.serving,
                                   minlength=self.n_exits).astype(float))

    @cached_property
    def target_weights(self) -> np.ndarray:
        """``lambda_e = Lambda_e / sum Lambda``: the inference-aware target weights."""
        lam = self.exit_rates
        return _frozen(lam / lam.sum())

    @cached_property
    def children(self) -> tuple[tuple[int, ...], ...]:
        kids: list[list[int]] = [[] for _ in range(self.n_nodes)]
        for c in range(1, self.n_nodes):
            kids[int(self.parent[c])].append(c)
        return tuple(tuple(k) for k in kids)

    @cached_property
    def postorder(self) -> np.ndarray:
        """Children before parents (the order the serving schedule processes nodes)."""
        order, stack = [], [(0, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(self.children[node]))
        return _frozen(np.asarray(order, dtype=int))

    def tier_of(self, exit_: int) -> np.ndarray:
        """Ids of the nodes hosting exactly exit ``exit_`` (the set N_e)."""
        return np.flatnonzero(self.exits == exit_)

    def to_dict(self) -> dict:
        return {"parent": self.parent.tolist(), "exit": self.exits.tolist(),
                "arrival": self.arrival.tolist(), "forward": self.forward.tolist()}


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _check_tree(parent: np.ndarray) -> None:
    """Rooted at 0, one root, no self loop, no cycle; errors name the node."""
    n = parent.size
    if parent[0] != -1:
        raise ValidationError(culprit("nodes.parent", 0),
                              f"must be -1: node 0 is the root (cloud), got {parent[0]}")
    for i in range(1, n):
        p = int(parent[i])
        if p == -1:
            raise ValidationError(culprit("nodes.parent", i),
                                  f"node {i} is a second root (parent -1): not a tree rooted "
                                  "at 0")
        if not 0 <= p < n:
            raise ValidationError(culprit("nodes.parent", i),
                                  f"names node {p}, outside 0..{n - 1}")
        if p == i:
            raise ValidationError(culprit("nodes.parent", i), f"node {i} is its own parent")
    # depth by repeated jumping; nodes not reaching the root after n steps sit on a cycle
    state = np.zeros(n, dtype=np.int8)  # 0 unknown, 1 on current path, 2 reaches root
    state[0] = 2
    for start in range(1, n):
        path, v = [], start
        while state[v] == 0:
            state[v] = 1
            path.append(v)
            v = int(parent[v])
        if state[v] == 1:
            cycle = path[path.index(v):]
            raise ValidationError(culprit("nodes.parent", v),
                                  f"node {v} lies on a cycle ({' -> '.join(map(str, cycle))} "
                                  f"-> {v}): not a tree")
        state[path] = 2


# -- participation and data weights ------------------------------------------------------
def check_pi(pi, n_exits: int) -> np.ndarray:
    """The exit-switch probabilities ``pi_k`` (length E, ``pi_1 = 0``, each in [0, 1])."""
    if isinstance(pi, str):
        if pi == "p0":
            pi = np.zeros(n_exits)
        elif pi not in PI_CONFIGS or n_exits != 3:
            raise ValidationError("training.pi", f"must be 'p0', 'p40' (3 exits only) or a "
                                                 f"list, got {pi!r}")
        else:
            pi = PI_CONFIGS[pi]
    pi = exit_vector("training.pi", pi, n_exits, ge=0.0, le=1.0)
    if pi[0] != 0.0:
        raise ValidationError("training.pi[0]",
                              f"must be 0 (a shallowest-exit node has no smaller exit), "
                              f"got {pi[0]!r}")
    return pi


def participation_probabilities(exits, pi, nu: float = 1.0, n_exits: int | None = None
                                ) -> np.ndarray:
    """``p[n, e-1]``: probability that node n trains exit e in a round [authors' code]::

        p_{n,k} = nu (1 - pi_k),   p_{n,e} = nu pi_k / (k - 1) for e < k,   0 for e > k

    with ``k = k(n)``; each row sums to ``nu``. ``nu`` (independent Bernoulli node sampling)
    is a project extension, default 1 as in the authors' code."""
    exits = np.asarray(exits, dtype=int)
    n_exits = int(n_exits or exits.max())
    pi = check_pi(pi, n_exits)
    check_range("training.nu", nu, gt=0.0, le=1.0)
    k = exits[:, None]
    e = np.arange(1, n_exits + 1)[None, :]
    pik = pi[exits - 1][:, None]
    below = np.where(k > 1, pik / np.maximum(k - 1, 1), 0.0)
    p = np.where(e == k, 1.0 - pik, np.where(e < k, below, 0.0))
    return nu * p


def data_weights(exits, sizes, pi, n_exits: int | None = None) -> np.ndarray:
    """``q[n, e-1] = m_n / M_e`` over the potential trainers T_e of exit e [authors' code]::

        T_e = N_e  U  {n : k(n) > e and pi_{k(n)} > 0},   M_e = sum_{n in T_e} m_n

    A column is all zero when an exit has no potential trainer."""
    exits = np.asarray(exits, dtype=int)
    n_exits = int(n_exits or exits.max())
    pi = check_pi(pi, n_exits)
    m = as_vector("nodes.data_size", sizes, exits.size)
    check_range("nodes.data_size", m, ge=0.0)
    e = np.arange(1, n_exits + 1)[None, :]
    k = exits[:, None]
    member = (k == e) | ((k > e) & (pi[exits - 1][:, None] > 0))
    mass = np.where(member, m[:, None], 0.0)
    total = mass.sum(axis=0)
    return mass / np.where(total > 0, total, 1.0)


def variance_proxy(sigma2, q, p) -> np.ndarray:
    """``V_e = sigma_e^2 sum_{n in T_e} q_{n,e}^2 / p_{n,e}`` [project choice, generalising
    the authors' ``sigma_e^2 sum_{n in N_e} q_{n,e}^2``]; ``inf`` for an exit nobody can
    train (``q`` column zero). ``sigma2`` is the per-coordinate gradient variance of each
    exit, estimated by the training harness at the initial model (or user-supplied)."""
    q = np.asarray(q, dtype=float)
    p = np.asarray(p, dtype=float)
    sigma2 = exit_vector("training.sigma2", sigma2, q.shape[1], gt=0.0)
    ratio = np.where(q > 0, q * q / np.where(p > 0, p, 1.0), 0.0)
    if ((q > 0) & (p <= 0)).any():
        n, e = (int(v) for v in np.argwhere((q > 0) & (p <= 0))[0])
        raise ValidationError(f"training.pi[{e}]", f"gives node {n} no chance to train "
                                                         f"exit {e + 1} although it holds data")
    s = ratio.sum(axis=0)
    return np.where(q.sum(axis=0) > 0, sigma2 * s, np.inf)


def sample_assignment(exits, pi, rng: np.random.Generator, nu: float = 1.0,
                      size: int | None = None) -> np.ndarray:
    """The exit each node trains this round (0: node not sampled) [authors' code; ``nu``
    project extension]: exit k(n) with probability ``1 - pi_k``, else one of ``1..k-1``
    uniformly. ``size`` draws that many rounds at once (shape ``(size, N)``). Give it its
    own RNG stream, so that rules with equal weights see identical assignments."""
    exits = np.asarray(exits, dtype=int)
    pi = check_pi(pi, int(exits.max()))
    shape = exits.shape if size is None else (size, exits.size)
    switch = rng.random(shape) < pi[exits - 1]
    lower = np.floor(rng.random(shape) * np.maximum(exits - 1, 1)).astype(int) + 1
    out = np.where(switch & (exits > 1), lower, exits)
    if nu < 1.0:
        out = np.where(rng.random(shape) < nu, out, 0)
    return out


# -- data splits --------------------------------------------------------------------------
def node_data_sizes(exits, split: str | Sequence[float], total: int) -> np.ndarray:
    """Training-set size ``m_n`` per node for a data split [shares: authors' code; rounding:
    project choice]: tier totals cloud = round(M s_c), edges = round(M s_e), devices = the
    rest; sizes as equal as possible within a tier (the first nodes get the extra
    sample); every node gets at least one sample. Tiers are the nodes hosting exit 3, 2, 1."""
    exits = np.asarray(exits, dtype=int)
    if isinstance(split, str):
        if split not in DATA_SPLITS:
            raise ValidationError("data.split", f"must be one of {', '.join(DATA_SPLITS)} or "
                                                f"three tier shares, got {split!r}")
        shares = np.asarray(DATA_SPLITS[split])
    else:
        shares = exit_vector("data.split", split, 3, per="tier", ge=0.0)
        shares = shares / shares.sum()
    if isinstance(total, bool) or not isinstance(total, int | np.integer):
        raise ValidationError("data.total", f"must be an integer, got {total!r}")
    tiers = [np.flatnonzero(exits == k) for k in (3, 2, 1)]
    if any(t.size == 0 for t in tiers) or exits.max() != 3:
        raise ValidationError("data.split", "tier splits need a three-exit tree with nodes "
                                            "on every tier; give nodes.data_size instead")
    if total < exits.size:
        raise ValidationError("data.total", f"must be >= the node count {exits.size} (every "
                                            f"node gets a sample), got {total}")
    counts = [round(total * shares[0]), round(total * shares[1])]
    counts.append(total - counts[0] - counts[1])
    # every node at least one sample: move the shortfall from the largest tier
    counts = np.asarray(counts)
    need = np.array([t.size for t in tiers])
    short = np.maximum(need - counts, 0)
    while short.any():
        donor = int(np.argmax(counts - need))
        take = int(short.sum())
        counts = counts + short
        counts[donor] -= take
        short = np.maximum(need - counts, 0)
    m = np.zeros(exits.size, dtype=int)
    for tier, c in zip(tiers, counts, strict=True):
        base, extra = divmod(int(c), tier.size)
        m[tier] = base + (np.arange(tier.size) < extra)
    return m


# -- forward cost ---------------------------------------------------------------------------
def conv_macs(c_in: int, c_out: int, kernel: int, height: int, width: int) -> int:
    """Multiply-accumulates of a stride-1 'same' convolution (no bias)."""
    return c_in * c_out * kernel * kernel * height * width


def digits_ee_costs() -> np.ndarray:
    """``C_e`` of the digits ``DigitsEE`` counted from its layer shapes [project
    choice]: convolutions and linear heads from the input to exit e's logits."""
    blocks = np.array([conv_macs(1, 16, 3, 8, 8), conv_macs(16, 32, 3, 8, 8),
                       conv_macs(32, 64, 3, 4, 4)], dtype=float)
    heads = np.array([64 * 10, 32 * 10, 64 * 10], dtype=float)
    return np.cumsum(blocks) + heads


def softmax_regression_costs(widths=(16, 64, 512), n_in: int = 64, n_classes: int = 10
                             ) -> np.ndarray:
    """``C_e = n_e (n_in + n_classes)`` of the surrogate S3 [project choice]."""
    return np.asarray(widths, dtype=float) * (n_in + n_classes)


def exit_sets(n_exits: int, blocks: dict[str, int], heads: dict[str, int]
              ) -> dict[str, frozenset[int]]:
    """The parameter-group map ``g -> X(g)`` of a nested early-exit model [project choice]:
    a key of ``blocks`` lying in block b is used by every exit ``>= b``; a key of ``heads``
    belonging to head e only by exit e."""
    out: dict[str, frozenset[int]] = {}
    for key, b in blocks.items():
        if not 1 <= b <= n_exits:
            raise ValidationError(f"blocks.{key}", f"must be in 1..{n_exits}, got {b}")
        out[key] = frozenset(range(b, n_exits + 1))
    for key, e in heads.items():
        if not 1 <= e <= n_exits:
            raise ValidationError(f"heads.{key}", f"must be in 1..{n_exits}, got {e}")
        if key in out:
            raise ValidationError(f"heads.{key}", "is also listed as a block")
        out[key] = frozenset({e})
    return out


__all__ = [
    "DATA_SPLITS", "DEVICE_SHARES", "PI_CONFIGS", "SERVING_SPLITS", "ServingTree", "check_pi",
    "exit_vector",
    "conv_macs", "data_weights", "digits_ee_costs", "exit_sets", "node_data_sizes",
    "participation_probabilities", "sample_assignment", "serving_split",
    "softmax_regression_costs", "tier_shape", "variance_proxy",
]
