"""SplitGP training on the digits and the three baselines, with entropy-based offloading.

Documented in ``docs/kinds/split_learning.md``. Source system: Han et al., "SplitGP", INFOCOM 2023.
Provenance: the two-exit loss, full averaging of the server part, lambda-mixing of the client
side, natural-log entropy with the strict rule ``H > E_th`` and the test mixtures built from
``p`` are **[follow-up code]**; the digits scaling, the network, the schedule, the
local-only stand-in for the personalized baseline and the vectorised execution are
**[project choice]**. Importing this module imports torch: only the harness does, only
when called.

Training. One network (:func:`jointopt.harness.nets.digits_cnn` or the
``DigitsSplitMLP`` built by :func:`jointopt.harness.nets.mlp`) with one exit head after
block ``cut`` is initialized once (seeded); every client starts from the same copy. In round
``t`` every client ``k`` copies the server part ``theta``, runs ``local_epochs`` epochs of
seeded mini-batches over its shard and takes plain SGD steps on
``gamma CE(kappa_k(h), y) + (1 - gamma) CE(theta_k(h), y)`` with ``h = phi_k(x)``;
then ``theta <- sum_k alpha_k theta_k`` and ``phi_k <- lam phi_k + (1 - lam) phi-bar``
(same for ``kappa_k``, :func:`jointopt.models.split.mix_client_sides`). All clients run at
once: their parameters are stacked (leading axis K) and the forward pass uses batched
matmuls and grouped convolutions (``torch.func.vmap`` over ``functional_call`` for any other
layer; the two agree, tested); a client whose shard is used up pads its batch with
zero-weight samples (zero gradient, so plain SGD leaves it unchanged), which is exactly the
sequential algorithm. The single-graph gradients equal the detach-and-inject reference
(:func:`detach_inject_grads`, tested).

The four methods (:data:`METHODS`) share network, data, seeds and schedule:

==============  ======================================================  ==================
method          training                                                inference
==============  ======================================================  ==================
``local``       full network on the client's shard alone (no            on device
                communication: gamma 0, lambda 1, theta not averaged)
``fedavg``      full network, alpha-weighted averaging of everything    on device
                every round (gamma 0, lambda 0)
``multi_exit``  SplitGP with lambda 0                                   selective offload
``splitgp``     SplitGP (gamma 0.5, lambda 0.2 by default)              selective offload
==============  ======================================================  ==================

Evaluation. Client ``k``'s test mixture holds every test sample with a label in
its main classes (``N_main``) and the first ``round(p N_main)`` entries of a seeded
permutation of the other test samples (OOD sets nested in ``p``); validation mixtures the
same from the validation split. Every client model is evaluated once on the whole split,
so any ``(p, E_th)`` is an indexing operation. ``Acc(p)`` is the unweighted mean over
clients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from jointopt.harness.data import DigitsData, load_digits_data, shard_partition
from jointopt.harness.nets import BlockNet, digits_cnn, mlp
from jointopt.models import split as sm

P_GRID = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
LAMBDA_GRID = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

#: method -> overrides of the training config and the inference mode (the table above).
METHODS: dict[str, dict] = {
    "local": {"gamma": 0.0, "lam": 1.0, "average_server": False, "inference": "device"},
    "fedavg": {"gamma": 0.0, "lam": 0.0, "average_server": True, "inference": "device"},
    "multi_exit": {"lam": 0.0, "average_server": True, "inference": "offload"},
    "splitgp": {"average_server": True, "inference": "offload"},
}
METHOD_LABELS = {"local": "Personalized (local-only)", "fedavg": "FedAvg",
                 "multi_exit": "Multi-exit (lambda 0)", "splitgp": "SplitGP"}


@dataclass(frozen=True)
class SplitTrainConfig:
    """Training and data settings (``rounds`` is 200 for the measured runs; the
    ``quick`` profile uses 5)."""

    arch: str = "cnn"            # "cnn" (DigitsSplitCNN, cuts 1..5) or "mlp" (cuts 1..3)
    cut: int = 2
    gamma: float = 0.5           # client-exit loss weight [follow-up code]
    lam: float = 0.2             # personalization weight of the mixing [follow-up code]
    lr: float = 0.1
    batch_size: int = 10
    local_epochs: int = 1
    rounds: int = 200
    n_clients: int = 10
    shards_per_client: int = 2
    partition: str = "class_aligned"
    seed: int = 0
    dtype: str = "float32"       # "float64" for the identity tests
    threads: int = 1

    @classmethod
    def quick(cls, **kw) -> SplitTrainConfig:
        return cls(**{"rounds": 5, **kw})

    def __post_init__(self):
        n_blocks = {"cnn": 6, "mlp": 4}.get(self.arch)
        if n_blocks is None:
            raise ValueError(f"arch must be 'cnn' or 'mlp', got {self.arch!r}")
        if not 1 <= self.cut <= n_blocks - 1:
            raise ValueError(f"cut must lie in 1..{n_blocks - 1} for arch {self.arch!r}, "
                             f"got {self.cut}")
        for name in ("gamma", "lam"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("lr", "batch_size", "local_epochs", "n_clients", "threads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return {"float32": torch.float32, "float64": torch.float64}[self.dtype]

    def layered(self, n_classes: int = 10) -> sm.LayeredNetwork:
        """The analytic accounting of the same network (``models.split``)."""
        return sm.digits_cnn(n_classes) if self.arch == "cnn" else sm.digits_mlp(n_classes)


def build_net(arch: str, cut: int, n_classes: int = 10, seed: int | None = 0) -> BlockNet:
    """``DigitsSplitCNN`` or ``DigitsSplitMLP`` with the client exit after ``cut``."""
    if arch == "cnn":
        return digits_cnn(n_classes, exits=(cut,), seed=seed)
    return mlp(64, hidden=(128, 128, 64), n_classes=n_classes, exits=(cut,), seed=seed)


class TwoExit(nn.Module):
    """``x -> (client-exit logits, server-exit logits)`` of a :class:`BlockNet` cut at ``cut``."""

    def __init__(self, net: BlockNet, cut: int):
        super().__init__()
        self.net = net
        self.cut = cut

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net.client(x, self.cut)
        return self.net.head(self.cut)(h), self.net.server(h, self.cut)

    def stacked(self, P: dict[str, torch.Tensor], X: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both exits of ``K`` stacked copies ``P`` on their own batches ``X (K, B, ...)``:
        batched matmuls and grouped convolutions (same numbers as ``vmap`` over
        ``functional_call``, without its per-call overhead)."""
        h = X
        for i in range(self.cut):
            h = _stacked(self.net.blocks[i], f"net.blocks.{i}.", P, h)
        zc = _stacked(self.net.head(self.cut), f"net.heads.{self.cut}.", P, h)
        for i in range(self.cut, self.net.depth):
            h = _stacked(self.net.blocks[i], f"net.blocks.{i}.", P, h)
        return zc, h

    @property
    def fast(self) -> bool:
        """Whether every layer has a stacked implementation (else ``vmap`` is used)."""
        return all(isinstance(m, _STACKABLE) or _per_sample(m) for m in self.modules())

    def is_client(self, name: str) -> bool:
        """Parameter ``name`` belongs to the client side (blocks ``1..cut`` and the exit)."""
        parts = name.split(".")
        if parts[1] == "heads":
            return True
        return int(parts[2]) < self.cut


# -- stacked layers ------------------------------------------------------------------------------

_PER_SAMPLE = (nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)


def _per_sample(module: nn.Module) -> bool:
    return isinstance(module, _PER_SAMPLE) or type(module).__name__ == "_Reshape"


_STACKABLE = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Linear, nn.Conv2d, BlockNet,
              TwoExit, *_PER_SAMPLE)


def _stacked(module: nn.Module, prefix: str, P: dict[str, torch.Tensor],
             x: torch.Tensor) -> torch.Tensor:
    """Apply ``module`` with stacked parameters ``P[prefix + name]`` (leading axis K) to
    ``x (K, B, ...)``."""
    if isinstance(module, nn.Sequential):
        for i, m in enumerate(module):
            x = _stacked(m, f"{prefix}{i}.", P, x)
        return x
    if isinstance(module, nn.Linear):
        out = torch.bmm(x, P[prefix + "weight"].transpose(1, 2))
        if module.bias is not None:
            out = out + P[prefix + "bias"].unsqueeze(1)
        return out
    if isinstance(module, nn.Conv2d):
        K, B = x.shape[:2]
        w = P[prefix + "weight"]
        xin = x.transpose(0, 1).reshape(B, K * x.shape[2], *x.shape[3:])
        bias = P[prefix + "bias"].reshape(-1) if module.bias is not None else None
        out = F.conv2d(xin, w.reshape(-1, *w.shape[2:]), bias, stride=module.stride,
                       padding=module.padding, dilation=module.dilation, groups=K)
        return out.reshape(B, K, -1, *out.shape[2:]).transpose(0, 1)
    if _per_sample(module):
        K, B = x.shape[:2]
        out = module(x.reshape(K * B, *x.shape[2:]))
        return out.reshape(K, B, *out.shape[1:])
    raise NotImplementedError(f"no stacked implementation of {type(module).__name__}")


# -- one step ---------------------------------------------------------------------------------


def stacked_forward(model: TwoExit, P: dict[str, torch.Tensor], X: torch.Tensor,
                    use_vmap: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Both exits of the stacked copies ``P`` on ``X (K, B, ...)``: the stacked layers when
    every layer has one (default), else ``torch.func.vmap`` over ``functional_call``."""
    if use_vmap is None:
        use_vmap = not model.fast
    if not use_vmap:
        return model.stacked(P, X)

    def one(p, x):
        return torch.func.functional_call(model, p, (x,))

    return torch.func.vmap(one)(P, X)


def stacked_losses(model: TwoExit, P: dict[str, torch.Tensor], X: torch.Tensor,
                   y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-client mean cross-entropies ``(loss_C, loss_S)`` (shape ``(K,)``) of the stacked
    copies ``P`` (each entry ``(K, ...)``) on their own batches ``X (K, B, ...)``; samples
    with ``mask == 0`` are padding."""

    zc, zs = stacked_forward(model, P, X)
    K, B, C = zc.shape
    cnt = mask.sum(dim=1).clamp(min=1.0)
    ce_c = F.cross_entropy(zc.reshape(K * B, C), y.reshape(-1), reduction="none").reshape(K, B)
    ce_s = F.cross_entropy(zs.reshape(K * B, C), y.reshape(-1), reduction="none").reshape(K, B)
    return (ce_c * mask).sum(dim=1) / cnt, (ce_s * mask).sum(dim=1) / cnt


def sgd_step(model: TwoExit, P: dict[str, torch.Tensor], X: torch.Tensor, y: torch.Tensor,
             mask: torch.Tensor, gamma: float, lr: float) -> tuple[dict, float, float]:
    """One plain SGD step of every client on ``gamma CE_C + (1 - gamma) CE_S`` (single graph:
    theta gets ``(1 - gamma) grad CE_S``, kappa ``gamma grad CE_C``, phi both). Returns the
    new stacked parameters and the summed client / server losses."""
    leaves = {k: v.detach().requires_grad_(True) for k, v in P.items()}
    lc, ls = stacked_losses(model, leaves, X, y, mask)
    loss = gamma * lc.sum() + (1.0 - gamma) * ls.sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    new = {k: (v - lr * g).detach() for (k, v), g in zip(leaves.items(), grads, strict=True)}
    return new, float(lc.detach().sum()), float(ls.detach().sum())


def detach_inject_grads(net: BlockNet, cut: int, x: torch.Tensor, y: torch.Tensor,
                        gamma: float) -> dict[str, torch.Tensor]:
    """Reference gradients of one client: the server computes ``(1 - gamma)
    grad CE_S`` on the detached activation ``h`` and returns ``g_h``; the client back-propagates
    ``gamma grad CE_C + g_h`` through ``phi`` (``h.backward(g_h)``). Keys as in
    ``TwoExit(net, cut).named_parameters()``."""
    net.zero_grad(set_to_none=True)
    h = net.client(x, cut)
    hd = h.detach().requires_grad_(True)
    ((1.0 - gamma) * F.cross_entropy(net.server(hd, cut), y)).backward()
    g_h = hd.grad
    loss_c = gamma * F.cross_entropy(net.head(cut)(h), y)
    loss_c.backward(retain_graph=True)
    h.backward(g_h)
    out = {}
    for name, p in TwoExit(net, cut).named_parameters():
        out[name] = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
    net.zero_grad(set_to_none=True)
    return out


# -- aggregation ------------------------------------------------------------------------------


def aggregate(P: dict[str, torch.Tensor], client_names: list[str], alpha: np.ndarray,
              lam: float, average_server: bool) -> dict[str, torch.Tensor]:
    """End of a round: ``theta <- sum alpha_k theta_k`` broadcast to every client (when
    ``average_server``), and lambda-mixing of the client side through
    :func:`jointopt.models.split.mix_client_sides` (``lam = 0``: one shared copy)."""
    K = len(alpha)
    out = dict(P)
    server_names = [n for n in P if n not in client_names]
    if average_server:
        w = torch.as_tensor(alpha, dtype=next(iter(P.values())).dtype)
        for n in server_names:
            avg = torch.tensordot(w, P[n], dims=1)
            out[n] = avg.unsqueeze(0).expand(K, *avg.shape).clone()
    if lam < 1.0:
        states = [{n: P[n][k] for n in client_names} for k in range(K)]
        mixed = sm.mix_client_sides(states, alpha, lam)
        for n in client_names:
            out[n] = torch.stack([m[n] for m in mixed])
    return out


# -- a run -------------------------------------------------------------------------------------


@dataclass
class SplitExitRecords:
    """Per-client evaluation of one data split: ``h`` client-exit entropy (nats),
    ``correct_client`` / ``correct_server``, each ``(K, N)``; ``labels (N,)``; ``ood_order[k]``
    the seeded permutation of the samples outside client k's main classes."""

    labels: np.ndarray
    h: np.ndarray
    correct_client: np.ndarray
    correct_server: np.ndarray
    main: list[np.ndarray]
    ood_order: list[np.ndarray]

    def mixture(self, k: int, p: float) -> tuple[np.ndarray, np.ndarray]:
        """(sample indices, OOD flags) of client k's mixture with OOD portion ``p``."""
        main = self.main[k]
        n_ood = int(round(p * main.size))
        if n_ood > self.ood_order[k].size:
            raise ValueError(f"ood_ratio {p:g} needs {n_ood} OOD samples for client {k}, "
                             f"only {self.ood_order[k].size} exist")
        idx = np.concatenate([main, self.ood_order[k][:n_ood]])
        return idx, np.arange(idx.size) >= main.size


@dataclass
class SplitRun:
    """One trained method: configuration, data layout, per-split records and the history."""

    method: str
    config: SplitTrainConfig
    inference: str                       # "device" or "offload"
    main_classes: list[np.ndarray]
    alpha: np.ndarray
    val: SplitExitRecords
    test: SplitExitRecords
    history: pd.DataFrame
    params: dict[str, np.ndarray] = field(repr=False)
    init_params: dict[str, np.ndarray] = field(repr=False)
    client_names: list[str] = field(repr=False)
    n_classes: int = 10

    @property
    def n_clients(self) -> int:
        return len(self.alpha)

    def _split(self, split: str) -> SplitExitRecords:
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        return self.val if split == "val" else self.test

    def records(self, k: int, p: float, split: str = "val") -> dict[str, np.ndarray]:
        """Client k's mixture records in the layout of
        :func:`jointopt.solvers.split.curves_from_records`."""
        r = self._split(split)
        idx, is_ood = r.mixture(k, p)
        return {"h": r.h[k, idx], "is_ood": is_ood, "correct_client": r.correct_client[k, idx],
                "correct_server": r.correct_server[k, idx]}

    def offload_rates(self, p: float, e_th: float, split: str = "test") -> np.ndarray:
        """Per-client measured offload rate ``q^`` (0 for on-device methods)."""
        if self.inference == "device":
            return np.zeros(self.n_clients)
        return np.array([np.mean(sm.offloads(self.records(k, p, split)["h"], e_th))
                         for k in range(self.n_clients)])

    def detection_rates(self, p: float, e_th: float, split: str = "test") -> tuple[float, float]:
        """How well the entropy rule finds the OOD samples: the offload rate among the OOD
        samples and among the main-class samples of the mixtures at ``p`` (mean over
        clients; an ideal detector gives 1 and 0). ``p`` must be > 0."""
        if p <= 0:
            raise ValueError(f"p must be > 0 (the mixture needs OOD samples), got {p}")
        ood, main = [], []
        for k in range(self.n_clients):
            rec = self.records(k, p, split)
            off = sm.offloads(rec["h"], e_th) if self.inference == "offload" \
                else np.zeros(rec["h"].size, bool)
            ood.append(off[rec["is_ood"]].mean())
            main.append(off[~rec["is_ood"]].mean())
        return float(np.mean(ood)), float(np.mean(main))

    def client_accuracy(self, p: float, e_th: float | None = None,
                        split: str = "test") -> np.ndarray:
        """Per-client accuracy on the mixture: on-device methods answer with the full
        network; offloading methods with the client exit when ``H <= E_th``, else the server."""
        out = np.empty(self.n_clients)
        for k in range(self.n_clients):
            rec = self.records(k, p, split)
            if self.inference == "device":
                out[k] = rec["correct_server"].mean()
            else:
                if e_th is None:
                    raise ValueError("an offloading method needs e_th")
                off = sm.offloads(rec["h"], e_th)
                out[k] = np.where(off, rec["correct_server"], rec["correct_client"]).mean()
        return out

    def accuracy(self, p: float, e_th: float | None = None, split: str = "test") -> float:
        """``Acc(p)``: unweighted mean over clients."""
        return float(self.client_accuracy(p, e_th, split).mean())

    def headline_threshold(self, p_grid=P_GRID, e_grid=sm.E_TH_GRID) -> float:
        """the grid threshold maximizing validation accuracy (mean over clients)
        averaged over ``p_grid``; ties to the larger threshold. ``ln C`` for on-device methods."""
        if self.inference == "device":
            return math.log(self.n_classes)
        e_grid = np.asarray(e_grid, float)
        acc = np.array([np.mean([self.accuracy(p, e, "val") for p in p_grid]) for e in e_grid])
        return float(e_grid[np.flatnonzero(acc >= acc.max() - 1e-12)[-1]])

    def solver_records(self, ood_ratio, split: str = "val") -> list[dict]:
        """One record dict per client at its own OOD portion (``ood_ratio`` scalar or per
        client), for :func:`jointopt.solvers.split.curves_from_records`."""
        p = np.broadcast_to(np.asarray(ood_ratio, float), (self.n_clients,))
        return [self.records(k, float(p[k]), split) for k in range(self.n_clients)]

    def table(self, p_grid=P_GRID, e_th: float | None = None,
              link: sm.Link | None = None) -> pd.DataFrame:
        """One row per ``p``: accuracy, offload rate, client-exit-only and server-only
        accuracy; with ``link`` also the model latency at the measured ``q^`` (mean over
        clients). ``e_th`` defaults to :meth:`headline_threshold`."""
        e = self.headline_threshold() if e_th is None else e_th
        net = self.config.layered(self.n_classes)
        rows = []
        for p in p_grid:
            q = self.offload_rates(p, e)
            row = {"method": self.method, "seed": self.config.seed, "cut": self.config.cut,
                   "lam": self.config.lam, "gamma": self.config.gamma, "p": float(p),
                   "e_th": e, "accuracy": self.accuracy(p, e), "q": float(q.mean())}
            if self.inference == "offload":
                row["acc_client_exit"] = self.accuracy(p, math.log(self.n_classes))
                row["acc_server_exit"] = self.accuracy(p, -1.0)
            if link is not None:
                if self.inference == "device":
                    row["latency"] = float(np.mean(sm.latency_device(net, link)))
                else:
                    row["latency"] = float(np.mean(sm.latency_splitgp(net, self.config.cut, q,
                                                                      link)))
            rows.append(row)
        return pd.DataFrame(rows)


def _records(model: TwoExit, P: dict[str, torch.Tensor], X: np.ndarray, y: np.ndarray,
             main: list[np.ndarray], rng_key: tuple, dtype) -> SplitExitRecords:
    K = next(iter(P.values())).shape[0]
    Xt = torch.as_tensor(X, dtype=dtype)
    with torch.no_grad():
        zc, zs = stacked_forward(model, P, Xt.unsqueeze(0).expand(K, *Xt.shape))
    zc, zs = zc.double().numpy(), zs.double().numpy()
    mains, orders = [], []
    for k in range(K):
        is_main = np.isin(y, main[k])
        mains.append(np.flatnonzero(is_main))
        rng = np.random.default_rng([*rng_key, k])
        orders.append(rng.permutation(np.flatnonzero(~is_main)))
    return SplitExitRecords(labels=y, h=sm.entropy(zc, axis=-1),
                            correct_client=zc.argmax(-1) == y[None, :],
                            correct_server=zs.argmax(-1) == y[None, :], main=mains,
                            ood_order=orders)


def method_config(config: SplitTrainConfig, method: str) -> tuple[SplitTrainConfig, bool, str]:
    """The training config of ``method``, whether theta is averaged, and its inference mode."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    spec = dict(METHODS[method])
    average, inference = spec.pop("average_server"), spec.pop("inference")
    return replace(config, **spec), average, inference


def train(config: SplitTrainConfig, method: str = "splitgp", *,
          data: DigitsData | None = None) -> SplitRun:
    """Train ``method`` (see :data:`METHODS`) with ``config`` and evaluate every client on
    the validation and test splits. Deterministic: same config and method, same numbers."""
    cfg, average_server, inference = method_config(config, method)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, method, average_server, inference, data)
    finally:
        torch.set_num_threads(old_threads)


def _train(cfg: SplitTrainConfig, method: str, average_server: bool, inference: str,
           data: DigitsData | None) -> SplitRun:
    dtype = cfg.torch_dtype
    if data is None:
        data = load_digits_data(test_size=0.3, val_size=1.0 / 7.0, seed=cfg.seed)
    C = data.n_classes
    parts = shard_partition(data.y_train, cfg.n_clients, cfg.shards_per_client,
                            mode=cfg.partition, rng=cfg.seed)
    main = [np.unique(data.y_train[p]) for p in parts]
    sizes = np.array([len(p) for p in parts], dtype=float)
    alpha = sizes / sizes.sum()
    K, B = cfg.n_clients, cfg.batch_size

    net = build_net(cfg.arch, cfg.cut, C, seed=cfg.seed).to(dtype)
    model = TwoExit(net, cfg.cut)
    names = [n for n, _ in model.named_parameters()]
    client_names = [n for n in names if model.is_client(n)]
    P = {n: p.detach().unsqueeze(0).expand(K, *p.shape).clone()
         for n, p in model.named_parameters()}
    init = {n: v[0].numpy().copy() for n, v in P.items()}

    X = torch.as_tensor(data.X_train, dtype=dtype)
    y = torch.as_tensor(data.y_train)
    rng = np.random.default_rng([cfg.seed, 7])
    n_steps = int(math.ceil(sizes.max() / B))
    hist = []
    for t in range(cfg.rounds):
        loss_c = loss_s = 0.0
        for _ in range(cfg.local_epochs):
            perms = [rng.permutation(p) for p in parts]
            for j in range(n_steps):
                idx = np.zeros((K, B), dtype=np.int64)
                mask = np.zeros((K, B))
                for k, perm in enumerate(perms):
                    chunk = perm[j * B:(j + 1) * B]
                    idx[k, :chunk.size] = chunk
                    mask[k, :chunk.size] = 1.0
                if not mask.any():
                    continue
                it = torch.from_numpy(idx)
                P, lc, ls = sgd_step(model, P, X[it], y[it], torch.as_tensor(mask, dtype=dtype),
                                     cfg.gamma, cfg.lr)
                loss_c += lc
                loss_s += ls
        P = aggregate(P, client_names, alpha, cfg.lam, average_server)
        hist.append({"round": t + 1, "loss_client": loss_c / (K * n_steps * cfg.local_epochs),
                     "loss_server": loss_s / (K * n_steps * cfg.local_epochs)})

    val = _records(model, P, data.X_val, data.y_val, main, (cfg.seed, 1), dtype)
    test = _records(model, P, data.X_test, data.y_test, main, (cfg.seed, 2), dtype)
    return SplitRun(method=method, config=cfg, inference=inference, main_classes=main,
                    alpha=alpha, val=val, test=test,
                    history=pd.DataFrame(hist, columns=["round", "loss_client", "loss_server"]),
                    params={n: v.numpy().copy() for n, v in P.items()}, init_params=init,
                    client_names=client_names, n_classes=C)


def train_methods(config: SplitTrainConfig, methods=tuple(METHODS), *,
                  data: DigitsData | None = None) -> dict[str, SplitRun]:
    """Every method of ``methods`` with the same config, data and seed."""
    if data is None:
        data = load_digits_data(test_size=0.3, val_size=1.0 / 7.0, seed=config.seed)
    return {m: train(config, m, data=data) for m in methods}


def accuracy_frame(runs, p_grid=P_GRID, link: sm.Link | None = None) -> pd.DataFrame:
    """Tidy rows (method, seed, p, accuracy, q, ...) of many runs at their headline
    thresholds."""
    return pd.concat([r.table(p_grid, link=link) for r in runs], ignore_index=True)


def compare(frame: pd.DataFrame, proposed: str = "splitgp", tol: float = 0.0) -> pd.DataFrame:
    """Mean (and std) accuracy over seeds per method and ``p``, and whether ``proposed`` is at
    or above every other method at each ``p`` (within ``tol``), as measured."""
    g = frame.groupby(["p", "method"])["accuracy"]
    wide = g.mean().unstack("method")
    std = g.std(ddof=0).unstack("method").add_suffix("_std")
    others = [m for m in wide.columns if m != proposed]
    out = pd.concat([wide, std], axis=1)
    out[f"{proposed}_at_or_above_all"] = (wide[proposed].to_numpy()[:, None]
                                          >= wide[others].to_numpy() - tol).all(axis=1)
    return out.reset_index()


def split_problem(n_clients: int, cuts, ood_ratio=None, *, preset: str = "digits_cnn",
                  latency_budget=None, scenario: str = "split_default"):
    """The built-in split scenario resized to ``n_clients`` (client fields tiled cyclically)
    with network ``preset`` and candidate cuts ``cuts``: the problem the measured curves plug
    into (its synthetic ``[entropy]`` section is dropped). ``ood_ratio`` and
    ``latency_budget`` (scalar or per client) override the scenario's."""
    from jointopt.scenarios import from_dict, read_scenario

    data = read_scenario(scenario)
    clients = {}
    for key, value in data["clients"].items():
        if key == "count":
            continue
        clients[key] = (list(np.resize(np.asarray(value, float), n_clients))
                        if isinstance(value, list) else value)
    if ood_ratio is not None:
        clients["ood_ratio"] = list(np.broadcast_to(np.asarray(ood_ratio, float), (n_clients,)))
    if latency_budget is not None:
        clients["latency_budget"] = list(np.broadcast_to(np.asarray(latency_budget, float),
                                                         (n_clients,)))
    clients["count"] = n_clients
    data["clients"] = clients
    data["network"] = {**data.get("network", {}), "preset": preset,
                       "cuts": [int(s) for s in cuts]}
    data.pop("entropy", None)
    return from_dict(data)


def measured_curves(runs_by_cut: dict[int, SplitRun], ood_ratio, split: str = "val"):
    """``{cut: [OffloadCurve per client]}`` from runs trained at each cut, for
    ``SplitProblem.solve(curves=...)`` (records of the validation mixtures)."""
    from jointopt.solvers.split import curves_from_records

    some = next(iter(runs_by_cut.values()))
    records = {int(s): run.solver_records(ood_ratio, split) for s, run in runs_by_cut.items()}
    return curves_from_records(records, ood_ratio, some.n_classes)


# -- figures -----------------------------------------------------------------------------------


def plot_accuracy_vs_p(frame: pd.DataFrame, ax=None, by: str = "method", labels=None,
                       title: str | None = None):
    """Mean accuracy over seeds vs ``p``, one curve per value of ``by``, +-1 std bands."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    for key, g in frame.groupby(by, sort=False):
        stats = g.groupby("p")["accuracy"].agg(["mean", "std"]).fillna(0.0)
        label = (labels or {}).get(key, METHOD_LABELS.get(key, f"{by} = {key}"))
        line, = ax.plot(stats.index, stats["mean"], marker="o", label=label)
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                        color=line.get_color(), alpha=0.15)
    ax.set_xlabel("OOD portion p (#OOD / #main)")
    ax.set_ylabel("test accuracy (mean over clients)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax
