"""Flower: the jointopt strategy on Flower's Simulation Engine (one shared simulation).

Ray's start-up is the cost (tens of seconds on a loaded machine), so one
:class:`~jointopt.flower.Simulation` of 4 nodes serves every run of this module, the
``validate --engine flower`` command's included.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("flwr")
pytest.importorskip("ray")

import torch  # noqa: E402
from jointopt.solvers.jti import Allocation  # noqa: E402

from jointopt import cli, load_scenario  # noqa: E402
from jointopt.errors import ValidationError  # noqa: E402
from jointopt.flower import (  # noqa: E402
    FlowerHarness,
    JointStrategy,
    Simulation,
    flatten,
    model_arrays,
)
from jointopt.harness.data import sample_requests  # noqa: E402
from jointopt.harness.fl import (  # noqa: E402
    FederatedHarness,
    HarnessConfig,
    aggregate_unbiased,
    client_rng,
    evaluate,
    serve_fifo,
)
from jointopt.harness.validate import resize  # noqa: E402
from jointopt.policies import Fixed  # noqa: E402

ROUNDS = 4
SEED = 3


@pytest.fixture(scope="module")
def problem():
    return resize(load_scenario("default"), 4)


@pytest.fixture(scope="module")
def engine(problem):
    # bounded waits: a Ray that never comes up or stalls fails the module with a
    # TimeoutError naming the wait (at most 2 starts of 5 min) instead of hanging
    with FlowerHarness(problem, start_timeout=300, round_timeout=120, retries=1) as h:
        yield h


def _fixed(problem):
    # client 0 never downloads (and trains sometimes: refresh mode is "download")
    return Fixed(Allocation(np.array([0.5, 0.6, 1.0, 0.8]), np.array([0.0, 1.0, 0.5, 0.3]),
                            problem.mu_lo * 1.5))


def _run(engine, problem, policy, seed=SEED, rounds=ROUNDS, **kw):
    """One strategy run on the shared simulation; returns it and every global version."""
    versions = []
    model = engine.build_model(seed)

    def global_error(arrays):
        w = torch.from_numpy(flatten(arrays))
        versions.append(arrays)
        return engine.measure(model, w)[0]

    strategy = JointStrategy(problem, policy, global_error=global_error, seed=seed, **kw)
    engine.simulation.run(strategy, model_arrays(model, model.flat()), rounds)
    return strategy, versions


@pytest.fixture(scope="module")
def fixed_run(engine, problem):
    return _run(engine, problem, _fixed(problem))


def test_draws_weights_and_aggregation_follow_the_policy(fixed_run, engine, problem):
    strategy, versions = fixed_run
    per = strategy.clients_frame()
    c, x = problem.clients, _fixed(problem).x
    n = c.count
    assert len(versions) == ROUNDS + 1 and len(per) == ROUNDS * n
    # participation and downloads: Bernoulli(q), Bernoulli(d) from the seeded stream
    rng = np.random.default_rng(np.random.SeedSequence(SEED).spawn(3)[0])
    task = engine.simulation.make_task(None)
    for t in range(ROUNDS):
        rows = per[per["round"] == t]
        B, D = rng.random(n) < x.q, rng.random(n) < x.d
        assert np.array_equal(rows["trained"], B) and np.array_equal(rows["downloaded"], D)
        np.testing.assert_array_equal(rows["q"], x.q)
        np.testing.assert_array_equal(rows["mu"], x.mu)
        # inverse-probability weights p_n B_n / q_n
        np.testing.assert_allclose(rows["weight"], np.where(B, c.p / x.q, 0.0))
        # the new global model is the unbiased aggregate of the nodes' local models,
        # recomputed here from the same task and seeds
        w = torch.from_numpy(flatten(versions[t]))
        local = [flatten(task.train(i, versions[t], client_rng(SEED, i, t, 0))[0])
                 for i in np.flatnonzero(B)]
        local = torch.from_numpy(np.stack(local)) if local else w.new_zeros((0, w.numel()))
        expect = aggregate_unbiased(w, local, c.p, x.q, B)
        np.testing.assert_allclose(flatten(versions[t + 1]), expect.numpy(), atol=1e-6)
        # resources actually used: c_tr B + c_dl D + c_inf mu, reported by the nodes
        np.testing.assert_allclose(
            rows["use"], c.cost_train * B + c.cost_download * D + c.cost_service * x.mu)
        # refreshed nodes hold the new version
        assert (rows["held_version"][D.astype(bool)] == t + 1).all()
    table = strategy.rounds_frame()
    assert list(table["round"]) == list(range(ROUNDS))
    np.testing.assert_allclose(table["timely_accuracy"],
                               table["correct"] / table["requests"].clip(lower=1))
    np.testing.assert_allclose(table["participants"],
                               per.groupby("round")["trained"].sum())
    np.testing.assert_allclose(table["mean_aom"], per.groupby("round")["age"].mean())
    assert (table["requests"] > 0).all() and (table["missing_replies"] == 0).all()


def test_node_that_never_downloads_keeps_its_initial_model(fixed_run, problem):
    strategy, versions = fixed_run
    per = strategy.clients_frame()
    first = per[per["client"] == 0]
    init_norm = float(np.linalg.norm(flatten(versions[0]).astype(np.float64)))
    assert (first["held_version"] == 0).all()
    assert (first["held_norm"] == init_norm).all()     # the node's own copy, as it reports
    assert list(first["age"]) == list(range(1, ROUNDS + 1))
    assert first["trained"].any()                        # training did not refresh it
    client1 = per[per["client"] == 1]                    # d = 1: always the newest
    assert list(client1["held_version"]) == list(range(1, ROUNDS + 1))
    assert (client1["held_norm"] != init_norm).all()


def test_nodes_serve_as_the_harness_does(fixed_run, engine, problem):
    """Each node's serving records are the harness's serving step replayed for its client
    alone: its queue carried over from the round before, requests drawn from its client's
    label mix, answered by the version it reports holding after the round's refresh (the
    node's own stream ``client_rng(seed, client, t, 1)`` in place of the harness's one stream)."""
    strategy, versions = fixed_run
    per = strategy.clients_frame()
    c, slot, y = problem.clients, problem.simulation.slot, engine.data.y_test
    model = engine.build_model(SEED)
    preds = [evaluate(model, torch.from_numpy(flatten(v)), engine._Xt, engine._yt)[1]
             for v in versions]
    carried = 0
    for i in range(c.count):
        rows = per[per["client"] == i].sort_values("round")
        free = np.zeros(1)
        for t, row in enumerate(rows.itertuples()):
            carried += bool(free[0] > t * slot)      # the queue was still busy at slot start
            rng = client_rng(SEED, i, t, 1)
            arrivals, _, on_time, free = serve_fifo(rng, c.arrival_rate[[i]],
                                                    np.array([row.mu]), c.deadline[[i]],
                                                    slot, t, free)
            sample = sample_requests(y, engine.dist, np.full(arrivals[0], i), rng)
            right = preds[row.held_version][sample] == y[sample]
            assert (row.requests, row.on_time, row.correct) == (
                arrivals[0], on_time.sum(), (on_time & right).sum()), (i, t)
    assert carried > 0   # the replay exercised the carry-over of the queue


def test_runs_are_deterministic_by_seed(fixed_run, engine, problem):
    strategy, versions = fixed_run
    again, versions2 = _run(engine, problem, _fixed(problem))
    other, _ = _run(engine, problem, _fixed(problem), seed=SEED + 1, rounds=2)
    a, b = strategy.clients_frame(), again.clients_frame()
    assert a.equals(b)
    assert strategy.rounds_frame().equals(again.rounds_frame())
    for v1, v2 in zip(versions, versions2, strict=True):
        assert np.array_equal(flatten(v1), flatten(v2))
    c = other.clients_frame()
    assert not np.array_equal(a["trained"][: len(c)], c["trained"])


def test_online_controller_queues_are_charged_the_measured_use(engine, problem):
    strategy, _ = _run(engine, problem, "online", rounds=3)
    per = strategy.clients_frame()
    Z = problem.Z.copy()
    for t in range(3):
        use = per.loc[per["round"] == t, "use"].to_numpy()
        Z = np.maximum(Z + use - problem.clients.budget, 0.0)
    np.testing.assert_allclose(strategy.policy.controller.Z, Z)
    planned = per.groupby("round")["planned_use"].mean().to_numpy()
    assert not np.allclose(strategy.rounds_frame()["measured_use"], planned)


def test_flower_harness_runs_the_harness_result(engine, problem):
    res = engine.run("equal_split", rounds=3, seed=1)
    assert res.summary["engine"] == "flower" and res.summary["rounds"] == 3
    assert len(res.K) == 4 and len(res.V) == 3 and len(res.version_accuracy) == 4
    for col in ("K", "mean_aom", "timely_accuracy", "expected_timely_accuracy",
                "participants", "resource_use", "measured_use", "global_accuracy"):
        assert res.table[col].notna().all(), col
    assert 0.0 <= res.summary["avg_timely_accuracy"] <= 1.0
    init = engine.build_model(1).flat().numpy()
    assert np.array_equal(res.versions[0], init)



def test_flower_refuses_more_than_one_serving_draw(problem):
    """The nodes serve one request stream per round: the engine says so before starting."""
    with pytest.raises(ValidationError, match="serving_draws must be 1 on the flower engine"):
        FlowerHarness(problem, HarnessConfig(serving_draws=2))
    with pytest.raises(ValidationError, match="serving_draws must be 1 on the flower engine"):
        FlowerHarness(problem).run("equal_split", rounds=2, serving_draws=2)


def test_simulation_rejects_a_problem_with_other_clients_and_a_second_simulation(engine):
    smaller = resize(load_scenario("default"), 3)
    strategy = JointStrategy(smaller, "equal_split", global_error=lambda arrays: 1.0)
    with pytest.raises(ValidationError, match="clients.count"):
        engine.simulation.run(strategy, None, 1)
    with pytest.raises(RuntimeError, match="already up"):
        with Simulation(3, engine.simulation.make_task):
            pass


def test_a_simulation_that_stops_answering_fails_clearly(problem, monkeypatch):
    """No wait is unbounded: a job the engine never answers raises a TimeoutError naming
    the wait, the simulation is taken down, and later runs say why they cannot run
    (queues stand in for the engine; Ray is not touched)."""
    import queue

    sim = Simulation(4, None, start_timeout=5, round_timeout=0.05)
    downs = []
    monkeypatch.setattr(sim, "_abandon", lambda: downs.append(True))
    sim._jobs, sim._done, sim._thread = queue.Queue(), queue.Queue(), object()
    strategy = JointStrategy(problem, "equal_split", global_error=lambda arrays: 1.0,
                             connect_timeout=0.05)
    with pytest.raises(TimeoutError, match=r"4 nodes did not answer in 0.2 s to 1 rounds of "
                                           r"equal_split"):
        sim.run(strategy, None, 1)
    assert downs == [True] and sim._jobs.qsize() == 1     # the job was handed over
    with pytest.raises(RuntimeError, match="did not answer"):
        sim.run(strategy, None, 1)
    with pytest.raises(ValidationError, match="round_timeout"):
        Simulation(4, None, round_timeout=0)


def test_validate_cli_on_flower_engine(engine, capsys):
    """``jointopt validate --engine flower`` (pilots and policies on Flower; the module's
    simulation of the same 4 clients serves it)."""
    rc = cli.main(["validate", "--engine", "flower", "--clients", "4", "--rounds", "3",
                   "--policies", "equal_split,static", "--surrogate-seeds", "2", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["engine"] == "flower" and set(out["policies"]) == {"equal_split", "static"}
    for row in out["policies"].values():
        assert 0.0 <= row["measured"] <= 1.0


def test_bad_engine_and_flwr_not_imported_by_jointopt(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["validate", "--engine", "spark"])
    assert exc.value.code == 2 and "spark" in capsys.readouterr().err
    code = "import sys, jointopt, jointopt.cli, jointopt.harness; print('flwr' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr


def test_a_drifting_scenario_is_refused_before_any_round(engine, problem):
    """The Flower engine keeps each node's data fixed: a [drift] scenario is refused with
    one clear error instead of running without the drift."""
    drifting = problem.replace(drift={"rate": 0.05})
    assert drifting.drift.labels.active
    with pytest.raises(ValidationError, match="drift"):
        engine.run("equal_split", problem=drifting, rounds=2)


def test_flower_trains_what_the_in_process_harness_trains(fixed_run, problem):
    # one seed, one policy: the same participation draws, the same keyed minibatches,
    # so the same global versions on either engine
    _, versions = fixed_run
    res = FederatedHarness(problem).run(_fixed(problem), rounds=ROUNDS, seed=SEED)
    assert len(versions) == len(res.versions)
    for arrays, w in zip(versions, res.versions, strict=True):
        np.testing.assert_allclose(flatten(arrays), w, atol=1e-6)
    assert not np.allclose(res.versions[-1], res.versions[0])
