"""The validation harness: partitioners, networks, real FedAvg, calibration, validation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("torch")
pytest.importorskip("sklearn")

import torch  # noqa: E402
from jointopt.models.queueing import on_time_fraction  # noqa: E402
from jointopt.solvers.jti import Allocation  # noqa: E402

from jointopt import cli, load_scenario  # noqa: E402
from jointopt.harness.calibrate import fit_accuracy, fit_convergence  # noqa: E402
from jointopt.harness.data import (  # noqa: E402
    dirichlet_partition,
    label_distribution,
    load_digits_data,
    sample_requests,
    shard_partition,
)
from jointopt.harness.fl import (  # noqa: E402
    FederatedHarness,
    HarnessConfig,
    aggregate_unbiased,
    client_rng,
    local_sgd,
)
from jointopt.harness.nets import digits_cnn, mlp  # noqa: E402
from jointopt.harness.validate import resize, spearman_ceiling  # noqa: E402
from jointopt.policies import Fixed  # noqa: E402


@pytest.fixture(scope="module")
def problem():
    return resize(load_scenario("default"), 10)


@pytest.fixture(scope="module")
def harness(problem):
    return FederatedHarness(problem)


@pytest.fixture(scope="module")
def data():
    return load_digits_data()


# -- data -----------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.1, 0.5, 100.0])
def test_dirichlet_partition_covers_every_index_once(data, alpha):
    w = np.linspace(0.5, 1.5, 12)
    parts = dirichlet_partition(data.y_train, 12, alpha, weights=w, rng=3)
    allidx = np.concatenate(parts)
    assert len(allidx) == len(data.y_train)
    assert np.array_equal(np.sort(allidx), np.arange(len(data.y_train)))
    sizes = np.array([len(p) for p in parts])
    assert (sizes > 0).all()
    # sizes follow the weights (a few samples of rounding per label)
    target = len(data.y_train) * w / w.sum()
    assert np.abs(sizes - target).max() <= 12
    dist = label_distribution(data.y_train, parts, 10)
    assert np.allclose(dist.sum(axis=1), 1.0)
    if alpha == 0.1:  # strong skew: most clients dominated by few labels
        assert np.median(dist.max(axis=1)) > 0.4


def test_dirichlet_partition_leaves_no_client_empty_with_about_one_sample_each(data):
    n = 1000                                # 1257 training samples
    parts = dirichlet_partition(data.y_train, n, 0.5, rng=0)
    sizes = np.array([len(p) for p in parts])
    assert (sizes > 0).all() and sizes.sum() == len(data.y_train)


def test_dirichlet_partition_is_deterministic(data):
    a = dirichlet_partition(data.y_train, 8, 0.5, rng=1)
    b = dirichlet_partition(data.y_train, 8, 0.5, rng=1)
    c = dirichlet_partition(data.y_train, 8, 0.5, rng=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("mode", ["class_aligned", "sorted_cut"])
def test_shard_partition(data, mode):
    parts = shard_partition(data.y_train, 10, 2, mode=mode, rng=0)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(data.y_train)))
    if mode == "class_aligned":
        assert all(1 <= len(np.unique(data.y_train[p])) <= 2 for p in parts)
    with pytest.raises(ValueError, match="divisible"):
        shard_partition(data.y_train, 7, 1, mode="class_aligned")


def test_requests_follow_client_label_distribution(data):
    dist = np.zeros((2, 10))
    dist[0, 3] = 1.0
    dist[1, [1, 7]] = 0.5
    rng = np.random.default_rng(0)
    client = np.repeat([0, 1], 2000)
    idx = sample_requests(data.y_test, dist, client, rng)
    labels = data.y_test[idx]
    assert (labels[:2000] == 3).all()
    assert set(np.unique(labels[2000:])) == {1, 7}
    assert abs(np.mean(labels[2000:] == 1) - 0.5) < 0.05


# -- networks -------------------------------------------------------------------------
@pytest.mark.parametrize("build,cuts", [(lambda: mlp(64, (32, 16), 10, exits=(1, 2), seed=0),
                                         (0, 1, 2, 3)),
                                        (lambda: digits_cnn(exits=(1, 2, 4), seed=0),
                                         (0, 1, 2, 3, 4, 5, 6))])
def test_block_net_split_and_exits(build, cuts):
    net = build()
    x = torch.rand(5, 64)
    full = net(x)
    for s in cuts:
        assert torch.equal(net.server(net.client(x, s), s), full)
    outs = net.exits(x)
    assert len(outs) == len(net.exit_points) + 1
    assert all(o.shape == (5, 10) for o in outs)
    assert torch.equal(outs[-1], full)


# -- federated training ---------------------------------------------------------------
def test_unbiased_aggregation_matches_full_participation_in_expectation():
    rng = np.random.default_rng(0)
    n, dim, draws = 6, 4, 4_000
    w = torch.as_tensor(rng.normal(size=dim))
    local = torch.as_tensor(rng.normal(size=(n, dim)))
    p = rng.uniform(0.5, 1.5, n)
    p /= p.sum()
    q = np.array([0.05, 0.2, 0.5, 0.8, 1.0, 0.3])
    full = aggregate_unbiased(w, local, p, np.ones(n), np.ones(n, bool))
    assert torch.allclose(full, w + (torch.as_tensor(p)[:, None] * (local - w)).sum(0))
    # exact expectation: every participation pattern, weighted by its probability
    exact = torch.zeros(dim, dtype=w.dtype)
    for bits in range(2 ** n):
        trained = np.array([(bits >> i) & 1 for i in range(n)], dtype=bool)
        prob = float(np.prod(np.where(trained, q, 1.0 - q)))
        if prob > 0:
            exact += prob * aggregate_unbiased(w, local[torch.as_tensor(trained)], p, q, trained)
    assert torch.allclose(exact, full, atol=1e-12)
    # many sampled rounds average to it
    total = torch.zeros(dim, dtype=w.dtype)
    sq = torch.zeros(dim, dtype=w.dtype)
    for _ in range(draws):
        trained = rng.random(n) < q
        agg = aggregate_unbiased(w, local[torch.as_tensor(trained)], p, q, trained)
        total += agg
        sq += agg * agg
    mean = total / draws
    stderr = torch.sqrt((sq / draws - mean * mean) / draws)
    assert torch.all(torch.abs(mean - full) < 5 * stderr)
    # a biased rule (no 1/q) would sit far outside that band
    biased = w + (torch.as_tensor(p * q)[:, None] * (local - w)).sum(0)
    assert torch.any(torch.abs(biased - full) > 10 * stderr)


def test_client_that_never_downloads_keeps_its_initial_model(harness, problem):
    n = problem.clients.count
    d = np.ones(n)
    d[0] = 0.0
    q = np.full(n, 0.5)
    q[0] = problem.clients.q_min[0]  # it even trains sometimes, but mode is "download"
    policy = Fixed(Allocation(q, d, problem.clients.mu_max.copy()))
    res = harness.run(policy, rounds=8, seed=0)
    init = harness.build_model(0).flat().numpy()
    assert res.held_version[0] == 0
    assert np.array_equal(res.versions[res.held_version[0]], init)
    assert (res.held_version[1:] == 8).all()  # d = 1: everyone else holds the newest
    assert not np.array_equal(res.versions[-1], init)
    assert res.table["mean_aom"].iloc[-1] == pytest.approx(8 / n)


def test_a_clients_minibatches_do_not_depend_on_who_else_trains(harness):
    # keyed draws are common random numbers: client 2's local model is the same whether
    # it trains alone or with four others
    model, h = harness.build_model(0), harness
    w, cfg = model.flat(), h.config

    def train(clients, rng):
        return local_sgd(model, w, h._X, h._y, h.parts, np.array(clients), rng=rng,
                         steps=cfg.local_steps, batch_size=cfg.batch_size, lr=cfg.lr)

    many = train([0, 1, 2, 3, 4], [client_rng(7, i, 3, 0) for i in range(5)])
    alone = train([2], [client_rng(7, 2, 3, 0)])
    torch.testing.assert_close(many[2], alone[0], atol=1e-6, rtol=0)
    assert not torch.allclose(many[1], many[2])
    with pytest.raises(ValueError, match="2 generators for 3 clients"):
        train([0, 1, 2], [client_rng(7, i, 3, 0) for i in range(2)])


def test_runs_of_one_seed_share_each_clients_minibatches(harness, problem):
    # two policies of one seed: each round's new version is the unbiased aggregate of
    # local models trained on minibatches keyed by (seed, client, round)
    n, cfg, seed = problem.clients.count, harness.config, 5
    mu = problem.clients.mu_max.copy()
    for q in (np.ones(n), np.linspace(0.3, 0.9, n)):
        res = harness.run(Fixed(Allocation(q, np.ones(n), mu)), rounds=2, seed=seed)
        B = np.random.default_rng(np.random.SeedSequence(seed).spawn(5)[0]).random(n) < q
        model = harness.build_model(seed)
        w = torch.from_numpy(res.versions[0])
        who = np.flatnonzero(B)
        local = local_sgd(model, w, harness._X, harness._y, harness.parts, who,
                          steps=cfg.local_steps, batch_size=cfg.batch_size, lr=cfg.lr,
                          rng=[client_rng(seed, i, 0, 0) for i in who])
        expect = aggregate_unbiased(w, local, problem.clients.p, q, B, cfg.server_lr)
        np.testing.assert_allclose(res.versions[1], expect.numpy(), atol=1e-6)


def test_run_is_deterministic_by_seed(harness):
    a = harness.run("equal_split", rounds=5, seed=3)
    b = harness.run("equal_split", rounds=5, seed=3)
    c = harness.run("equal_split", rounds=5, seed=4)
    assert a.table.equals(b.table)
    assert np.array_equal(a.versions, b.versions)
    assert not np.array_equal(a.K, c.K)


def test_training_lowers_the_loss_and_serving_is_timely_as_mm1(harness, problem):
    n = problem.clients.count
    mu = problem.mu_lo * 1.5
    policy = Fixed(Allocation(np.ones(n), np.ones(n), mu))
    res = harness.run(policy, rounds=60, seed=1)
    assert res.K[-1] < 0.5 * res.K[0]
    assert res.version_accuracy[-1] > 0.8
    lam = problem.clients.arrival_rate
    expected = float(np.sum(lam * on_time_fraction(lam, mu, problem.clients.deadline))
                     / lam.sum())
    measured = res.table["on_time"].sum() / res.table["requests"].sum()
    assert abs(measured - expected) < 0.05



def _feedback_driven(problem, seen):
    """A policy whose downloads follow its feedback (a client downloads when its last
    round had fewer right answers than the median), so that the run's trajectory depends
    on what it observes; ``seen`` collects the observations."""
    c = problem.clients

    class Reactive(Fixed):
        def decide(self, obs):
            seen.append(obs)
            fb = obs.feedback
            d = (np.ones(c.count) if fb is None
                 else (fb.correct < np.median(fb.correct)).astype(float))
            return Allocation(np.full(c.count, 0.5), d, problem.mu_lo * 1.2)

    return Reactive(Allocation(np.ones(c.count), np.ones(c.count), c.mu_max.copy()))


def test_serving_draws_pool_streams_and_leave_what_the_policy_sees(harness, problem):
    """serving_draws=1 is the default run number for number; with R draws the policy
    observes exactly what it observes with one (stream 0: same feedback, so the same
    participation, training, K, V and held versions), while the measured columns pool R
    streams: about R times the requests, stream 0's among them."""
    R, rounds = 4, 12
    runs, seen = {}, {}
    for draws in (1, R):
        seen[draws] = []
        h = FederatedHarness(problem, HarnessConfig(serving_draws=draws))
        runs[draws] = h.run(_feedback_driven(problem, seen[draws]), rounds=rounds, seed=2)
    default = harness.run(_feedback_driven(problem, []), rounds=rounds, seed=2)
    assert default.table.equals(runs[1].table) and default.summary == runs[1].summary
    one, many = runs[1], runs[R]
    assert one.summary["serving_draws"] == 1 and many.summary["serving_draws"] == R
    for key in ("K", "V", "versions", "held_version"):
        assert np.array_equal(getattr(one, key), getattr(many, key)), key
    for a, b in zip(seen[1][1:], seen[R][1:], strict=True):
        assert np.array_equal(a.feedback.on_time, b.feedback.on_time)
        assert np.array_equal(a.feedback.correct, b.feedback.correct)
    assert len({tuple(o.feedback.correct) for o in seen[1][1:]}) > 1  # it does react
    # one stream: the table is the feedback; R streams: stream 0's counts are in the pool
    fb_correct = np.array([o.feedback.correct.sum() for o in seen[1][1:]])
    fb_on_time = np.array([o.feedback.on_time.sum() for o in seen[1][1:]])
    assert np.array_equal(one.table["correct"].to_numpy()[:-1], fb_correct)
    assert np.array_equal(one.table["on_time"].to_numpy()[:-1], fb_on_time)
    assert (many.table["correct"].to_numpy()[:-1] >= fb_correct).all()
    assert (many.table["on_time"].to_numpy()[:-1] >= fb_on_time).all()
    ratio = many.table["requests"].sum() / one.table["requests"].sum()
    assert 0.8 * R < ratio < 1.2 * R
    assert not many.table["correct"].equals(one.table["correct"] * R)
    assert many.summary["avg_timely_accuracy"] == pytest.approx(
        many.table["correct"].sum() / many.table["requests"].sum())


@pytest.mark.parametrize("draws, match", [(0, "serving_draws must be an integer >= 1"),
                                          (-3, "serving_draws must be"),
                                          (2.0, "serving_draws must be"),
                                          (True, "serving_draws must be"),
                                          (10**9, "JOINTOPT_MAX_SEEDS")])
def test_serving_draws_are_checked(draws, match):
    from jointopt.errors import ValidationError

    with pytest.raises(ValidationError, match=match):
        HarnessConfig(serving_draws=draws)


def test_a_run_may_serve_other_draws_than_the_config_and_pilots_serve_one(problem):
    """run(serving_draws=R) overrides the config for that run (checked like it); the
    calibration's pilots serve one stream whatever the harness serves (the fits read
    training only)."""
    from jointopt.errors import ValidationError
    from jointopt.harness.calibrate import calibrate

    h = FederatedHarness(problem, HarnessConfig(serving_draws=3))
    assert h.run("equal_split", rounds=3, seed=1).summary["serving_draws"] == 3
    assert h.run("equal_split", rounds=3, seed=1, serving_draws=2).summary[
        "serving_draws"] == 2
    with pytest.raises(ValidationError, match="serving_draws"):
        h.run("equal_split", rounds=3, seed=1, serving_draws=0)
    cal = calibrate(h, rounds=3, seed=1, pilots=(1.0, 0.5))
    assert [r.summary["serving_draws"] for r in cal.pilots] == [1, 1]


def test_validate_cli_serving_draws_option(capsys):
    """--serving-draws is a checked count, and the flower engine (its nodes serve one
    stream) refuses more than one, before anything starts."""
    from jointopt.harness.validate import DEFAULT_SERVING_DRAWS

    assert DEFAULT_SERVING_DRAWS == {"harness": 10, "flower": 1}
    for args, culprit in ((["--serving-draws", "0"], "--serving-draws must be >= 1"),
                          (["--serving-draws", "3", "--engine", "flower"],
                           "--serving-draws must be 1 with --engine flower")):
        assert cli.main(["validate", "--rounds", "5", *args]) == 2
        err = capsys.readouterr().err
        assert culprit in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# -- calibration ----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["one_step", "trajectory"])
def test_calibration_recovers_known_constants(method):
    rng = np.random.default_rng(0)
    a, b, c = 0.85, 0.4, 0.03
    runs = []
    for K0 in (2.3, 1.0, 3.0):
        V = rng.uniform(0.0, 1.5, 40)
        K = [K0]
        for v in V:
            K.append(a * K[-1] + b * v + c)
        runs.append((np.array(K), V))
    fit = fit_convergence(runs, method=method)
    assert (fit.a, fit.b, fit.c) == pytest.approx((a, b, c), rel=1e-4, abs=1e-6)
    assert fit.r2 > 0.9999 and fit.rmse < 1e-6
    # measurement noise: still close, and the quality numbers say it is worse
    noisy = [(K + rng.normal(0, 0.01, len(K)), V) for K, V in runs]
    fit2 = fit_convergence(noisy, method=method)
    assert abs(fit2.a - a) < 0.03 and abs(fit2.b - b) < 0.05
    assert fit2.rmse > fit.rmse


@pytest.mark.parametrize("map,params", [("affine", {"acc_max": 0.95, "kappa": 0.35,
                                                    "acc_min": 0.1}),
                                        ("exponential", {"acc_max": 0.97, "scale": 0.8,
                                                         "acc_min": 0.1}),
                                        ("logistic", {"acc_max": 0.96, "midpoint": 1.7,
                                                      "width": 0.35, "acc_min": 0.1})])
def test_accuracy_fit_recovers_known_map(map, params):
    from jointopt.models.accuracy import ACCURACY_MAPS

    e = np.linspace(0.0, 3.0, 60)
    acc = ACCURACY_MAPS[map](**params)(e)
    fit = fit_accuracy(e, acc, map)
    for key, value in params.items():
        assert fit.params[key] == pytest.approx(value, abs=1e-4)
    assert fit.r2 > 0.9999


@pytest.mark.parametrize("map,params", [("affine", {"acc_max": 0.95, "kappa": 0.35,
                                                    "acc_min": 0.1}),
                                        ("logistic", {"acc_max": 0.96, "midpoint": 1.7,
                                                      "width": 0.35, "acc_min": 0.1})])
def test_accuracy_fit_recovers_the_aggregation_noise(map, params):
    """Pairs read at error + beta * noise: the fit gives back the map and beta; with no
    noise column beta stays 0."""
    from jointopt.models.accuracy import ACCURACY_MAPS

    e = np.tile(np.linspace(0.2, 2.6, 40), 3)
    noise = np.repeat([0.0, 0.3, 0.8], 40)
    acc = ACCURACY_MAPS[map](**params)(e + 0.4 * noise)
    fit = fit_accuracy(e, acc, map, noise=noise)
    assert fit.aggregation_noise == pytest.approx(0.4, abs=1e-3)
    for key, value in params.items():
        assert fit.params[key] == pytest.approx(value, abs=1e-3)
    assert fit_accuracy(e, acc, map).aggregation_noise == 0.0
    with pytest.raises(ValueError, match="one entry per"):
        fit_accuracy(e, acc, map, noise=noise[:-1])


# -- validation -----------------------------------------------------------------------
def test_quick_validation_cli_json(capsys, tmp_path):
    """3 policies, 10 clients, 30 rounds, 3 serving draws, through the CLI (a few
    seconds)."""
    rc = cli.main(["validate", "default", "--policies", "online,training_first,equal_split",
                   "--clients", "10", "--rounds", "30", "--seed", "0", "--json",
                   "--surrogate-seeds", "5", "--serving-draws", "3",
                   "--accuracy-map", "logistic", "--out", str(tmp_path)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["serving_draws"] == 3
    assert out["calibration"]["accuracy"]["map"] == "logistic"
    assert set(out["policies"]) == {"online", "training_first", "equal_split"}
    for row in out["policies"].values():
        assert 0.0 <= row["predicted"] <= 1.0 and 0.0 <= row["measured"] <= 1.0
        assert row["abs_error"] == pytest.approx(abs(row["predicted"] - row["measured"]))
    assert out["spearman"] is None or -1.0 <= out["spearman"] <= 1.0
    assert out["calibration"]["convergence"]["r2"] is not None
    for name in ("validation.csv", "validation_rounds.csv", "validation_windows.csv",
                 "calibration.json", "validation.png"):
        assert (tmp_path / name).stat().st_size > 0
    windows = pd.read_csv(tmp_path / "validation_windows.csv")
    assert sorted(set(windows["first"])) == [0, 5, 20]
    assert set(windows["policy"]) == {"online", "training_first", "equal_split"}


def test_validate_rejects_bad_input(capsys):
    assert cli.main(["validate", "--policies", "nope", "--rounds", "5"]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli.main(["validate", "--clients", "0", "--rounds", "5"]) == 2
    assert "--clients" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["validate", "--accuracy-map", "cubic", "--rounds", "5"])
    assert "--accuracy-map" in capsys.readouterr().err


def test_import_jointopt_does_not_import_torch():
    code = "import sys, jointopt, jointopt.cli, jointopt.harness; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr


def test_validate_is_deterministic_by_seed(problem):
    from jointopt.harness.validate import validate

    small = resize(problem, 5)
    kw = {"rounds": 6, "surrogate_seeds": 2, "pilots": (1.0, "uniform")}
    a = validate(small, ("equal_split", "static"), seed=1, **kw)
    b = validate(small, ("equal_split", "static"), seed=1, **kw)
    cols = ["policy", "predicted", "measured", "abs_error"]
    assert a.table[cols].equals(b.table[cols])
    assert a.calibration == b.calibration
    assert small.clients.count == 5
    assert np.array_equal(small.clients.arrival_rate, problem.clients.arrival_rate[:5])


def test_replicates_average_real_runs_of_distinct_seeds(problem):
    """replicates=R: each policy trains for real R times (seed, then seed + r*10**9) and the
    measured side is their mean; the first replicate is the one-run validation's run."""
    from jointopt.errors import ValidationError
    from jointopt.harness.validate import replicate_seeds, validate

    small = resize(problem, 4)
    kw = {"rounds": 4, "surrogate_seeds": 1, "pilots": (1.0, 0.5), "serving_draws": 1}
    assert replicate_seeds(3, 3) == [3, 3 + 10**9, 3 + 2 * 10**9]
    names = ("equal_split", "training_first")  # their decisions ignore the calibration
    one = validate(small, names, seed=3, **kw)
    two = validate(small, names, seed=3, replicates=2, **kw)
    h = FederatedHarness(small, HarnessConfig(serving_draws=1))
    runs = np.array([[h.run(name, rounds=4, seed=s).summary["avg_timely_accuracy"]
                      for s in replicate_seeds(3, 2)] for name in names])
    assert list(one.table["measured"]) == pytest.approx(runs[:, 0])
    assert list(two.table["measured"]) == pytest.approx(runs.mean(axis=1))
    assert np.all(runs[:, 0] != runs[:, 1])
    assert two.replicates == 2 and two.to_dict()["replicates"] == 2
    # the replicates' spread: with two runs the unbiased expected |mean - true| of a normal
    # spread is half their gap, averaged over the policies
    assert list(two.table["measured_sd"]) == pytest.approx(np.std(runs, axis=1, ddof=1))
    assert two.noise_mae == pytest.approx(np.mean(np.abs(runs[:, 0] - runs[:, 1])) / 2)
    assert two.to_dict()["noise_mae"] == pytest.approx(two.noise_mae)
    assert np.isnan(one.noise_mae) and one.to_dict()["noise_mae"] is None
    # the rank agreement that noise leaves: the averages against that same noise
    assert np.array_equal(two.runs, runs) and np.array_equal(one.runs, runs[:, :1])
    assert two.to_dict()["policies"]["equal_split"]["measured_runs"] == list(runs[0])
    assert two.noise_spearman == spearman_ceiling(runs)
    assert two.to_dict()["noise_spearman"] == pytest.approx(two.noise_spearman)
    assert np.isnan(one.noise_spearman) and one.to_dict()["noise_spearman"] is None
    assert one.noise_note() == "" and f"spearman {two.noise_spearman:.3f}" in two.noise_note()
    assert one.to_dict()["policies"]["training_first"]["measured_sd"] is None
    # pilot runs: each pilot runs twice and the calibration fits them all
    assert one.to_dict()["pilot_runs"] == 1
    piloted = validate(small, names[:1], seed=3, pilot_runs=2, **kw)
    assert piloted.pilot_runs == 2
    assert piloted.calibration["convergence"]["n"] == 2 * one.calibration["convergence"]["n"]
    with pytest.raises(ValidationError, match="pilot_runs"):
        validate(small, names[:1], pilot_runs=0, **kw)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValidationError, match="replicates"):
            validate(small, names[:1], replicates=bad, **kw)


def test_accuracy_map_is_fitted_without_the_q_min_pilot(harness):
    """By default the q_min pilot serves the convergence fit only, the map sees the other
    pilots' versions (every pilot kept where excluding would leave none);
    map_excluded=() fits the map on every pilot."""
    from jointopt.harness.calibrate import calibrate

    kw = {"rounds": 5, "seed": 2}
    cal = calibrate(harness, pilots=(1.0, "q_min"), **kw)
    versions = [len(r.version_accuracy) for r in cal.pilots]
    assert cal.accuracy.n == versions[0]
    assert cal.convergence.n == 2 * kw["rounds"]
    assert calibrate(harness, pilots=(1.0, "q_min"), map_excluded=(), **kw).accuracy.n == sum(
        versions)
    assert calibrate(harness, pilots=("q_min",), **kw).accuracy.n == versions[1]


def test_pilot_repeats_are_distinct_runs_fitted_together(harness):
    """repeats=k runs every pilot k times (the first repeat is the single pilot's run, so
    repeats=1 is the calibration as before) and fits them all; a bad count is refused."""
    from jointopt.errors import ValidationError
    from jointopt.harness.calibrate import calibrate

    kw = {"rounds": 4, "seed": 1, "pilots": (1.0, "q_min")}
    one = calibrate(harness, **kw)
    two = calibrate(harness, repeats=2, **kw)
    assert len(one.pilots) == 2 and len(two.pilots) == 4
    assert two.convergence.n == 2 * one.convergence.n
    assert two.accuracy.n == 2 * one.accuracy.n          # q_min stays out of the map's fit
    for a, b in zip(one.pilots, two.pilots[:2], strict=True):
        assert np.array_equal(a.K, b.K)
    assert not np.array_equal(two.pilots[0].K, two.pilots[2].K)
    for bad in (0, 1.5, True):
        with pytest.raises(ValidationError, match="repeats"):
            calibrate(harness, repeats=bad, **kw)


def test_calibration_runs_the_scenarios_pilots(harness):
    """Without pilots, calibrate runs the scenario's calibration.pilots, in order."""
    from jointopt.harness.calibrate import calibrate

    problem = harness.problem.replace(calibration={"pilots": [0.3, "q_min"]})
    with FederatedHarness(problem) as h:
        cal = calibrate(h, rounds=3, seed=0)
    assert len(cal.pilots) == 2
    assert np.allclose(cal.pilots[0].table["mean_q"], np.clip(0.3, problem.clients.q_min, 1).mean())
    assert np.allclose(cal.pilots[1].table["mean_q"], problem.clients.q_min.mean())


def test_calibrated_accuracy_map_family(harness):
    """The calibration fits the scenario's accuracy.calibrate family, else its map's, or the
    family asked for; the tuned problem plans and simulates with the fitted map."""
    from jointopt.models.accuracy import LogisticAccuracy

    from jointopt.harness.calibrate import calibrate

    kw = {"rounds": 5, "seed": 2, "pilots": (1.0, 0.5)}
    problem = harness.problem
    assert problem.accuracy.calibrate is None
    assert calibrate(harness, **kw).accuracy.map == problem.accuracy.map
    cal = calibrate(harness, accuracy_map="logistic", **kw)
    assert cal.accuracy.map == "logistic"
    acc = cal.apply(problem).accuracy.build()
    assert isinstance(acc, LogisticAccuracy)
    assert acc.width == pytest.approx(cal.accuracy.params["width"])
    marked = problem.replace(accuracy={**problem.to_dict()["accuracy"],
                                       "calibrate": "exponential"})
    assert calibrate(FederatedHarness(marked), **kw).accuracy.map == "exponential"


def test_calibration_fits_the_aggregation_noise_where_the_scenario_asks(harness):
    """calibration.aggregation_noise (or the argument) fits beta >= 0 with the map; the
    tuned problem carries it; off, beta is 0."""
    from jointopt.harness.calibrate import calibrate

    kw = {"rounds": 5, "seed": 2, "pilots": (1.0, 0.3)}
    assert calibrate(harness, **kw).accuracy.aggregation_noise == 0.0
    problem = harness.problem.replace(calibration={"aggregation_noise": True})
    with FederatedHarness(problem) as h:
        cal = calibrate(h, **kw)
    beta = cal.accuracy.aggregation_noise
    assert beta >= 0.0 and cal.to_dict()["accuracy"]["aggregation_noise"] == beta
    assert cal.apply(problem).accuracy.aggregation_noise == pytest.approx(beta)


def test_paired_validation_cli_reports_the_gain_with_an_interval(capsys, tmp_path):
    """--seeds: every seed validated, online's paired gain over each baseline with a 95%
    interval; the closed-loop online policy reports its estimates."""
    rc = cli.main(["validate", "default", "--policies", "online,equal_split,static",
                   "--clients", "4", "--rounds", "5", "--seeds", "0,1", "--json",
                   "--surrogate-seeds", "2", "--closed-loop", "--out", str(tmp_path)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seeds"] == [0, 1] and len(out["per_seed"]) == 2
    gains = {row["baseline"]: row for row in out["gain"]}
    assert set(gains) == {"equal_split", "static", "per-seed best"}
    assert sum(row["best"] for row in gains.values()) == 1
    for row in gains.values():
        assert row["measured_lo"] <= row["measured_gain"] <= row["measured_hi"]
    measured = {(r["seed"], name): p["measured"] for r in out["results"]
                for name, p in r["policies"].items()}
    es = [measured[(s, "online")] - measured[(s, "equal_split")] for s in (0, 1)]
    assert gains["equal_split"]["measured_gain"] == pytest.approx(np.mean(es))
    rounds = pd.read_csv(tmp_path / "validation_all.csv")
    assert len(rounds) == 6
    for name in ("gains.csv", "per_seed.csv", "gains.png", "validation_all.png"):
        assert (tmp_path / name).stat().st_size > 0
    windows = pd.read_csv(tmp_path / "windows_all.csv")
    assert len(windows) == 2 * 3              # seeds x policies x windows (5 rounds: one)
    assert set(windows["seed"]) == {0, 1} and set(windows["first"]) == {0}
    assert set(out["separated_pairs"]) == {"pairs", "separated", "agree"}
    assert out["separated_pairs"]["pairs"] == 3
    assert cli.main(["validate", "--seeds", "3", "--rounds", "5"]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_paired_validation_text_reports_run_counts_and_noise(capsys):
    """The text report names the runs per policy and per pilot; the per-seed table has a
    noise_mae column only where replicates can measure it."""
    base = ["validate", "default", "--policies", "online,equal_split", "--clients", "4",
            "--rounds", "4", "--seeds", "0,1", "--surrogate-seeds", "1", "--serving-draws",
            "1", "--no-progress"]
    assert cli.main(base) == 0
    out = capsys.readouterr().out
    assert "1 real run(s) per policy, 1 run(s) per pilot" in out
    assert "noise_mae" not in out and "noise_spearman" not in out
    assert cli.main([*base, "--replicates", "2", "--pilot-runs", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 real run(s) per policy, 2 run(s) per pilot" in out
    header = next(line for line in out.splitlines() if line.split()[:2] == ["seed", "spearman"])
    assert {"noise_mae", "noise_spearman"} <= set(header.split())


def test_validation_text_reports_the_fitted_aggregation_noise(capsys):
    """Where the scenario fits aggregation noise (the built-in analytic), the calibration
    line gives its beta; elsewhere the line leaves it out."""
    base = ["--policies", "online,equal_split", "--clients", "4", "--rounds", "4", "--seed",
            "0", "--surrogate-seeds", "1", "--serving-draws", "1", "--no-progress"]
    assert cli.main(["validate", "analytic", *base]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("calibration"))
    assert "aggregation noise" in line
    assert cli.main(["validate", "default", *base]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("calibration"))
    assert "aggregation noise" not in line


def test_window_shares_split_each_policys_lead_over_the_rounds():
    from jointopt.errors import ValidationError
    from jointopt.harness.validate import ValidationResult

    rng = np.random.default_rng(0)
    T, policies = 30, ["online", "static", "equal_split"]
    rounds = pd.DataFrame([{"policy": p, "round": t,
                            "predicted_timely_accuracy": rng.random(),
                            "measured_timely_accuracy": rng.random(),
                            "measured_expected_timely_accuracy": rng.random()}
                           for p in policies for t in range(T)])
    table = pd.DataFrame({"policy": policies})
    res = ValidationResult("s", 0, T, table, rounds)
    shares = res.window_shares((0, 5, 20))
    assert list(shares["first"].unique()) == [0, 5, 20]
    assert list(shares["last"].unique()) == [4, 19, 29]
    for side, col in (("predicted", "predicted_timely_accuracy"),
                      ("measured", "measured_timely_accuracy"),
                      ("measured_expected", "measured_expected_timely_accuracy")):
        # every window's shares add up to zero over the policies ...
        np.testing.assert_allclose(shares.groupby("first")[side].sum(), 0.0, atol=1e-12)
        # ... and a policy's shares to its run average minus the policies' mean
        avg = rounds.groupby("policy")[col].mean()
        np.testing.assert_allclose(shares.groupby("policy")[side].sum()[policies],
                                   (avg - avg.mean())[policies], atol=1e-12)
    # one window's share is that window's rounds alone
    wide = rounds.pivot(index="round", columns="policy", values="measured_timely_accuracy")
    first = (wide.iloc[:5] - wide.iloc[:5].mean(axis=1).to_numpy()[:, None]).sum() / T
    got = shares[shares["first"] == 0].set_index("policy")["measured"]
    np.testing.assert_allclose(got[policies], first[policies], atol=1e-12)
    for bad in ((), (1, 5), (0, 5, 5), (0, T)):
        with pytest.raises(ValidationError, match="bounds"):
            res.window_shares(bad)


def test_spearman_ceiling_is_the_rank_agreement_noise_leaves():
    """Two entries: a perfect predictor's Spearman is +1 unless the noise of the mean swaps
    them, with probability Phi(-gap / sd of the difference of their means); luck the runs
    share (one seed per replicate) cancels in that difference; noise far below the gaps
    leaves 1, far above them about 0; deterministic; NaN without ranks."""
    from scipy.stats import norm

    # R = 2, residuals (-a, a) and (-b, b): the mean difference has sd |a - b|
    assert spearman_ceiling([[-0.5, 0.5], [1.5, 0.5]]) == pytest.approx(
        1 - 2 * norm.cdf(-1.0), abs=0.04)
    assert spearman_ceiling([[-0.5, 0.5], [0.5, 1.5]]) == pytest.approx(1.0)  # shared luck
    means = np.array([0.80, 0.81, 0.83, 0.86, 0.90, 0.95])
    rng = np.random.default_rng(1)
    luck = rng.standard_normal((6, 3))
    luck -= luck.mean(axis=1, keepdims=True)  # the rows' means are exactly ``means``
    assert spearman_ceiling(means[:, None] + 1e-4 * luck) == pytest.approx(1.0)
    assert abs(spearman_ceiling(means[:, None] + 10 * luck)) < 0.1
    assert spearman_ceiling(means[:, None] + 0.01 * luck) > \
        spearman_ceiling(means[:, None] + 0.03 * luck)
    noisy = means[:, None] + 0.02 * luck
    assert spearman_ceiling(noisy) == spearman_ceiling(noisy)
    # policies that decided alike (equal runs) stay tied: a perfect predictor ranks them so
    assert spearman_ceiling([[0.9, 0.91], [0.9, 0.91], [0.5, 0.52]]) == pytest.approx(1.0)
    assert np.isnan(spearman_ceiling([[0.5, 0.6], [0.6, 0.5]]))  # equal means
    assert np.isnan(spearman_ceiling([[0.5, 0.6]]))
    assert np.isnan(spearman_ceiling([[0.5], [0.6]]))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 7).flatmap(lambda n: st.integers(2, 4).flatmap(
    lambda R: st.lists(st.lists(st.integers(0, 20), min_size=R, max_size=R),
                       min_size=n, max_size=n))),
       st.sampled_from([0.25, 0.5, 2.0, 4.0]), st.integers(-5, 5),
       st.randoms(use_true_random=False))
def test_spearman_ceiling_is_a_correlation_of_ranks_alone(runs, scale, shift, rnd):
    """Within [-1, 1], and the same under any order of the entries and any increasing
    affine map of every run (it sees ranks, and noise relative to the gaps). Small integer
    runs and a power-of-two scale keep the arithmetic exact, so ties stay ties."""
    runs = np.array(runs, dtype=float)
    value = spearman_ceiling(runs, draws=200)
    if np.isnan(value):
        assert np.ptp(runs.mean(axis=1)) == 0
        return
    assert -1 - 1e-9 <= value <= 1 + 1e-9
    order = list(range(len(runs)))
    rnd.shuffle(order)
    assert spearman_ceiling(runs[order], draws=200) == pytest.approx(value, abs=1e-9)
    assert spearman_ceiling(scale * runs + shift, draws=200) == pytest.approx(value, abs=1e-9)


def test_separated_pairs_counts_only_what_real_training_tells_apart():
    """A pair counts when its paired interval over the seeds excludes zero; the surrogate
    agrees when its mean difference has the same sign."""
    from jointopt.harness.validate import PairedValidation, ValidationResult

    measured = {"online": [0.90, 0.91, 0.92], "static": [0.80, 0.82, 0.81],
                "tie": [0.905, 0.900, 0.930]}
    predicted = {"online": 0.90, "static": 0.85, "tie": 0.91}

    def result(seed, predicted):
        table = pd.DataFrame([{"policy": k, "seed": seed, "predicted": predicted[k],
                               "measured": v[seed], "abs_error": 0.0}
                              for k, v in measured.items()])
        return ValidationResult("x", seed, 5, table, pd.DataFrame())

    paired = PairedValidation("x", [result(s, predicted) for s in range(3)])
    # online-static and tie-static are separated, online-tie is not
    assert paired.separated_pairs() == {"pairs": 3, "separated": 2, "agree": 2}
    flipped = {**predicted, "static": 0.95}          # the surrogate ranks static first
    paired = PairedValidation("x", [result(s, flipped) for s in range(3)])
    assert paired.separated_pairs() == {"pairs": 3, "separated": 2, "agree": 0}


# -- drift -------------------------------------------------------------------------------
def test_drifting_data_moves_training_requests_and_held_errors():
    """Under drift the clients' label mixes rotate; K is measured on the current mixes;
    a copy that is never refreshed is observed with its download error plus the drift
    model's gap (its age-squared term included), and serves worse and worse."""
    from jointopt.harness.calibrate import fit_drift

    problem = resize(load_scenario("drift"), 6)
    problem = problem.replace(drift={**problem.to_dict()["drift"], "rate": 0.25,
                                     "ageing": 0.01})
    h = FederatedHarness(problem)
    assert h.labels.active
    m0, m4 = h.mix_at(0), h.mix_at(4)
    np.testing.assert_allclose(m4, np.roll(m0, 1, axis=1))        # 4 x 0.25 = one label
    assert (m0[:, 4:] < 1e-4).all()                                # the window of 4 labels
    parts = h.drifting_parts(m4, np.random.default_rng(0))
    assert [len(p) for p in parts] == list(h.sizes)
    labels = h.data.y_train[np.concatenate(parts)]
    assert set(np.unique(labels)) <= {1, 2, 3, 4}
    seen = []
    c = problem.clients

    class Once(Fixed):  # downloads in round 5 only, trains every round
        def decide(self, obs):
            seen.append(obs)
            d = np.full(c.count, float(obs.t == 5))
            return Allocation(np.ones(c.count), d, c.mu_max.copy())

    res = h.run(Once(Allocation(np.ones(c.count), np.ones(c.count), c.mu_max.copy())),
                rounds=20, seed=0)
    growth = problem.drift.growth
    held = np.array([o.held_error[0] for o in seen[6:]])
    k = np.arange(1, 14)              # version 6 was fresh in round 5: age k in round 5 + k
    np.testing.assert_allclose(np.diff(held), growth + 0.01 * (2 * k + 1))  # the model's gap
    assert seen[6].held_error[0] == pytest.approx(res.K[6])
    # the held version (6) loses accuracy on the moving requests; the new ones do not
    A = res.class_accuracy @ res.request_mix.T
    assert A[6, 19] < A[6, 5] - 0.2 and A[20, 19] > A[6, 19] + 0.2
    fit = fit_drift([(res.class_accuracy, res.request_mix)], problem.accuracy_map)
    assert fit.growth > 0.0 and fit.jump_error == 0.0 and fit.n > 0


@pytest.mark.parametrize("ageing", [0.0, 0.002])
def test_drift_fit_recovers_a_known_gap(ageing):
    """Synthetic versions whose accuracy falls by
    kappa * (growth * age + ageing * age^2 + jump * jumps)."""
    from jointopt.models.accuracy import AffineAccuracy
    from jointopt.models.drift import DriftModel

    from jointopt.harness.calibrate import fit_drift

    acc = AffineAccuracy(1.0, 0.3, 0.0)
    model = DriftModel(0.04, 0.5, (12,), ageing)
    T = 30
    # A(v, t) = class_accuracy[v] @ request_mix[t]: with one "label" per round and the
    # identity as request mixes, class_accuracy is the (versions x rounds) table itself
    A = np.array([[float(acc(model.gap(v - 1, t))) if t >= v - 1 else 1.0 for t in range(T)]
                  for v in range(T + 1)])
    fit = fit_drift([(A, np.eye(T))], acc, jumps=(12,), max_age=10)
    assert (fit.growth, fit.ageing, fit.jump_error) == pytest.approx((0.04, ageing, 0.5),
                                                                     abs=1e-6)
    assert fit.rmse < 1e-6
    # without the age-squared term the line takes what it can of the curve
    line = fit_drift([(A, np.eye(T))], acc, jumps=(12,), max_age=10, ageing=False)
    assert line.ageing == 0.0
    assert line.rmse == pytest.approx(0.0, abs=1e-6) if ageing == 0 else line.rmse > 1e-3
