"""Flower integration: jointopt's policies drive federated training on Flower.

Provenance: **project choice**. The round is the harness's round
(:mod:`jointopt.harness.fl`), carried by Flower's Message API (``flwr.app``,
``flwr.serverapp``, ``flwr.clientapp``) so that it runs on Flower's Simulation Engine
(Ray; one machine or a cluster) and, unchanged, on its Deployment Engine. Needs the
``flower`` extra (``flwr[simulation]``) and the ``train`` extra; nothing imports this module
unless asked, so ``import jointopt`` stays free of flwr and torch.

Server side, :class:`JointStrategy` (a ``flwr.serverapp.strategy.Strategy``), round ``t``
(Flower's ``server_round = t + 1``):

1. *configure_train*: the policy (any :mod:`jointopt.policies` object: the online
   controller or a baseline) sees ``Observation(t, K_t, held errors, ages)`` and returns
   ``(q, d, mu)``; the strategy draws participation ``B_n ~ Bernoulli(q_n)`` and downloads
   ``D_n ~ Bernoulli(d_n)`` (a generator seeded by ``seed``: the same stream as the
   harness's) and sends the global model ``w_t`` to the participants only;
2. *aggregate_train*: ``w_{t+1} = w_t + eta_s sum_n p_n (B_n / q_n) (w_n - w_t)`` over the
   replies (:func:`~jointopt.harness.fl.aggregate_unbiased`, the inverse-probability
   weights of :func:`~jointopt.harness.fl.unbiased_weights`: unbiased for full
   participation; a participant whose reply fails counts as not having trained), and
   ``K_{t+1}`` is measured by the ``global_error`` callable;
3. *configure_evaluate*: every node gets a ``serve`` message with its service rate
   ``mu_n``; the refreshed ones (``D_n``, or ``B_n or D_n`` in mode
   ``download_or_train``) get ``w_{t+1}`` with it, the others keep serving their held copy;
4. *aggregate_evaluate*: the nodes' reports (requests, on time, correct, resources used)
   become the round's record, and the policy is charged the resources actually used
   (:meth:`~jointopt.policies.Policy.settle`: the online controller's virtual queues see
   ``c_tr B_n + c_dl D_n + c_inf mu_n``, not the planned ``c_tr q_n + c_dl d_n + ...``).

Client side, :func:`client_app` (a ``flwr.clientapp.ClientApp``): a node keeps its held
copy and its queue in the run's ``Context.state``; it trains on ``train`` messages
(:meth:`ClientTask.train`), and on ``serve`` messages replaces its copy when one comes,
then serves the slot's requests through its FIFO queue at rate ``mu_n``
(:func:`~jointopt.harness.fl.serve_fifo`, the harness's queue) with its held copy
(:meth:`ClientTask.answer`), and reports timely accuracy and resource use as metrics.

Node ids: Flower names nodes by random 64-bit ids. Before the first round the strategy
asks every node (an ``identify`` query) for its ``partition-id`` (node config; the
Simulation Engine numbers them ``0 .. N-1``, a deployed SuperNode is started with
``--node-config "partition-id=..."``), which is the scenario's client index, and hands it
the initial model (the copy it serves until its first download).

Determinism: every draw is seeded by ``(seed, client, round)`` or by ``seed`` alone, and
the server sorts replies by client before aggregating, so a run does not depend on Flower's
random node ids, on the order replies arrive in, or on which Ray worker runs which node:
the same scenario, policy and seed give the same numbers (checked by the tests).

:class:`FlowerHarness` is :class:`~jointopt.harness.fl.FederatedHarness` with its ``run``
on the Simulation Engine: same data split, model, measurements and result type, so
calibration and validation (``jointopt validate --engine flower``) run on Flower unchanged.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from jointopt.errors import ValidationError
from jointopt.harness.data import sample_requests
from jointopt.harness.fl import (
    FederatedHarness,
    FlatModel,
    HarnessConfig,
    HarnessResult,
    aggregate_unbiased,
    aggregation_spread,
    client_rng,
    evaluate,
    local_sgd,
    serve_fifo,
    unbiased_weights,
)
from jointopt.models.queueing import on_time_fraction
from jointopt.policies import Observation, Policy, make_policy

IDENTIFY = f"{MessageType.QUERY}.identify"   # node -> client handshake, initial model
PING = f"{MessageType.QUERY}.ping"           # is the node up (Simulation start-up)
SERVE = f"{MessageType.EVALUATE}.serve"      # serving slot, with the download if any
TRAIN = MessageType.TRAIN
STATE_MODEL = "jointopt.held"                # Context.state keys on a node
STATE_NODE = "jointopt.node"


# -- arrays ---------------------------------------------------------------------------
def flatten(arrays: ArrayRecord) -> np.ndarray:
    """All arrays of a record as one vector (in the record's key order)."""
    return np.concatenate([a.numpy().reshape(-1) for a in arrays.values()])


def unflatten(vector: np.ndarray, like: ArrayRecord) -> ArrayRecord:
    """The inverse of :func:`flatten`, shaped and typed as ``like``."""
    out, o = ArrayRecord(), 0
    for key, arr in like.items():
        size = int(np.prod(arr.shape))
        out[key] = Array(np.ascontiguousarray(vector[o:o + size].reshape(arr.shape),
                                              dtype=arr.numpy().dtype))
        o += size
    return out


def model_arrays(model: FlatModel, w: torch.Tensor) -> ArrayRecord:
    """Flat parameters ``w`` of ``model`` as its named arrays (a torch ``state_dict``)."""
    return ArrayRecord({k: v.detach().clone() for k, v in model.params(w).items()})


# -- server ---------------------------------------------------------------------------
class JointStrategy(Strategy):
    """A Flower strategy whose participation, downloads and service rates come from a
    jointopt policy (module docstring).

    ``problem``: the scenario (a ``joint_training_inference`` problem) whose clients the
    nodes are; ``policy``: a :class:`~jointopt.policies.Policy` or its name;
    ``global_error``: the convergence-error proxy ``K`` of a global model (e.g. its
    training or validation loss), called once per version; ``seed``: the participation
    and download draws, and the nodes' draws; ``queues``: ``"measured"`` charges the
    policy's virtual queues the resources actually used, ``"planned"`` leaves them charged
    the decision's expected use (as the in-house harness does); ``connect_timeout``: how
    long the first round waits for every node to connect and answer the handshake (Ray's
    workers start then); ``on_round``: called with each round's record.

    Determinism: the records depend only on the scenario, the policy and ``seed``, except
    for ``node_id`` (Flower draws node ids afresh in each simulation or deployment) and for
    replies that never come (a node that fails to train counts as not having trained, one
    that fails to serve keeps the copy it reported last; ``missing_replies`` counts them).

    After :meth:`start`: :meth:`rounds_frame` (one row per round: ``K``, participation,
    ``mean_aom``, timely accuracy, resource use, backlog) and :meth:`clients_frame` (one row
    per round and client: ``q``, ``d``, ``mu``, draws, aggregation ``weight``, held
    version, age, requests, use); ``K`` (one entry per global version, ``K[0]`` the
    initial model's), ``V`` (the aggregation spread of each round), ``held_version``.
    """

    def __init__(self, problem, policy: Policy | str = "online", *,
                 global_error: Callable[[ArrayRecord], float], seed: int = 0,
                 server_lr: float = 1.0, queues: str = "measured",
                 connect_timeout: float = 600.0,
                 on_round: Callable[[dict], None] | None = None):
        if queues not in ("measured", "planned"):
            raise ValidationError("queues", f"must be 'measured' or 'planned', got {queues!r}")
        self.problem = problem
        self.policy = make_policy(policy) if isinstance(policy, str) else policy
        self.global_error = global_error
        self.seed = int(seed)
        self.server_lr = float(server_lr)
        self.queues = queues
        self.connect_timeout = float(connect_timeout)
        self.on_round = on_round
        self.node_of: np.ndarray | None = None   # client index -> Flower node id
        self.client_of: dict[int, int] = {}      # Flower node id -> client index
        self._rows: list[dict] = []
        self._client_rows: list[pd.DataFrame] = []

    def summary(self) -> None:
        from flwr.supercore import log

        log(logging.INFO, "\t├──> jointopt policy: %s on scenario %s (%d clients)",
            self.policy.name, self.problem.name, self.problem.clients.count)
        log(logging.INFO, "\t└──> queues charged the %s resource use, seed %d",
            self.queues, self.seed)

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None, evaluate_fn=None):
        """Flower's round loop (``Strategy.start``), after the handshake: every node is
        matched to its client and handed ``initial_arrays``, and the policy is reset. Each
        call is a fresh run (the records start empty)."""
        self._rows, self._client_rows = [], []
        self._connect(grid, initial_arrays)
        return super().start(grid, initial_arrays, num_rounds, timeout, train_config,
                             evaluate_config, evaluate_fn)

    # the handshake --------------------------------------------------------------------
    def _connect(self, grid: Grid, arrays: ArrayRecord) -> None:
        import time

        n = self.problem.clients.count
        deadline = time.monotonic() + self.connect_timeout
        while len(nodes := sorted(grid.get_node_ids())) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(nodes)} Flower nodes connected in "
                                   f"{self.connect_timeout:g} s, the scenario has {n} clients")
            time.sleep(0.2)
        content = RecordDict({"arrays": arrays,
                              "config": ConfigRecord({"seed": self.seed})})
        replies = grid.send_and_receive(
            [Message(content, dst_node_id=node, message_type=IDENTIFY) for node in nodes],
            timeout=max(deadline - time.monotonic(), 1.0))
        node_of: list[int | None] = [None] * n
        replies = list(replies)
        for msg in replies:
            if msg.has_error():
                raise RuntimeError(f"node {msg.metadata.src_node_id} failed to identify: "
                                   f"{msg.error.reason}")
            client = int(msg.content["metrics"]["client"])
            if node_of[client] is not None:
                raise RuntimeError(f"nodes {node_of[client]} and {msg.metadata.src_node_id} "
                                   f"both claim client {client} (partition-id)")
            node_of[client] = int(msg.metadata.src_node_id)
        if None in node_of:
            missing = [i for i, node in enumerate(node_of) if node is None]
            raise RuntimeError(f"no node identified as client(s) {missing[:10]} "
                               f"(partition-id); {len(replies)} of {len(nodes)} replied")
        self.node_of = np.array(node_of, dtype=np.uint64)   # Flower's ids are 64-bit unsigned
        self.client_of = {node: i for i, node in enumerate(node_of)}
        self.policy.reset(self.problem)
        self.K = [float(self.global_error(arrays))]
        self.V: list[float] = []
        self.held_version = np.zeros(n, dtype=np.int64)
        self.age = np.zeros(n, dtype=np.int64)
        self._rng = np.random.default_rng(np.random.SeedSequence(self.seed).spawn(3)[0])

    # Flower's round -------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        t = server_round - 1
        K = np.asarray(self.K)
        x = self.policy.decide(Observation(t, self.K[-1], K[self.held_version],
                                           self.age.copy()))
        n = self.problem.clients.count
        self._x = x
        self._B = self._rng.random(n) < x.q
        self._D = self._rng.random(n) < x.d
        self._arrays = arrays
        content = RecordDict({"arrays": arrays,
                              "config": ConfigRecord({"server-round": server_round})})
        return [Message(content, dst_node_id=int(self.node_of[i]), message_type=TRAIN)
                for i in np.flatnonzero(self._B)]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        from flwr.supercore import log

        local = {}
        for msg in replies:
            if msg.has_error():
                log(logging.WARNING, "node %d failed to train: %s", msg.metadata.src_node_id,
                    msg.error.reason)
                continue
            local[self.client_of[msg.metadata.src_node_id]] = flatten(msg.content["arrays"])
        trained = np.zeros(self.problem.clients.count, dtype=bool)
        trained[list(local)] = True
        self._trained = trained & self._B
        w = torch.from_numpy(flatten(self._arrays))
        stacked = (torch.from_numpy(np.stack([local[i] for i in np.flatnonzero(self._trained)]))
                   if self._trained.any() else w.new_zeros((0, w.numel())))
        p = self.problem.clients.p
        w_new = aggregate_unbiased(w, stacked, p, self._x.q, self._trained, self.server_lr)
        self._new = unflatten(w_new.numpy(), self._arrays)
        self.V.append(aggregation_spread(p, self._x.q, self._trained))
        self.K.append(float(self.global_error(self._new)))
        return self._new, MetricRecord({"participants": int(self._trained.sum()),
                                        "K": self.K[-1], "spread": self.V[-1]})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        refresh_by_training = self.problem.controller.refresh == "download_or_train"
        self._refreshed = self._D | (self._trained if refresh_by_training else False)
        messages = []
        for i, node in enumerate(self.node_of):
            cfg = ConfigRecord({"server-round": server_round, "mu": float(self._x.mu[i]),
                                "download": int(self._D[i])})
            content = RecordDict({"config": cfg})
            if self._refreshed[i]:
                cfg["version"] = server_round
                content["arrays"] = self._new
            messages.append(Message(content, dst_node_id=int(node), message_type=SERVE))
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        from flwr.supercore import log

        c, x, t = self.problem.clients, self._x, server_round - 1
        n = c.count
        report = {k: np.full(n, np.nan) for k in ("requests", "on_time", "correct", "use",
                                                   "held_version", "held_norm")}
        for msg in replies:
            if msg.has_error():
                log(logging.WARNING, "node %d failed to serve: %s", msg.metadata.src_node_id,
                    msg.error.reason)
                continue
            i, m = self.client_of[msg.metadata.src_node_id], msg.content["metrics"]
            for key in report:
                report[key][i] = m[key.replace("_", "-")]
        seen = np.isfinite(report["requests"])
        planned = c.cost_train * x.q + c.cost_download * x.d + c.cost_service * x.mu
        drawn = c.cost_train * self._trained + c.cost_download * self._D + c.cost_service * x.mu
        used = np.where(seen, report["use"], drawn)
        settle = getattr(self.policy, "settle", None)   # duck-typed policies may lack it
        if self.queues == "measured" and settle is not None:
            settle(used)
        # what each node holds, as it reports it (a lost message leaves the old copy)
        held = np.where(seen, report["held_version"], self.held_version).astype(np.int64)
        fresh = held == server_round
        self.age = np.where(fresh, 0, self.age + 1)
        self.held_version = held
        requests, on_time, correct = (np.nansum(report[k]) for k in
                                      ("requests", "on_time", "correct"))
        row = {"round": t, "K": self.K[-1], "V": self.V[-1], "mean_aom": self.age.mean(),
               "requests": requests, "on_time": on_time, "correct": correct,
               "timely_accuracy": correct / max(requests, 1),
               "resource_use": planned.mean(), "measured_use": used.mean(),
               "backlog": self.policy.backlog, "mean_q": x.q.mean(), "mean_d": x.d.mean(),
               "mean_mu": x.mu.mean(), "participants": int(self._trained.sum()),
               "downloads": int(self._D.sum()), "refreshed": int(self._refreshed.sum()),
               "missing_replies": int(n - seen.sum())}
        self._rows.append(row)
        self._client_rows.append(pd.DataFrame({
            "round": t, "client": np.arange(n), "node_id": self.node_of, "q": x.q, "d": x.d,
            "mu": x.mu, "trained": self._trained, "downloaded": self._D,
            "refreshed": self._refreshed,
            "weight": unbiased_weights(c.p, x.q, self._trained),
            "held_version": held, "age": self.age.copy(), "held_norm": report["held_norm"],
            "requests": report["requests"], "on_time": report["on_time"],
            "correct": report["correct"], "use": used, "planned_use": planned}))
        if self.on_round is not None:
            self.on_round(row)
        return MetricRecord({"timely_accuracy": float(row["timely_accuracy"]),
                             "mean_aom": float(row["mean_aom"]),
                             "measured_use": float(row["measured_use"])})

    # records --------------------------------------------------------------------------
    def rounds_frame(self) -> pd.DataFrame:
        """One row per round (``round`` from 0: Flower's ``server_round - 1``)."""
        table = pd.DataFrame(self._rows)
        table.insert(0, "policy", self.policy.name)
        table.insert(0, "scenario", self.problem.name)
        return table

    def clients_frame(self) -> pd.DataFrame:
        """One row per round and client."""
        return pd.concat(self._client_rows, ignore_index=True)


# -- client ---------------------------------------------------------------------------
class ClientTask:
    """What a node does with a model: train it on its data, answer its requests.

    ``problem`` is the scenario (its clients' arrival rates, deadlines, costs and the slot
    length drive the serving queue). Subclass it for another model or data set.
    """

    problem = None

    def train(self, client: int, arrays: ArrayRecord, rng: np.random.Generator
              ) -> tuple[ArrayRecord, int]:
        """Local training of ``client`` from ``arrays``: the local model and the number of
        examples it holds."""
        raise NotImplementedError

    def answer(self, client: int, arrays: ArrayRecord, count: int,
               rng: np.random.Generator) -> np.ndarray:
        """``count`` of ``client``'s requests answered by model ``arrays``: whether each
        answer is correct."""
        raise NotImplementedError


class DigitsTask(ClientTask):
    """The harness's task: the digits split across the scenario's clients, the MLP, local
    SGD (:func:`~jointopt.harness.fl.local_sgd`) and requests drawn from each client's
    label mix (:func:`~jointopt.harness.data.sample_requests`); a node's arrays are the
    MLP's parameters by name (a torch ``state_dict``)."""

    def __init__(self, problem, config: HarnessConfig | None = None):
        self.harness = h = FederatedHarness(problem, config)
        self.problem = problem
        self.model = h.build_model(0)   # the architecture; weights come in the messages
        self.X, self.y = torch.from_numpy(h.data.X_train), torch.from_numpy(h.data.y_train)
        self.Xt = torch.from_numpy(h.data.X_test)
        torch.set_num_threads(h.config.threads)

    def flat(self, arrays: ArrayRecord) -> torch.Tensor:
        return torch.from_numpy(flatten(arrays))

    def train(self, client, arrays, rng):
        cfg, parts = self.harness.config, self.harness.parts
        local = local_sgd(self.model, self.flat(arrays), self.X, self.y, parts,
                          np.array([client]), steps=cfg.local_steps,
                          batch_size=cfg.batch_size, lr=cfg.lr, rng=[rng])
        return model_arrays(self.model, local[0]), len(parts[client])

    def answer(self, client, arrays, count, rng):
        h = self.harness
        sample = sample_requests(h.data.y_test, h.dist, np.full(count, client), rng)
        _, pred = evaluate(self.model, self.flat(arrays), self.Xt[sample],
                           torch.from_numpy(h.data.y_test[sample]))
        return pred == h.data.y_test[sample]


@functools.lru_cache(maxsize=4)
def _cached_digits_task(problem_json: str, config: HarnessConfig) -> DigitsTask:
    from jointopt import scenarios

    return DigitsTask(scenarios.from_dict(json.loads(problem_json)), config)


def _digits_task(problem_json: str, config: HarnessConfig, context=None) -> DigitsTask:
    return _cached_digits_task(problem_json, config)


def digits_task(problem, config: HarnessConfig | None = None) -> Callable[..., DigitsTask]:
    """A picklable factory of :class:`DigitsTask` for :func:`client_app` (it ignores the
    node's context): each process (each Ray worker) builds the task once and reuses it."""
    return functools.partial(_digits_task, json.dumps(problem.to_dict()),
                             config or HarnessConfig())


def _client_index(context: Context, count: int) -> int:
    try:
        client = int(context.node_config["partition-id"])
    except KeyError:
        raise ValidationError("node_config", "needs 'partition-id' (the scenario's client "
                                             "index of this node)") from None
    if not 0 <= client < count:
        raise ValidationError("node_config.partition-id",
                              f"must be in 0..{count - 1}, got {client}")
    return client


def client_app(make_task: Callable[[Context], ClientTask]) -> ClientApp:
    """The ``ClientApp`` of :class:`JointStrategy`'s nodes.

    ``make_task(context)`` returns the node's :class:`ClientTask` (from the run's
    ``context.run_config``, say; called on every message: cache it, as :func:`digits_task`
    does). Handlers: ``query.ping`` (is the node up), ``query.identify`` (the handshake: the
    node's client index, and the initial model as its held copy), ``train`` (local
    training from the sent global model; the held copy is left alone), ``evaluate.serve``
    (take the download if one came, then serve the slot's requests; metrics ``requests``,
    ``on-time``, ``correct``, ``use``, ``held-version``, ``held-norm``).
    """
    app = ClientApp()

    @app.query("ping")
    def ping(msg: Message, context: Context) -> Message:
        make_task(context)   # load the task now, not in the first run
        return Message(RecordDict(), reply_to=msg)

    @app.query("identify")
    def identify(msg: Message, context: Context) -> Message:
        task = make_task(context)
        client = _client_index(context, task.problem.clients.count)
        context.state[STATE_MODEL] = msg.content["arrays"]
        context.state[STATE_NODE] = ConfigRecord({
            "client": client, "seed": int(msg.content["config"]["seed"]), "free": 0.0,
            "held-version": 0, "trained-round": -1})
        return Message(RecordDict({"metrics": MetricRecord({"client": client})}),
                       reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        task, node = make_task(context), context.state[STATE_NODE]
        t = int(msg.content["config"]["server-round"]) - 1
        client = int(node["client"])
        arrays, examples = task.train(client, msg.content["arrays"],
                                      client_rng(node["seed"], client, t, 0))
        node["trained-round"] = t
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(
            {"num-examples": int(examples)})}), reply_to=msg)

    @app.evaluate("serve")
    def serve(msg: Message, context: Context) -> Message:
        task, node = make_task(context), context.state[STATE_NODE]
        cfg = msg.content["config"]
        t, mu = int(cfg["server-round"]) - 1, float(cfg["mu"])
        if "arrays" in msg.content:
            context.state[STATE_MODEL] = msg.content["arrays"]
            node["held-version"] = int(cfg["version"])
        held = context.state[STATE_MODEL]
        client, c = int(node["client"]), task.problem.clients
        rng = client_rng(node["seed"], client, t, 1)
        arrivals, _, on_time, free = serve_fifo(
            rng, c.arrival_rate[[client]], np.array([mu]), c.deadline[[client]],
            task.problem.simulation.slot, t, np.array([float(node["free"])]))
        node["free"] = float(free[0])
        right = task.answer(client, held, int(arrivals[0]), rng) if arrivals[0] else on_time
        trained = int(node["trained-round"]) == t
        use = (c.cost_train[client] * trained + c.cost_download[client] * int(cfg["download"])
               + c.cost_service[client] * mu)
        return Message(RecordDict({"metrics": MetricRecord({
            "requests": int(arrivals[0]), "on-time": int(on_time.sum()),
            "correct": int((on_time & right).sum()), "use": float(use),
            "held-version": int(node["held-version"]),
            "held-norm": float(np.linalg.norm(flatten(held).astype(np.float64)))})}),
            reply_to=msg)

    return app


# -- the engine -----------------------------------------------------------------------
class _DropDeprecation(logging.Filter):
    def filter(self, record):
        return "run_simulation" not in str(record.msg) + str(record.args)


@contextmanager
def _quiet_flower(verbose: bool):
    """Flower's per-round INFO lines (and its notice that ``run_simulation`` is deprecated
    in favour of ``flwr run``) stay off the console unless ``verbose``."""
    logger = logging.getLogger("flwr")
    level, drop = logger.level, _DropDeprecation()
    if not verbose:
        logger.setLevel(logging.WARNING)
        logger.addFilter(drop)
    try:
        yield
    finally:
        logger.setLevel(level)
        logger.removeFilter(drop)


def backend_config(cpus: int | None = None, object_store_mb: int = 256) -> dict:
    """Ray settings of the Simulation Engine: ``cpus`` workers (default: every core), one
    node at a time per worker, a small object store, Ray's logs at ERROR."""
    cpus = cpus or os.cpu_count() or 1
    return {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": int(cpus), "include_dashboard": False,
                          "object_store_memory": object_store_mb * 2 ** 20,
                          "logging_level": "ERROR", "log_to_driver": False}}


class Simulation:
    """Flower's Simulation Engine kept up across runs: Ray and one node per client start
    once (the slow part: tens of seconds to minutes on a loaded 2-core machine), then any
    number of :class:`JointStrategy` runs go through it in turn.

    ``with Simulation(nodes, make_task) as sim: sim.run(strategy, initial_arrays, rounds)``.
    The engine runs in a background thread of this process (Flower's ``run_simulation``:
    the ServerApp in a thread, the nodes in Ray workers). Entering waits until every node
    has answered a ``ping`` (Ray and its workers are up); Ray gives its node 30 s to
    register, which a loaded machine can miss, so a failed start is retried ``retries``
    times. Each run's handshake resets the nodes' state (held copy, queue). ``cpus``: Ray
    workers (default: every core).

    Nothing waits forever: a start attempt that has no answer from every node within
    ``start_timeout`` seconds fails (and is retried), and each exchange of a run (the
    handshake, a round's training, a round's serving) waits at most ``round_timeout``
    seconds for its replies (missing ones are recorded, see :class:`JointStrategy`). A run
    whose engine stops answering altogether fails with a :class:`TimeoutError` after its
    whole allowance, and the simulation is shut down (later runs raise).
    """

    current: Simulation | None = None   # the one up in this process (Ray allows one: a
    # second would wait forever for the cores the first one's workers hold)

    def __init__(self, nodes: int, make_task: Callable[[Context], ClientTask], *,
                 cpus: int | None = None, verbose: bool = False, retries: int = 2,
                 start_timeout: float = 900.0, round_timeout: float = 600.0):
        self.nodes, self.make_task, self.cpus, self.verbose = int(nodes), make_task, cpus, verbose
        self.retries, self.start_timeout = int(retries), float(start_timeout)
        self.round_timeout = float(round_timeout)
        for name in ("start_timeout", "round_timeout"):
            if not getattr(self, name) > 0:
                raise ValidationError(name, f"must be > 0 seconds, got {getattr(self, name)}")
        self._thread = None
        self._failed: str | None = None

    def __enter__(self) -> Simulation:
        if Simulation.current is not None:
            raise RuntimeError("a Flower simulation is already up in this process (one at a "
                               "time: Ray runs one cluster per process); run inside it or "
                               "leave its with-block first")
        # Ray's notice about a future default for accelerator variables (no GPUs here)
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        self._quiet = _quiet_flower(self.verbose)
        self._quiet.__enter__()
        Simulation.current = self
        self._failed = None
        try:
            for attempt in range(self.retries + 1):
                try:
                    self._start()
                    return self
                except Exception as exc:
                    self._abandon()
                    if attempt == self.retries:
                        raise
                    print(f"jointopt.flower: the simulation did not start ({exc}; "
                          f"{exc.__cause__ or ''}), retrying", file=sys.stderr)
        except BaseException:
            Simulation.current = None
            self._quiet.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        """One attempt: the engine thread, then a ping to every node."""
        import queue
        import threading

        from flwr.simulation import run_simulation

        self._failed = None
        jobs: queue.Queue = queue.Queue()
        done: queue.Queue = queue.Queue()
        self._jobs, self._done = jobs, done     # this attempt's (a failed one keeps its own)
        server = ServerApp()

        @server.main()
        def main(grid: Grid, context: Context) -> None:
            while (job := jobs.get()) is not None:
                try:
                    done.put(("done", job(grid)))
                except Exception as exc:  # handed to the caller of run()
                    done.put(("error", exc))

        def engine() -> None:
            try:
                run_simulation(server_app=server, client_app=client_app(self.make_task),
                               num_supernodes=self.nodes, backend_config=backend_config(self.cpus),
                               verbose_logging=self.verbose)
                done.put(("stopped", None))
            except BaseException as exc:
                done.put(("error", exc))

        self._thread = threading.Thread(target=engine, name="flower-simulation", daemon=True)
        self._thread.start()
        self._call(functools.partial(_ping, nodes=self.nodes, timeout=self.start_timeout),
                   self.start_timeout + 30.0, "to start")

    def _abandon(self) -> None:
        """Give up a failed attempt: its threads end on their own; Ray goes down."""
        import ray

        self._jobs.put(None)
        self._thread = None
        ray.shutdown()

    def _call(self, job: Callable[[Grid], object], timeout: float, what: str):
        """Run ``job(grid)`` in the ServerApp's thread and return its result; a job with no
        result within ``timeout`` seconds fails the simulation (Ray went down or stalled)."""
        import queue

        self._jobs.put(job)
        try:
            got, payload = self._done.get(timeout=timeout)
        except queue.Empty:
            self._failed = (f"Flower's simulation of {self.nodes} nodes did not answer in "
                            f"{timeout:g} s {what} (Ray stalled or went down)")
            self._abandon()
            raise TimeoutError(self._failed) from None
        if got == "error":
            raise payload
        if got != "done":
            raise RuntimeError(f"Flower's simulation {got} during a run")
        return payload

    def run(self, strategy: JointStrategy, initial_arrays: ArrayRecord,
            rounds: int) -> JointStrategy:
        """``rounds`` rounds of ``strategy``; returns it (its records hold the run)."""
        if strategy.problem.clients.count != self.nodes:
            raise ValidationError("problem.clients.count", f"must be {self.nodes} (the "
                                  f"simulation's nodes), got {strategy.problem.clients.count}")
        if self._failed is not None:
            raise RuntimeError(self._failed)
        if self._thread is None:
            raise RuntimeError("use the simulation in a with-block")
        rounds = int(rounds)
        # the handshake, two exchanges per round (training, serving), each bounded, and
        # one more exchange's time for the server's own work
        allowance = strategy.connect_timeout + (2 * rounds + 1) * self.round_timeout
        self._call(lambda grid: strategy.start(grid, initial_arrays, num_rounds=rounds,
                                               timeout=self.round_timeout),
                   allowance, f"to {rounds} rounds of {strategy.policy.name}")
        if len(strategy._rows) != rounds:
            raise RuntimeError(f"the Flower run stopped after {len(strategy._rows)} of "
                               f"{rounds} rounds")
        return strategy

    def __exit__(self, *exc) -> None:
        import queue

        try:
            if self._thread is not None:
                self._jobs.put(None)
                if exc[0] is None:
                    try:
                        got, payload = self._done.get(timeout=60)
                    except queue.Empty:     # the engine did not stop: take Ray down
                        self._abandon()
                        got, payload = "stopped", None
                    if got == "error":
                        raise payload
                if self._thread is not None:
                    self._thread.join(timeout=60)
        finally:
            self._thread = None
            Simulation.current = None
            self._quiet.__exit__(None, None, None)


def _ping(grid: Grid, nodes: int, timeout: float) -> None:
    """Wait for ``nodes`` nodes, then for each one's answer to a ``ping`` query (the first
    answers wait for Ray's workers to start)."""
    import time

    deadline = time.monotonic() + timeout
    while len(ids := list(grid.get_node_ids())) < nodes:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ids)} of {nodes} Flower nodes connected in {timeout:g} s")
        time.sleep(0.2)
    replies = list(grid.send_and_receive(
        [Message(RecordDict(), dst_node_id=node, message_type=PING) for node in ids],
        timeout=max(deadline - time.monotonic(), 1.0)))
    failed = [m.error.reason for m in replies if m.has_error()]
    if len(replies) < nodes or failed:
        raise RuntimeError(f"{len(replies) - len(failed)} of {nodes} Flower nodes answered "
                           f"in {timeout:g} s" + (f" ({failed[0]})" if failed else ""))


def run_simulation(strategy: JointStrategy, make_task: Callable[[Context], ClientTask],
                   initial_arrays: ArrayRecord, rounds: int, *, cpus: int | None = None,
                   verbose: bool = False) -> JointStrategy:
    """``rounds`` rounds of ``strategy`` with one Flower node per client on the Simulation
    Engine (one :class:`Simulation` for one run). Returns the strategy."""
    with Simulation(strategy.problem.clients.count, make_task, cpus=cpus,
                    verbose=verbose) as sim:
        return sim.run(strategy, initial_arrays, rounds)


def _same_task(a: Simulation, b: Simulation) -> bool:
    fa, fb = a.make_task, b.make_task
    return (a.nodes == b.nodes and isinstance(fa, functools.partial)
            and isinstance(fb, functools.partial) and fa.func is fb.func
            and fa.args == fb.args and fa.keywords == fb.keywords)


class FlowerHarness(FederatedHarness):
    """:class:`~jointopt.harness.fl.FederatedHarness` whose runs train on Flower's
    Simulation Engine (same data split, model, measurements and result).

    Used in a with-block, its runs share one :class:`Simulation` (Ray starts once; a
    simulation of the same clients and task already up in the process is reused); outside
    one, each run starts its own. ``queues``: what the online controller's virtual
    queues are charged (see :class:`JointStrategy`); ``"planned"`` by default, as in the
    in-house harness and the surrogate, so that validation compares one controller on
    three engines (a deployment charges the measured use, :class:`JointStrategy`'s
    default). ``cpus``: Ray workers (default: every core); other keywords
    (``start_timeout``, ``round_timeout``, ``retries``) go to :class:`Simulation`.
    The nodes serve one request stream per round: ``config.serving_draws`` must be 1
    (the in-house harness answers several).
    """

    def __init__(self, problem, config: HarnessConfig | None = None, *,
                 queues: str = "planned", cpus: int | None = None, verbose: bool = False,
                 **simulation):
        if config is not None and config.serving_draws != 1:
            raise ValidationError("serving_draws", f"must be 1 on the flower engine (its nodes "
                                                   f"serve one request stream per round), got "
                                                   f"{config.serving_draws}; the harness "
                                                   f"engine answers several")
        super().__init__(problem, config)
        self.queues = queues
        self.simulation = Simulation(problem.clients.count, digits_task(problem, self.config),
                                     cpus=cpus, verbose=verbose, **simulation)
        self._depth = 0
        self._own = False

    def __enter__(self) -> FlowerHarness:
        if self._depth == 0:
            # a simulation of the same nodes and task already up in this process (another
            # FlowerHarness's with-block) serves this one's runs too
            up = Simulation.current
            if up is not None and _same_task(up, self.simulation):
                self.simulation, self._own = up, False
            else:
                self.simulation.__enter__()
                self._own = True
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0 and self._own:
            self.simulation.__exit__(*exc)

    def run(self, policy: Policy | str = "online", *, problem=None, rounds: int | None = None,
            seed: int = 0, progress: bool = False,
            serving_draws: int | None = None) -> HarnessResult:
        if serving_draws not in (None, 1):
            raise ValidationError("serving_draws", f"must be 1 on the flower engine (its "
                                                   f"nodes serve one stream), got "
                                                   f"{serving_draws!r}")
        problem = self.problem if problem is None else problem
        if problem.drift.labels.active:
            raise ValidationError("drift", "the Flower engine keeps each node's data and "
                                           "requests fixed; a scenario with [drift] runs on "
                                           "the in-house harness (--engine harness)")
        if problem.to_dict()["clients"] != self.problem.to_dict()["clients"]:
            raise ValueError("problem has other clients than the harness (the nodes' data "
                             "and requests are the harness's)")
        policy = make_policy(policy) if isinstance(policy, str) else policy
        T = problem.simulation.rounds if rounds is None else int(rounds)
        if T < 1:
            raise ValueError(f"rounds must be >= 1, got {T}")
        model = self.build_model(seed)
        versions, per_class = [], []

        def global_error(arrays: ArrayRecord) -> float:
            w = torch.from_numpy(flatten(arrays))
            K, _, cls = self.measure(model, w)
            versions.append(w.numpy().copy())
            per_class.append(cls)
            return K

        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=T, desc=f"flower {policy.name}", unit="round", file=sys.stderr,
                       leave=False)
        strategy = JointStrategy(problem, policy, global_error=global_error, seed=seed,
                                 server_lr=self.config.server_lr, queues=self.queues,
                                 on_round=(lambda row: bar.update()) if bar else None)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.config.threads)
        try:
            with self:
                self.simulation.run(strategy, model_arrays(model, model.flat()), T)
        finally:
            torch.set_num_threads(threads)
            if bar is not None:
                bar.close()
        return self._result(problem, strategy, seed, np.stack(versions), np.stack(per_class))

    def _result(self, problem, strategy: JointStrategy, seed: int, versions: np.ndarray,
                per_class: np.ndarray) -> HarnessResult:
        """The strategy's records as the harness's result (same columns and summary)."""
        c = problem.clients
        table = strategy.rounds_frame()
        per = strategy.clients_frame()
        T = len(table)
        held = per["held_version"].to_numpy().reshape(T, c.count)
        mu = per["mu"].to_numpy().reshape(T, c.count)
        vacc = per_class @ self.request_mix                   # per version
        client_acc = per_class @ self.dist.T                  # (versions, clients)
        P = on_time_fraction(c.arrival_rate[None, :], mu, c.deadline[None, :])
        acc_held = client_acc[held, np.arange(c.count)[None, :]]
        lam = c.arrival_rate
        table["expected_timely_accuracy"] = ((lam * P * acc_held).sum(axis=1) / lam.sum()
                                             if lam.sum() > 0 else np.nan)
        table["global_accuracy"] = vacc[1:]
        summary = {
            "avg_timely_accuracy": float(table["correct"].sum() / max(table["requests"].sum(), 1)),
            "expected_timely_accuracy": float(table["expected_timely_accuracy"].mean()),
            "mean_aom": float(table["mean_aom"].mean()),
            "avg_resource_use": float(table["resource_use"].mean()),
            "avg_measured_use": float(table["measured_use"].mean()),
            "final_K": float(strategy.K[-1]),
            "mean_K": float(table["K"].mean()),
            "final_global_accuracy": float(vacc[-1]),
            "rounds": T,
            "seed": seed,
            "serving_draws": 1,
            "engine": "flower",
        }
        return HarnessResult(problem.name, strategy.policy.name, seed, table, summary,
                             np.asarray(strategy.K), np.asarray(strategy.V), vacc, versions,
                             strategy.held_version.copy())
