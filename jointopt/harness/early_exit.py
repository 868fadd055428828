"""Serving-rate-aware federated training of an early-exit network on digits (PyTorch).

Documented in ``docs/kinds/cis_early_exit.md`` (the round, the serving evaluation, data, model and
hyper-parameters). Torch is imported only inside the functions that need it, so importing
this module is cheap and torch-free.

One round ``t`` [structure: authors' code; fixes: project choice]:

1. **Assignment**: every node draws the exit it trains
   (:func:`~jointopt.models.cis.sample_assignment`,
   own RNG stream, so that rules with equal weights see identical assignments);
2. **Local update**: node ``n`` starts from the global ``w^t`` and runs ``K`` minibatch SGD
   steps (momentum, weight decay) on the cross-entropy of its assigned exit only; batches
   of ``min(B, m_n)`` drawn by reshuffled passes over its data; groups outside the exit's
   sub-model are untouched (momentum and decay masked); momentum reset every round. All
   nodes train at once on stacked parameters (``torch.func.vmap``);
3. **Aggregation**: :func:`jointopt.solvers.cis.aggregate` (block-wise, unbiased ``q/p``
   weighting by default, the authors' ``q p`` as an option), on a separate global copy.

Then the final global model is scored by the confidence-ordered serving schedule of
:mod:`jointopt.harness.cis_serving` (system accuracy ``Acc_CIS``).

Models [project choice]: ``"cnn"`` is ``DigitsEE`` (three conv blocks, exit
heads after blocks 1 and 2, final head after block 3); ``"mlp"`` is ``DigitsEE-MLP``
(64 -> 16 -> 64 -> 128, a linear head after each hidden layer) built with
:func:`jointopt.harness.nets.mlp`. Both are :class:`~jointopt.harness.nets.BlockNet`;
the parameter-group map ``g -> X(g)`` is read off the parameter names
(:func:`parameter_groups`). Every run is deterministic given its seed; the data partition
uses the fixed ``data_seed`` for every run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from jointopt.harness.cis_serving import ServingOutcome, evaluate_logits
from jointopt.harness.data import dirichlet_partition, label_distribution, load_digits_data
from jointopt.models.cis import exit_sets, sample_assignment
from jointopt.models.errors import ValidationError


@dataclass(frozen=True)
class EarlyExitConfig:
    """Training settings [project choice; ``model="mlp"`` and smaller
    ``rounds``/``local_steps`` are the fast settings of tests, notebook and benchmark]."""

    model: str = "cnn"            # "cnn" (DigitsEE) or "mlp" (DigitsEE-MLP)
    widths: tuple[int, ...] = (32, 64, 128)   # DigitsEE-MLP hidden widths
    head_inputs: tuple[int, ...] = (4, 16)    # features the shallow MLP heads read
    rounds: int = 40              # T
    local_steps: int = 50         # K (same for every node)
    batch_size: int = 32          # B (a node uses min(B, m_n))
    lr: float = 0.05              # eta_0, cosine decay to eta_0 * lr_final_ratio
    lr_final_ratio: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    server_lr: float = 1.0        # eta_s
    weighting: str = "unbiased"   # "unbiased" (q/p) or "authors" (q p)
    block_normalize: bool = False
    uncertainty: str = "entropy"  # or "max_prob"
    data_seed: int = 0            # data split and partition, fixed across run seeds
    threads: int = 1              # torch threads during a run

    def __post_init__(self):
        if self.model not in ("cnn", "mlp"):
            raise ValidationError("config.model", f"must be 'cnn' or 'mlp', got {self.model!r}")
        if self.weighting not in ("unbiased", "authors"):
            raise ValidationError("config.weighting", f"must be 'unbiased' or 'authors', got "
                                                      f"{self.weighting!r}")
        for name in ("rounds", "local_steps", "batch_size", "threads"):
            if int(getattr(self, name)) < 1:
                raise ValidationError(f"config.{name}", f"must be >= 1, got "
                                                        f"{getattr(self, name)!r}")

    def learning_rate(self, t: int) -> float:
        """Cosine decay per round from ``lr`` (t = 0) to ``lr * lr_final_ratio`` (t = T-1)
        [authors' code]."""
        if self.rounds == 1:
            return self.lr
        frac = t / (self.rounds - 1)
        low = self.lr * self.lr_final_ratio
        return float(low + 0.5 * (self.lr - low) * (1.0 + np.cos(np.pi * frac)))


#: The fast setting of the notebook and the benchmark [project choice]: DigitsEE-MLP with
#: narrow shallow heads, T = 30, K = 20, eta_0 = 0.1 (600 local steps; a 7-node run takes a
#: few seconds on one CPU thread). Sanity gate (all data on one node training each exit
#: with probability 1/3, equal weights, seed 0): exit accuracies 0.82 < 0.94 < 0.94.
FAST = EarlyExitConfig(model="mlp", rounds=30, local_steps=20, lr=0.1)


# -- data ------------------------------------------------------------------------------------
def shift_augment(X: np.ndarray, y: np.ndarray, side: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The pool grown 5x by one-pixel shifts up, down, left, right with zero fill
    [project choice; used by the 100-node trees]."""
    imgs = X.reshape(-1, side, side)
    out = [imgs]
    for axis, step in ((1, -1), (1, 1), (2, -1), (2, 1)):
        s = np.roll(imgs, step, axis=axis)
        edge = [slice(None)] * 3
        edge[axis] = 0 if step == 1 else -1
        s[tuple(edge)] = 0.0
        out.append(s)
    return np.concatenate(out).reshape(-1, side * side), np.tile(y, 5)


@dataclass(frozen=True, eq=False)
class EarlyExitData:
    """The digits partitioned over a problem's nodes: ``X``/``y`` the training
    pool, ``parts[n]`` node n's indices, the test set, and ``test_points[n]`` the test
    points device n's requests are spread over (``None``: the full test set)."""

    X: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    parts: tuple[np.ndarray, ...] = field(repr=False)
    X_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    test_points: dict[int, np.ndarray] | None = field(default=None, repr=False)
    n_classes: int = 10

    @property
    def sizes(self) -> np.ndarray:
        return np.array([p.size for p in self.parts])


@lru_cache(maxsize=4)
def _digits(seed: int):
    return load_digits_data(test_size=0.2, seed=seed)


def partition(problem, data_seed: int = 0) -> EarlyExitData:
    """Split digits over ``problem``'s nodes [project choice]: stratified 80/20
    split (seed ``data_seed``), node sizes ``problem.data_sizes``, IID and disjoint; the
    pool grown 5x by shifts when ``problem.data.total`` exceeds it; devices' labels skewed
    by ``Dirichlet(problem.data.device_label_dirichlet)`` when set (sizes then follow
    ``data_sizes`` up to rounding); ``problem.data.test_points_per_device`` disjoint test
    slices following each device's label mix as far as stock allows."""
    d = _digits(data_seed)
    X, y = d.X_train, d.y_train
    m = np.asarray(problem.data_sizes).round().astype(int)
    if m.sum() > y.size:
        X, y = shift_augment(X, y)
    if m.sum() > y.size:
        raise ValidationError("data.total", f"must be <= the training pool ({y.size} with "
                                            f"shift augmentation), got {int(m.sum())}")
    rng = np.random.default_rng(data_seed)
    perm = rng.permutation(y.size)
    alpha = problem.data.device_label_dirichlet
    devices = np.flatnonzero(problem.exits == 1)
    parts: list[np.ndarray] = [np.empty(0, int)] * m.size
    if alpha is None:
        for n, chunk in enumerate(np.split(perm[:m.sum()], np.cumsum(m)[:-1])):
            parts[n] = np.sort(chunk)
    else:
        others = np.flatnonzero(problem.exits != 1)
        start = 0
        for n in others:
            parts[n] = np.sort(perm[start:start + m[n]])
            start += m[n]
        pool = perm[start:start + m[devices].sum()]
        dev_parts = dirichlet_partition(y[pool], devices.size, alpha,
                                        weights=m[devices].astype(float), rng=rng)
        for n, idx in zip(devices, dev_parts, strict=True):
            parts[n] = np.sort(pool[idx])
    test_points = None
    k = problem.data.test_points_per_device
    if k is not None:
        test_points = _test_slices(y, parts, devices, d.y_test, int(k), d.n_classes, rng)
    return EarlyExitData(X, y, tuple(parts), d.X_test, d.y_test, test_points, d.n_classes)


def _test_slices(y, parts, devices, y_test, k, n_classes, rng) -> dict[int, np.ndarray]:
    if k * devices.size > y_test.size:
        raise ValidationError("data.test_points_per_device",
                              f"needs {k * devices.size} test points, only {y_test.size} exist")
    dist = label_distribution(y, [parts[n] for n in devices], n_classes)
    stock = [list(rng.permutation(np.flatnonzero(y_test == c))) for c in range(n_classes)]
    out = {}
    for row, n in enumerate(devices):
        want = np.floor(dist[row] * k).astype(int)
        rest = np.argsort(-(dist[row] * k - want), kind="stable")
        want[rest[:k - want.sum()]] += 1
        pts = []
        for c in range(n_classes):
            take = min(want[c], len(stock[c]))
            pts += [stock[c].pop() for _ in range(take)]
        while len(pts) < k:  # stock of a label ran out: fill with the most stocked label
            c = int(np.argmax([len(s) for s in stock]))
            pts.append(stock[c].pop())
        out[int(n)] = np.sort(np.asarray(pts, dtype=int))
    return out


# -- models ----------------------------------------------------------------------------------
def build_model(kind: str = "cnn", n_exits: int = 3, seed: int = 0, n_classes: int = 10,
                widths: tuple[int, ...] = (32, 64, 128),
                head_inputs: tuple[int, ...] | None = (4, 16)):
    """``DigitsEE`` (``"cnn"``, 3 exits) or ``DigitsEE-MLP`` (``"mlp"``, 1..3 exits) [project
    choice]. The MLP has hidden layers of ``widths``; the head of exit ``e < E``
    reads only the first ``head_inputs[e-1]`` features of block e (the design's "narrow the
    shallow head": with full-width heads every exit of an MLP on digits scores alike, so
    the sanity gate fails). The initialisation depends only on ``seed``."""
    import torch
    from torch import nn

    from jointopt.harness.nets import BlockNet

    torch.manual_seed(seed)
    if kind == "mlp":
        if not 1 <= n_exits <= len(widths):
            raise ValidationError("n_exits", f"must be 1..{len(widths)} for DigitsEE-MLP, "
                                             f"got {n_exits}")
        dims = (64, *tuple(widths)[:n_exits])
        blocks: list[nn.Module] = [nn.Sequential(nn.Linear(dims[i], dims[i + 1]), nn.ReLU())
                                   for i in range(n_exits)]
        blocks.append(nn.Linear(dims[-1], n_classes))
        heads = {}
        for e in range(1, n_exits):
            k = dims[e] if head_inputs is None else min(int(head_inputs[e - 1]), dims[e])
            heads[e] = nn.Sequential(_Narrow(k), nn.Linear(k, n_classes))
        return BlockNet(blocks, heads)
    if kind != "cnn" or n_exits != 3:
        raise ValidationError("config.model", f"DigitsEE ('cnn') has 3 exits; got {kind!r} "
                                              f"with {n_exits}")

    def pooled_head(size, channels):
        return nn.Sequential(nn.AdaptiveAvgPool2d(size), nn.Flatten(),
                             nn.Linear(channels * size * size, n_classes))

    blocks = [nn.Sequential(_Image(), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU()),
              nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
              nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
              pooled_head(1, 64)]
    return BlockNet(blocks, {1: pooled_head(2, 16), 2: pooled_head(1, 32)})


def _module_classes():
    from torch import nn

    class Narrow(nn.Module):
        """The first ``k`` features."""

        def __init__(self, k: int):
            super().__init__()
            self.k = k

        def forward(self, x):
            return x[..., :self.k]

    class Image(nn.Module):
        """Flat 64 pixels -> a 1x8x8 image."""

        def forward(self, x):
            return x.reshape(x.shape[0], 1, 8, 8)

    return Narrow, Image


def _Narrow(k):
    return _module_classes()[0](k)


def _Image():
    return _module_classes()[1]()


def parameter_groups(net) -> dict[str, frozenset[int]]:
    """``g -> X(g)`` of a :class:`BlockNet` with ``E`` exits (heads after blocks
    ``1..E-1``, the last block the final head): ``blocks.i`` (i < E) is block ``i+1``, used
    by exits ``>= i+1``; ``blocks.E`` and ``heads.e`` are heads [project choice]."""
    n_exits = len(net.blocks) - 1
    if net.exit_points != list(range(1, n_exits)):
        raise ValidationError("model", f"needs exit heads after blocks 1..{n_exits - 1}, has "
                                       f"{net.exit_points}")
    blocks, heads = {}, {}
    for name, _ in net.named_parameters():
        kind, idx = name.split(".")[:2]
        if kind == "heads":
            heads[name] = int(idx)
        elif int(idx) == n_exits:
            heads[name] = n_exits
        else:
            blocks[name] = int(idx) + 1
    return exit_sets(n_exits, blocks, heads)


def local_batches(sizes: np.ndarray, steps: int, batch_size: int,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """Per node, ``(steps, min(B, m_n))`` positions into its data: reshuffled passes over
    the node's samples, restarted every round [project choice]."""
    out = []
    for m in np.asarray(sizes, dtype=int):
        b = min(batch_size, m)
        need = steps * b
        passes = -(-need // m)
        stream = np.concatenate([rng.permutation(m) for _ in range(passes)])
        out.append(stream[:need].reshape(steps, b))
    return out


# -- training --------------------------------------------------------------------------------
@dataclass
class EarlyExitRun:
    """One training run: the final global ``params`` (numpy), the weights used (first and
    last round), the serving ``outcome`` and a tidy ``summary`` row."""

    rule: str
    seed: int
    weights_first: np.ndarray
    weights_last: np.ndarray
    params: dict[str, np.ndarray] = field(repr=False)
    outcome: ServingOutcome = field(repr=False)
    train_loss: np.ndarray = field(repr=False)
    wall_s: float = 0.0

    @property
    def system_accuracy(self) -> float:
        return self.outcome.system_accuracy

    def summary(self) -> dict:
        row = {"rule": self.rule, "seed": self.seed, **self.outcome.summary(),
               "wall_s": self.wall_s}
        for e, (w0, w1) in enumerate(zip(self.weights_first, self.weights_last, strict=True),
                                     start=1):
            row[f"w{e}"] = float(w0)
            row[f"w{e}_last"] = float(w1)
        return row


def with_training(problem, **changes):
    """A copy of ``problem`` with fields of its ``[training]`` section changed (``rounds``,
    ``sigma2``, ``flops``, ``pi``, ...)."""
    training = {**problem.training.model_dump(), **changes}
    return problem.from_dict({**problem.to_dict(), "training": training})


def mlp_costs(n_exits: int = 3, widths=(32, 64, 128), head_inputs=(4, 16), n_in: int = 64,
              n_classes: int = 10) -> np.ndarray:
    """``C_e`` of DigitsEE-MLP: multiply-accumulates of the linear layers from the input to
    exit e's logits (blocks up to e plus head e) [project choice]."""
    dims = (n_in, *tuple(widths)[:n_exits])
    blocks = np.cumsum([dims[i] * dims[i + 1] for i in range(n_exits)]).astype(float)
    heads = [min(int(head_inputs[e - 1]), dims[e]) * n_classes for e in range(1, n_exits)]
    return blocks + np.asarray([*heads, dims[n_exits] * n_classes], dtype=float)


def _weights_fn(problem, rule: str, weights, rounds: int, cfg: EarlyExitConfig | None = None):
    if weights is not None:
        w = np.asarray(weights, dtype=float)
        if w.shape != (problem.E,) or (w < 0).any() or abs(w.sum() - 1) > 1e-9:
            raise ValidationError("weights", f"must be {problem.E} non-negative numbers summing "
                                             f"to 1, got {w.tolist()}")
        return lambda t: w
    if rule == "flops":
        changes = {}
        if problem.training.rounds != rounds:
            changes["rounds"] = rounds
        if cfg is not None and cfg.model == "mlp" and problem.training.flops is None:
            changes["flops"] = mlp_costs(problem.E, cfg.widths, cfg.head_inputs).tolist()
        p = with_training(problem, **changes) if changes else problem
        return lambda t: p.exit_weights("flops", t=t)
    w = problem.exit_weights(rule)
    return lambda t: w


def estimate_sigma2(problem, *, config: EarlyExitConfig | None = None, seed: int = 0,
                    data: EarlyExitData | None = None, draws: int = 20) -> np.ndarray:
    """Per-exit gradient variance ``sigma_e^2`` at the initial model of ``seed`` [project
    choice]: ``draws`` minibatches of size B from the pooled data of exit e's
    potential trainers (every sample equally likely, i.e. nodes in proportion to m_n), the
    gradient of exit e's loss restricted to its sub-model, the per-coordinate variance over
    the draws averaged over coordinates. Feed it back with
    ``with_training(problem, sigma2=...)`` for the variance-based rules."""
    import torch
    import torch.nn.functional as F

    cfg = config or EarlyExitConfig()
    data = data or partition(problem, cfg.data_seed)
    rng = np.random.default_rng([seed, 3])
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        net = build_model(cfg.model, problem.E, seed, data.n_classes, cfg.widths,
                          cfg.head_inputs)
        groups = parameter_groups(net)
        X = torch.from_numpy(np.ascontiguousarray(data.X, dtype=np.float32))
        y = torch.from_numpy(data.y.astype(np.int64))
        out = np.zeros(problem.E)
        for e in range(1, problem.E + 1):
            trainers = np.flatnonzero(problem.data_weight[:, e - 1] > 0)
            pool = np.concatenate([data.parts[n] for n in trainers])
            params = [v for k, v in net.named_parameters() if e in groups[k]]
            grads = []
            for _ in range(draws):
                idx = torch.from_numpy(rng.choice(pool, size=min(cfg.batch_size, pool.size),
                                                  replace=False))
                loss = F.cross_entropy(net.exits(X[idx])[e - 1], y[idx])
                g = torch.autograd.grad(loss, params)
                grads.append(torch.cat([t.reshape(-1) for t in g]).numpy().astype(np.float64))
            out[e - 1] = float(np.var(np.stack(grads), axis=0, ddof=1).mean())
    finally:
        torch.set_num_threads(old_threads)
    return out


def train(problem, rule: str = "serving_rate", *, seed: int = 0,
          config: EarlyExitConfig | None = None, weights=None,
          data: EarlyExitData | None = None, rounds_hook=None) -> EarlyExitRun:
    """Train the early-exit network federatedly on ``problem``'s tree and score it.

    ``rule``: a method of :class:`~jointopt.solvers.cis.CooperativeInferenceProblem`
    (``serving_rate``, ``equal``, ``flops`` (per round), ``balanced``, ``convex``, ...);
    ``weights`` overrides it with a fixed vector. ``data``: a partition to reuse
    (:func:`partition`). ``rounds_hook(t, global_params, local_params, assignment)`` is called
    after each aggregation (tests). Same problem, rule, seed and config: same numbers.
    """
    import torch

    from jointopt.solvers.cis import aggregate

    cfg = config or EarlyExitConfig()
    data = data or partition(problem, cfg.data_seed)
    if len(data.parts) != problem.n_nodes:
        raise ValidationError("data", f"has {len(data.parts)} parts for {problem.n_nodes} nodes")
    weights_at = _weights_fn(problem, rule, weights, cfg.rounds, cfg)
    label = rule if weights is None else "fixed"
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    try:
        net = build_model(cfg.model, problem.E, seed, data.n_classes, cfg.widths,
                          cfg.head_inputs)
        groups = parameter_groups(net)
        state = _train_loop(net, groups, problem, data, cfg, weights_at, seed, aggregate,
                            rounds_hook)
        logits = _exit_logits(net, state["params"], data.X_test)
    finally:
        torch.set_num_threads(old_threads)
    outcome = evaluate_logits(problem.serving_tree, logits, data.y_test,
                              test_points=data.test_points, kind=cfg.uncertainty)
    params = {k: v.detach().numpy().copy() for k, v in state["params"].items()}
    return EarlyExitRun(label, seed, np.asarray(weights_at(0)),
                        np.asarray(weights_at(cfg.rounds - 1)), params, outcome,
                        np.asarray(state["loss"]), time.perf_counter() - start)


def _all_exits(net):
    """A module whose forward returns the logits of every exit stacked, ``(E, B, C)``,
    and a function ``f(params, x)`` calling it with a parameter dict of ``net``."""
    import torch
    from torch.func import functional_call

    class AllExits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return torch.stack(self.inner.exits(x))

    wrapper = AllExits(net)

    def call(params, x):
        return functional_call(wrapper, {f"inner.{k}": v for k, v in params.items()}, (x,))

    return call


def _stacked_forward(net, kind: str):
    """``f(params, x) -> (m, E, B, C)``: every exit's logits for m stacked copies of the
    parameters (``params[k]`` of shape ``(m, *shape)``), copy i on batch ``x[i]``. The MLP
    uses batched matrix products directly; other models ``torch.func.vmap``."""
    import torch
    from torch.func import vmap

    if kind != "mlp":
        return vmap(_all_exits(net))
    n_exits = len(net.blocks) - 1

    def linear(params, key, h):
        return torch.baddbmm(params[f"{key}.bias"].unsqueeze(1), h,
                             params[f"{key}.weight"].transpose(1, 2))

    narrow = [net.head(e)[0].k for e in range(1, n_exits)]

    def forward(params, x):
        h, outs = x, []
        for i in range(n_exits):
            h = torch.relu(linear(params, f"blocks.{i}.0", h))
            if i + 1 < n_exits:
                outs.append(linear(params, f"heads.{i + 1}.1", h[..., :narrow[i]]))
            else:
                outs.append(linear(params, f"blocks.{n_exits}", h))
        return torch.stack(outs, dim=1)

    return forward


class _Layout:
    """Parameters of a model as one flat vector per stacked copy: ``(m, P)``."""

    def __init__(self, params, groups):
        self.keys = list(params)
        self.shapes = [tuple(params[k].shape) for k in self.keys]
        sizes = [int(np.prod(sh)) for sh in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.groups = [groups[k] for k in self.keys]

    def flat(self, params):
        import torch

        return torch.cat([params[k].detach().reshape(-1) for k in self.keys])

    def views(self, W):
        m = W.shape[0]
        return {k: W[:, o:o_end].view(m, *sh) for k, sh, o, o_end
                in zip(self.keys, self.shapes, self.offsets[:-1], self.offsets[1:], strict=True)}

    def mask(self, assignment):
        """``(m, P)`` bool: coordinates inside the sub-model of each row's exit."""
        import torch

        out = np.zeros((len(assignment), int(self.offsets[-1])), dtype=bool)
        for g, o, o_end in zip(self.groups, self.offsets[:-1], self.offsets[1:], strict=True):
            out[:, o:o_end] = np.isin(assignment, list(g))[:, None]
        return torch.from_numpy(out)


def _train_loop(net, groups, problem, data, cfg, weights_at, seed, aggregate, hook):
    import torch
    import torch.nn.functional as F

    X = torch.from_numpy(np.ascontiguousarray(data.X, dtype=np.float32))
    y = torch.from_numpy(data.y.astype(np.int64))
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    layout = _Layout(params, groups)
    forward = _stacked_forward(net, cfg.model)
    sizes = data.sizes
    rng_assign = np.random.default_rng([seed, 1])
    rng_batch = np.random.default_rng([seed, 2])
    q, p = problem.data_weight, problem.participation
    losses = []
    for t in range(cfg.rounds):
        a = sample_assignment(problem.exits, problem.pi, rng_assign, nu=problem.training.nu)
        active = np.flatnonzero((a > 0) & (sizes > 0))
        a_act = a[active]
        lr = cfg.learning_rate(t)
        locals_: list[dict | None] = [None] * problem.n_nodes
        if active.size:
            W, loss = _local_sgd(layout, layout.flat(params), forward, X, y, data.parts,
                                 active, a_act, sizes, cfg, lr, rng_batch, F)
            losses.append(loss)
            views = layout.views(W)
            for row, n in enumerate(active):
                locals_[n] = {k: v[row] for k, v in views.items()}
        a_eff = np.zeros_like(a)
        a_eff[active] = a_act
        params = aggregate(params, locals_, a_eff, weights_at(t), q, p, groups,
                           weighting=cfg.weighting, block_normalize=cfg.block_normalize,
                           server_lr=cfg.server_lr)
        if hook is not None:
            hook(t, params, locals_, a_eff)
    return {"params": params, "loss": losses}


def _local_sgd(layout, w0, forward, X, y, parts, active, a_act, sizes, cfg, lr, rng, F):
    """K steps of every active node at once from ``w0`` (flat). SGD with momentum and weight
    decay, masked to the coordinates of the node's assigned exit (the others stay bitwise
    equal). Returns the stacked local models ``(m, P)`` and the mean training loss."""
    import torch

    m = active.size
    W = w0.unsqueeze(0).expand(m, -1).clone()
    del w0
    mask = layout.mask(a_act)
    buf = torch.zeros_like(W)
    batches = local_batches(sizes[active], cfg.local_steps, cfg.batch_size, rng)
    B = max(b.shape[1] for b in batches)
    idx = np.zeros((cfg.local_steps, m, B), dtype=np.int64)
    valid = np.zeros((m, B), dtype=np.float32)
    for row, (n, b) in enumerate(zip(active, batches, strict=True)):
        idx[:, row, :b.shape[1]] = parts[n][b]
        valid[row, :b.shape[1]] = 1.0
    idx_t = torch.from_numpy(idx)
    valid_t = torch.from_numpy(valid)
    count = valid_t.sum(dim=1)
    sel = torch.from_numpy(a_act - 1).reshape(m, 1, 1, 1)
    total = 0.0
    for step in range(cfg.local_steps):
        W.requires_grad_(True)
        xb, yb = X[idx_t[step]], y[idx_t[step]]
        out = forward(layout.views(W), xb)                      # (m, E, B, C)
        logits = out.gather(1, sel.expand(m, 1, *out.shape[2:])).squeeze(1)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                             reduction="none").reshape(m, B)
        per_node = (ce * valid_t).sum(dim=1) / count
        (grad,) = torch.autograd.grad(per_node.sum(), W)
        total += float(per_node.detach().mean())
        with torch.no_grad():
            W = W.detach()
            g = grad + cfg.weight_decay * W
            buf = torch.where(mask, cfg.momentum * buf + g, buf)
            W = torch.where(mask, W - lr * buf, W)
    return W.detach(), total / cfg.local_steps


def _exit_logits(net, params, X_test) -> np.ndarray:
    """``(E, X, C)`` logits of every exit of the model ``params`` on the test set."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(X_test, dtype=np.float32))
    with torch.no_grad():
        out = _all_exits(net)(params, x)
    return out.numpy().astype(np.float64)


def with_config(config: EarlyExitConfig, **changes) -> EarlyExitConfig:
    """A copy of ``config`` with ``changes``."""
    return replace(config, **changes)


__all__ = ["FAST", "EarlyExitConfig", "EarlyExitData", "EarlyExitRun", "build_model",
           "estimate_sigma2", "local_batches", "mlp_costs", "parameter_groups", "partition",
           "shift_augment", "train", "with_config", "with_training"]
