"""Real federated training and serving, driven by the surrogate's policies (PyTorch).

Provenance: **project choice** (``docs/kinds/joint_training_inference.md``). One round ``t``
mirrors :func:`jointopt.surrogate.simulate` step by step, with real models in place of the
analytical ones:

1. the policy sees ``Observation(t, K_t, held errors, ages)`` and returns ``(q, d, mu)``;
   ``K_t`` is the measured global training loss ``F(w_t) = sum_n p_n F_n(w_t)`` (the gap
   to the cross-entropy's lower bound 0), a held copy's error is the ``K`` of the version it
   holds;
2. participation ``B_n ~ Bernoulli(q_n)`` and downloads ``D_n ~ Bernoulli(d_n)``;
3. every participant runs ``local_steps`` minibatch SGD steps from ``w_t`` on its own
   shard (all participants at once: stacked parameters, ``torch.func.vmap``), and the
   server aggregates without bias, ``w_{t+1} = w_t + eta_s sum_n p_n (B_n / q_n)
   (w_n - w_t)`` (:func:`aggregate_unbiased`; its expectation over the draws is full
   participation's ``w_t + eta_s sum_n p_n (w_n - w_t)``);
4. a refreshed client (``D_n``, or ``B_n or D_n`` in mode ``download_or_train``) now holds
   ``w_{t+1}``; the others keep their copy, however stale;
5. requests arrive as a Poisson process of rate ``lambda_n`` over the slot, each is a test
   sample drawn from the client's own label distribution (that of its training shard),
   waits in the client's FIFO queue served at rate ``mu_n`` (exponential service; the
   queue carries over between rounds, Lindley recursion), is on time when its sojourn is
   within ``tau_n`` and correct when the held copy classifies it right.

Serving draws (``HarnessConfig.serving_draws = R``): after the round's training the held
copies answer ``R`` independent request streams, each with its own queue carried over
between rounds and its own generator. Stream 0 is the run's own (the generator it always
had: ``R = 1`` is the single-stream run, number for number) and it alone is what the policy
observes (:class:`~jointopt.closed_loop.Feedback`); the others are measurement only. The
table's ``requests``, ``on_time``, ``correct`` and ``timely_accuracy`` and the summary's
``avg_timely_accuracy`` pool every stream (correct answers over requests, all streams
together): the training happens once, and the measured timely accuracy of that one
trajectory carries ``R`` times less Monte-Carlo variance from the sampled requests.

Drifting data (the problem's ``[drift]`` section, :class:`~jointopt.models.drift.LabelDrift`):
each client's label mix is rotated round by round (``drift.window`` confines the mixes to a
window of neighbouring labels, so that the population's mix moves too); every round each
client trains on samples drawn by label from its current mix (as many as its shard holds)
and its requests follow the same mix. ``K_t`` is then the loss of ``w_t`` on round ``t``'s
mixes, ``sum_n p_n sum_l pi_n^t(l) F_l(w_t)`` with ``F_l`` the mean training loss on label
``l``; a held copy's error proxy is the ``K`` it was downloaded with plus the drift model's
gap since (:meth:`~jointopt.models.drift.DriftModel.gap`: the error proxy the accuracy map
reads, as the surrogate tracks it; version ``v`` was fresh in round ``v - 1``, which trained
it, and its ``K_v``, measured on round ``v``'s mixes, carries that round's gap already), and
its accuracy is measured on the client's current mix.

After each round the policy's next observation carries the round's feedback
(:class:`~jointopt.closed_loop.Feedback`: the realised spread, the error proxy of the copies
that served, requests on time and right per client); a closed-loop online policy's
estimates each round are columns ``est_*`` of the result's table.

Held copies are versions of the global model: the run stores every version's flat
parameters and its predictions on the test set, so serving costs one forward pass per
version. Every random draw comes from generators seeded by ``seed``: the same problem,
policy, seed and configuration give the same numbers. The draws are common random numbers
across policies: participation and downloads are drawn for every client every round, a
client's minibatches come from a generator keyed by (seed, client, round)
(:func:`client_rng`), and the requests do not depend on the decisions; so two policies'
runs of one seed differ by their decisions, not by which draws those decisions consumed.

Reusable pieces (``docs/kinds/cis_early_exit.md``, ``docs/kinds/split_learning.md``):
:class:`FlatModel` (a
module's parameters as one flat vector, batched forward over stacked copies),
:func:`local_sgd`, :func:`aggregate_unbiased` (with :func:`unbiased_weights` and
:func:`aggregation_spread`), :func:`evaluate`, :func:`serve_fifo` (the
serving queue, one slot for any set of clients; :mod:`jointopt.flower` runs it on each
Flower node).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from jointopt.closed_loop import Feedback
from jointopt.harness.data import (
    dirichlet_partition,
    label_distribution,
    load_digits_data,
    sample_requests,
    shard_partition,
    window_mixes,
)
from jointopt.harness.nets import mlp
from jointopt.models.queueing import fifo_round, on_time_fraction
from jointopt.policies import Observation, Policy, make_policy


class FlatModel:
    """A module evaluated at flat parameter vectors (one vector, or a stack of them)."""

    def __init__(self, module: nn.Module):
        self.module = module
        named = [(k, v) for k, v in module.named_parameters()]
        self.names = [k for k, _ in named]
        self.shapes = [v.shape for _, v in named]
        self.sizes = [v.numel() for _, v in named]
        self.size = int(sum(self.sizes))

    def flat(self) -> torch.Tensor:
        """The module's current parameters as one detached vector."""
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()]).clone()

    def params(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        out, o = {}, 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes, strict=True):
            out[name] = w[o:o + size].view(shape)
            o += size
        return out

    def forward(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.module, self.params(w), (x,))

    def forward_stacked(self, W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """``W`` (m, P), ``X`` (m, B, ...) -> (m, B, classes): copy i on batch i."""
        return torch.func.vmap(self.forward)(W, X)


def client_rng(seed: int, client: int, t: int, stream: int) -> np.random.Generator:
    """The generator of one client's draws of one kind (``stream``; 0: its minibatches, 1: a
    Flower node's requests) in round ``t`` of the run seeded ``seed``. Keyed draws are
    common random numbers: a client that trains in round ``t`` samples the same minibatches
    whoever else trains and whatever happened before, so two policies' runs of one seed
    differ by their decisions, not by which draws their decisions happened to consume."""
    return np.random.default_rng([int(seed), int(client), int(t), int(stream)])


def local_sgd(model: FlatModel, w0: torch.Tensor, X: torch.Tensor, y: torch.Tensor,
              parts: list[np.ndarray], clients: np.ndarray, *, steps: int, batch_size: int,
              lr: float, rng: Sequence[np.random.Generator]) -> torch.Tensor:
    """``steps`` minibatch SGD steps of every client in ``clients``, all from ``w0``.

    Client n samples ``batch_size`` indices of ``parts[n]`` with replacement each step.
    ``rng``: one generator per client of ``clients``, its batches' only source (e.g.
    :func:`client_rng`), so a client's local model does not depend on who else trains.
    Returns the stacked local models ``(len(clients), P)``. The loss summed over clients
    has, for each client's row, exactly that client's gradient, so one backward pass
    serves all of them.
    """
    m = len(clients)
    if m == 0:
        return w0.new_zeros((0, w0.numel()))
    if len(rng) != m:
        raise ValueError(f"rng: {len(rng)} generators for {m} clients")
    sizes = np.array([len(parts[n]) for n in clients])
    pool = [np.asarray(parts[n]) for n in clients]
    W = w0.detach().expand(m, -1).clone()
    for _ in range(steps):
        u = np.stack([g.random(batch_size) for g in rng])
        pick = np.floor(u * sizes[:, None]).astype(np.int64)
        idx = torch.from_numpy(np.stack([pool[i][pick[i]] for i in range(m)]))
        W.requires_grad_(True)
        logits = model.forward_stacked(W, X[idx])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[idx].reshape(-1),
                               reduction="sum") / batch_size
        (grad,) = torch.autograd.grad(loss, W)
        W = (W - lr * grad).detach()
    return W


def aggregate_unbiased(w: torch.Tensor, local: torch.Tensor, p: np.ndarray, q: np.ndarray,
                       trained: np.ndarray, server_lr: float = 1.0) -> torch.Tensor:
    """``w + eta_s sum_n p_n (B_n / q_n) (w_n - w)`` over the clients that trained.

    ``local`` holds one row per trained client (in the order of ``np.flatnonzero(trained)``).
    Its expectation over ``B_n ~ Bernoulli(q_n)`` is ``w + eta_s sum_n p_n (w_n - w)``.
    """
    who = np.flatnonzero(trained)
    if len(who) == 0:
        return w.clone()
    coef = torch.as_tensor(unbiased_weights(p, q, trained)[who], dtype=w.dtype)
    return w + server_lr * (coef[:, None] * (local - w[None, :])).sum(dim=0)


def unbiased_weights(p: np.ndarray, q: np.ndarray, trained: np.ndarray) -> np.ndarray:
    """Inverse-probability aggregation weights ``p_n B_n / q_n`` (0 for clients that did not
    train): each participant's update counts ``1 / q_n`` times its data weight, so the
    aggregate is unbiased for full participation."""
    trained = np.asarray(trained, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(trained, np.asarray(p) / np.asarray(q), 0.0)


def aggregation_spread(p: np.ndarray, q: np.ndarray, trained: np.ndarray) -> float:
    """The round's sampled aggregation spread ``sum_n p_n^2 (B_n / q_n - 1)^2`` (its
    expectation is ``sum_n p_n^2 (1 - q_n) / q_n``, the convergence model's variance term)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(p * p * np.where(trained, 1.0 / q - 1.0, -1.0) ** 2))


def serve_fifo(rng: np.random.Generator, lam: np.ndarray, mu: np.ndarray,
               deadline: np.ndarray, slot: float, t: int, free: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One slot of every client's FIFO request queue: Poisson arrivals, exponential service.

    Client n gets ``Poisson(lam_n * slot)`` requests at uniform times in slot ``t``
    (``[t slot, (t + 1) slot)``), served in arrival order at rate ``mu_n``; its server is
    busy until ``free_n`` (the queue carries over between slots: Lindley recursion
    ``start = max(arrival, previous finish)``). A request is on time when its sojourn
    (wait + service) is within ``deadline_n``.

    Returns ``(arrivals, who, on_time, free)``: requests per client, the client of each
    request and whether it was on time (flat, client by client in arrival order), and when
    each client's server is next idle. Draws, in order: the counts, the arrival times, the
    service times.
    """
    arrivals = rng.poisson(lam * slot)
    who = np.repeat(np.arange(len(lam)), arrivals)
    ok, valid, free = fifo_round(arrivals, mu, deadline, free, t * slot, slot, rng)
    return arrivals, who, ok[valid], free   # ok[valid] is row-major: client by client


@torch.no_grad()
def evaluate(model: FlatModel, w: torch.Tensor, X: torch.Tensor,
             y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample cross-entropy and predicted labels of model ``w`` on ``(X, y)``."""
    logits = model.forward(w, X)
    loss = F.cross_entropy(logits, y, reduction="none")
    return loss.numpy().astype(float), logits.argmax(dim=1).numpy()


@dataclass(frozen=True)
class HarnessConfig:
    """Training and data settings of the harness (project choices, all swappable)."""

    hidden: tuple[int, ...] = (32,)   # MLP widths
    local_steps: int = 5              # SGD steps per participation
    batch_size: int = 16
    lr: float = 0.3
    server_lr: float = 1.0
    partition: str = "dirichlet"      # "dirichlet" (sizes follow p) or "shards"
    alpha: float = 0.5                # Dirichlet label skew
    test_size: float = 0.3
    data_seed: int = 0                # the split and partition stay fixed across run seeds
    threads: int = 1                  # torch threads during a run
    serving_draws: int = 1            # request streams the trained models answer per round

    def __post_init__(self):
        from jointopt.solvers.base import check_count

        check_count("serving_draws", self.serving_draws, "seeds")


@dataclass
class HarnessResult:
    """A real run: per-round tidy ``table``, ``summary`` and the model versions.

    ``K[v]`` is the measured loss of global version ``v`` (``v = 0`` the initial model,
    ``v = t + 1`` after round ``t``), ``V[t]`` the sampled aggregation spread of round
    ``t`` (``sum_n p_n^2 (B_n/q_n - 1)^2``), ``version_accuracy[v]`` the version's accuracy
    on the request mix, ``versions`` its flat parameters, ``held_version[n]`` the version
    client n holds at the end; ``class_accuracy[v]`` version ``v``'s test accuracy per
    label and ``request_mix[t]`` round ``t``'s request mix over the labels (they change
    under drift: version ``v``'s accuracy on round ``t``'s requests is their product).
    """

    scenario: str
    policy: str
    seed: int
    table: pd.DataFrame
    summary: dict
    K: np.ndarray = field(repr=False)
    V: np.ndarray = field(repr=False)
    version_accuracy: np.ndarray = field(repr=False)
    versions: np.ndarray = field(repr=False)
    held_version: np.ndarray = field(repr=False)
    class_accuracy: np.ndarray | None = field(default=None, repr=False)
    request_mix: np.ndarray | None = field(default=None, repr=False)


class FederatedHarness:
    """Digits split across the problem's clients, and real FedAvg runs of any policy.

    The training shards are label-skewed (``config.partition``) with sizes proportional to
    the clients' data weights ``p`` (Dirichlet partition); each client's requests follow
    its shard's label distribution. Under drift (module docstring) the mixes move round by
    round from ``base_dist`` (the shards' mixes, or :func:`window_mixes` with
    ``drift.window``), and the shards only set how many samples a client trains on.
    """

    def __init__(self, problem, config: HarnessConfig | None = None):
        self.problem = problem
        self.config = cfg = config or HarnessConfig()
        data = load_digits_data(test_size=cfg.test_size, seed=cfg.data_seed)
        self.data = data
        n = problem.clients.count
        if cfg.partition == "dirichlet":
            self.parts = dirichlet_partition(data.y_train, n, cfg.alpha,
                                             weights=problem.clients.p, rng=cfg.data_seed)
        elif cfg.partition == "shards":
            self.parts = shard_partition(data.y_train, n, rng=cfg.data_seed,
                                         mode="sorted_cut")
        else:
            raise ValueError(f"partition must be 'dirichlet' or 'shards', got {cfg.partition!r}")
        self.dist = label_distribution(data.y_train, self.parts, data.n_classes)
        self.owner = np.empty(len(data.y_train), dtype=np.int64)
        for i, part in enumerate(self.parts):
            self.owner[part] = i
        lam = problem.clients.arrival_rate
        self.request_mix = (lam @ self.dist / lam.sum() if lam.sum() > 0
                            else self.dist.mean(axis=0))
        self._X = torch.from_numpy(data.X_train)
        self._y = torch.from_numpy(data.y_train)
        self._Xt = torch.from_numpy(data.X_test)
        self._yt = torch.from_numpy(data.y_test)
        self._test_stock = np.bincount(data.y_test, minlength=data.n_classes)
        self._train_stock = np.bincount(data.y_train, minlength=data.n_classes)
        self.labels = problem.drift.labels
        self.base_dist = self.dist
        if self.labels.active and problem.drift.window is not None:
            self.base_dist = window_mixes(n, data.n_classes, problem.drift.window, cfg.alpha,
                                          rng=cfg.data_seed)
        self.sizes = np.array([len(part) for part in self.parts])

    def initial_loss(self, model: FlatModel) -> float:
        """``K_0``: the loss of ``model``'s initial parameters on round 0's mixes."""
        w = model.flat()
        if not self.labels.active:
            return self.measure(model, w)[0]
        return float(self.problem.clients.p @ (self.mix_at(0) @ self.measure_labels(model,
                                                                                  w)[0]))

    def mix_at(self, t: int) -> np.ndarray:
        """``(clients, labels)`` label mixes of round ``t`` (fixed without drift)."""
        return self.labels.mix(self.base_dist, t) if self.labels.active else self.dist

    def drifting_parts(self, mix: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """Each client's training samples of a round under drift: as many as its shard
        holds, drawn by label from ``mix`` (then uniformly among that label's samples)."""
        who = np.repeat(np.arange(len(self.sizes)), self.sizes)
        idx = sample_requests(self.data.y_train, mix, who, rng)
        return np.split(idx, np.cumsum(self.sizes)[:-1])

    def measure_labels(self, model: FlatModel, w: torch.Tensor) -> tuple[np.ndarray,
                                                                         np.ndarray,
                                                                         np.ndarray]:
        """``(mean training loss per label, predictions on the test set, test accuracy per
        label)`` of version ``w``: under drift ``K`` is the loss per label weighed by the
        clients' current mixes."""
        loss, _ = evaluate(model, w, self._X, self._y)
        per_label = np.bincount(self.data.y_train, weights=loss,
                                minlength=self.data.n_classes) / np.maximum(self._train_stock, 1)
        _, pred = evaluate(model, w, self._Xt, self._yt)
        right = (pred == self.data.y_test).astype(float)
        per_class = np.bincount(self.data.y_test, weights=right, minlength=self.data.n_classes) \
            / np.maximum(self._test_stock, 1)
        return per_label, pred, per_class

    def __enter__(self) -> FederatedHarness:
        """Harnesses are context managers (:class:`jointopt.flower.FlowerHarness` keeps its
        engine up across the runs of a with-block); this one holds nothing."""
        return self

    def __exit__(self, *exc) -> None:
        return None

    def build_model(self, seed: int) -> FlatModel:
        """The MLP at its seeded initialisation (the same for every policy of a seed)."""
        return FlatModel(mlp(self.data.n_features, self.config.hidden, self.data.n_classes,
                             seed=seed))

    def measure(self, model: FlatModel, w: torch.Tensor) -> tuple[float, np.ndarray,
                                                                  np.ndarray]:
        """``(K, predictions on the test set, per-class test accuracy)`` of version ``w``."""
        loss, _ = evaluate(model, w, self._X, self._y)
        per_client = np.bincount(self.owner, weights=loss, minlength=len(self.parts)) / \
            np.array([len(p) for p in self.parts])
        K = float(self.problem.clients.p @ per_client)
        _, pred = evaluate(model, w, self._Xt, self._yt)
        right = (pred == self.data.y_test).astype(float)
        per_class = np.bincount(self.data.y_test, weights=right, minlength=self.data.n_classes) \
            / np.maximum(self._test_stock, 1)
        return K, pred, per_class

    def serve(self, problem, rng: np.random.Generator, mu: np.ndarray, t: int,
              free: np.ndarray, mix: np.ndarray, preds: np.ndarray, held: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One request stream of round ``t`` of ``problem`` (its clients' arrival rates and
        deadlines, its slot): Poisson arrivals at the clients' rates, FIFO
        queues at rate ``mu`` from ``free`` (:func:`serve_fifo`), test requests drawn from
        each client's label mix ``mix`` (:func:`sample_requests`), answered by the version
        each client holds (``preds[v]``: version ``v``'s test-set predictions).

        Returns ``(arrivals, on_time, correct, free)``: per client, requests, requests on
        time, requests on time and answered right, and when its server is next idle."""
        c, n = problem.clients, problem.clients.count
        arrivals, who, on_time_flat, free = serve_fifo(
            rng, c.arrival_rate, mu, c.deadline, problem.simulation.slot, t, free)
        on_time, correct = np.zeros(n), np.zeros(n)
        if len(who):
            y = self.data.y_test
            sample = sample_requests(y, mix, who, rng)
            right = preds[held[who], sample] == y[sample]
            on_time = np.bincount(who, weights=on_time_flat, minlength=n)
            correct = np.bincount(who, weights=on_time_flat & right, minlength=n)
        return arrivals, on_time, correct, free

    def run(self, policy: Policy | str = "online", *, problem=None, rounds: int | None = None,
            seed: int = 0, progress: bool = False,
            serving_draws: int | None = None) -> HarnessResult:
        """Real FedAvg and serving for ``rounds`` rounds under ``policy``.

        ``problem`` (default: the harness's) is what the policy is reset with, e.g. a
        calibrated copy; it must have the same clients. ``serving_draws``: the request
        streams of this run (None: ``config.serving_draws``).
        """
        problem = self.problem if problem is None else problem
        if problem.clients.count != len(self.parts):
            raise ValueError("problem has a different client count than the harness")
        if isinstance(policy, str):
            policy = make_policy(policy)
        T = problem.simulation.rounds if rounds is None else int(rounds)
        if T < 1:
            raise ValueError(f"rounds must be >= 1, got {T}")
        cfg = self.config
        if serving_draws is not None:
            cfg = dataclasses.replace(cfg, serving_draws=serving_draws)  # checked there
        threads = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
        try:
            return self._run(problem, policy, T, seed, progress, cfg)
        finally:
            torch.set_num_threads(threads)

    def _run(self, problem, policy, T, seed, progress, cfg) -> HarnessResult:
        # streams: participation and downloads, (1: unused), the first request stream, the
        # drifting training samples, and the fifth's children the further request streams
        # (stream k the same whatever the number of draws); a trained client's minibatches
        # are keyed by (seed, client, round): client_rng, common to every policy of a seed
        seqs = np.random.SeedSequence(seed).spawn(5)
        rng_part, rng_req, rng_data = (np.random.default_rng(seqs[i]) for i in (0, 2, 3))
        streams = [rng_req, *(np.random.default_rng(s)
                              for s in seqs[4].spawn(cfg.serving_draws - 1))]
        c = problem.clients
        n, p, lam = c.count, c.p, c.arrival_rate
        mode = problem.controller.refresh
        cost = (c.cost_train, c.cost_download, c.cost_service)
        drifting = self.labels.active
        gap = problem.drift.model.gap

        def stale(held, t):  # what held versions have gained by round t beyond their K
            # (0 for a version served in the round that trained it)
            return np.maximum(gap(held - 1, t) - gap(held - 1, held), 0.0) if drifting else 0.0

        model = self.build_model(seed)
        w = model.flat()
        mix = self.mix_at(0)
        req_mix = lam @ mix / lam.sum() if lam.sum() > 0 else mix.mean(axis=0)
        if drifting:
            loss0, pred0, cls0 = self.measure_labels(model, w)
            K0 = float(p @ (mix @ loss0))
        else:
            K0, pred0, cls0 = self.measure(model, w)
        Ks, preds, versions, vacc = [K0], [pred0], [w.numpy().copy()], [cls0 @ req_mix]
        classes = [cls0]                       # per version: test accuracy per label
        mixes = np.empty((T, self.data.n_classes))
        held = np.zeros(n, dtype=np.int64)
        age = np.zeros(n, dtype=np.int64)
        free = np.zeros((len(streams), n))     # per stream: when each server is next idle
        cols = {k: np.empty(T) for k in (
            "K", "V", "mean_aom", "requests", "on_time", "correct", "timely_accuracy",
            "expected_timely_accuracy", "global_accuracy", "resource_use", "backlog",
            "mean_q", "mean_d", "mean_mu", "participants")}
        total_rate = float(lam.sum())
        policy.reset(problem)
        feedback, estimates = None, []
        steps = range(T)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc=f"train {policy.name}", unit="round", file=sys.stderr,
                         leave=False)
        for t in steps:
            if drifting and t > 0:
                mix = self.mix_at(t)
                req_mix = lam @ mix / lam.sum() if lam.sum() > 0 else mix.mean(axis=0)
            held_error = np.asarray(Ks)[held] + stale(held, t)
            x = policy.decide(Observation(t, Ks[-1], held_error, age.copy(), feedback))
            trained = rng_part.random(n) < x.q
            downloaded = rng_part.random(n) < x.d
            who = np.flatnonzero(trained)
            parts = self.drifting_parts(mix, rng_data) if drifting else self.parts
            local = local_sgd(model, w, self._X, self._y, parts, who,
                              steps=cfg.local_steps, batch_size=cfg.batch_size, lr=cfg.lr,
                              rng=[client_rng(seed, i, t, 0) for i in who])
            w = aggregate_unbiased(w, local, p, x.q, trained, cfg.server_lr)
            if drifting:  # K_{t+1}: the loss of the new version on the next round's mixes
                loss, pred, per_class = self.measure_labels(model, w)
                K = float(p @ (self.mix_at(t + 1) @ loss))
            else:
                K, pred, per_class = self.measure(model, w)
            Ks.append(K)
            preds.append(pred)
            versions.append(w.numpy().copy())
            vacc.append(float(per_class @ req_mix))
            classes.append(per_class)
            mixes[t] = req_mix
            refreshed = downloaded | (trained if mode == "download_or_train" else False)
            held = np.where(refreshed, t + 1, held)
            age = np.where(refreshed, 0, age + 1)

            # serving: Poisson arrivals over the slot, FIFO queue at rate mu (Lindley), in
            # every stream; stream 0 is what the policy observes, all are measured
            stacked = np.stack(preds)
            pooled = np.zeros(3)
            for k, rng in enumerate(streams):
                arrivals, on_time, correct, free[k] = self.serve(problem, rng, x.mu, t,
                                                                 free[k], mix, stacked, held)
                if k == 0:
                    on_time_n, correct_n = on_time, correct
                pooled += arrivals.sum(), on_time.sum(), correct.sum()
            P = on_time_fraction(lam, x.mu, c.deadline)
            acc_held = np.einsum("nl,nl->n", np.stack(classes)[held], mix)
            use = cost[0] * x.q + cost[1] * x.d + cost[2] * x.mu
            cols["K"][t] = K
            cols["V"][t] = aggregation_spread(p, x.q, trained)
            served = np.asarray(Ks)[held] + stale(held, t)
            feedback = Feedback(cols["V"][t], served, on_time_n, correct_n)
            est = getattr(policy, "estimates", None)  # pilots need not have it
            if est:
                estimates.append(est)
            cols["mean_aom"][t] = age.mean()
            cols["requests"][t], cols["on_time"][t], cols["correct"][t] = pooled
            cols["timely_accuracy"][t] = pooled[2] / max(pooled[0], 1)
            cols["expected_timely_accuracy"][t] = (float(np.sum(lam * P * acc_held)) / total_rate
                                                  if total_rate > 0 else np.nan)
            cols["global_accuracy"][t] = vacc[-1]
            cols["resource_use"][t] = use.mean()
            cols["backlog"][t] = policy.backlog
            cols["mean_q"][t], cols["mean_d"][t] = x.q.mean(), x.d.mean()
            cols["mean_mu"][t] = x.mu.mean()
            cols["participants"][t] = len(who)

        table = pd.DataFrame({"round": np.arange(T), **cols})
        if estimates:  # a closed-loop policy: the estimates it planned each round with
            table = table.join(pd.DataFrame(estimates).drop(columns="round", errors="ignore"))
        table.insert(0, "policy", policy.name)
        table.insert(0, "scenario", problem.name)
        summary = {
            "avg_timely_accuracy": float(table["correct"].sum() / max(table["requests"].sum(), 1)),
            "expected_timely_accuracy": float(table["expected_timely_accuracy"].mean()),
            "mean_aom": float(table["mean_aom"].mean()),
            "avg_resource_use": float(table["resource_use"].mean()),
            "final_K": float(Ks[-1]),
            "mean_K": float(table["K"].mean()),
            "final_global_accuracy": float(vacc[-1]),
            "rounds": T,
            "seed": seed,
            "serving_draws": len(streams),
        }
        return HarnessResult(problem.name, policy.name, seed, table, summary,
                             np.asarray(Ks), cols["V"].copy(), np.asarray(vacc),
                             np.stack(versions), held.copy(), np.stack(classes), mixes)
