"""Surrogate, policies and online controller in simulation: AoM and K limits, the V trade-off."""

from __future__ import annotations

import json

import numpy as np
import pytest
from instances import random_problem, with_aggregation_noise
from jointopt.solvers.jti import Allocation

import jointopt
from jointopt.cli import main
from jointopt.controller import DriftPlusPenalty
from jointopt.policies import POLICIES, Fixed, Online
from jointopt.surrogate import simulate


@pytest.fixture(scope="module")
def default():
    return jointopt.load_scenario("default")


def _fixed(problem, q, d, mu=None):
    n = problem.n
    mu = problem.mu_lo if mu is None else mu
    return Fixed(Allocation(np.full(n, q), np.full(n, d), np.broadcast_to(mu, n).copy()))


# -- oracle 2: constant refresh probability -------------------------------------------------
@pytest.mark.parametrize("theta", [0.1, 0.35, 0.8])
def test_mean_age_of_model_under_constant_theta(theta):
    problem = random_problem(400, 3, caps=False)
    res = simulate(problem, _fixed(problem, 0.5, theta), rounds=600, seed=1)
    late = res.table["mean_aom"].iloc[100:]
    # ages of 400 independent clients, correlated over rounds: tolerance from the
    # geometric law's standard deviation sqrt(1-theta)/theta over ~400 x (500 / corr. time)
    sd = np.sqrt(1 - theta) / theta / np.sqrt(400 * 500 * theta / (2 - theta))
    assert abs(late.mean() - (1 - theta) / theta) < 5 * sd + 1e-9


def test_always_refreshing_keeps_every_age_at_zero():
    problem = random_problem(50, 4, caps=False)
    res = simulate(problem, _fixed(problem, 0.3, 1.0), rounds=50, seed=0)
    assert (res.table["mean_aom"] == 0).all() and res.aom_pmf()[0] == 1.0


# -- oracle 3: constant participation ------------------------------------------------------
def test_global_error_settles_at_the_fixed_point_under_constant_q():
    problem = random_problem(200, 5, caps=False)
    q = np.full(problem.n, 0.4)
    target = problem.convergence_model.fixed_point(q, problem.clients.p)
    res = simulate(problem, _fixed(problem, 0.4, 0.5), rounds=1500, seed=2)
    late = res.table["K"].iloc[300:]
    # K is an AR(1) with factor a driven by the sampled variance; its time average over
    # 1200 rounds is within a few standard errors of the fixed point
    a = problem.convergence_model.a
    se = late.std() * np.sqrt((1 + a) / (1 - a) / len(late))
    assert abs(late.mean() - target) < 5 * se


# -- ranges and hard caps in every round, for every policy -----------------------------------
@pytest.mark.parametrize("name", list(POLICIES))
@pytest.mark.parametrize("seed", [0, 7])
def test_every_policy_respects_ranges_and_caps_every_round(name, seed):
    problem = random_problem(25, 10 + seed)
    res = simulate(problem, name, rounds=40, seed=seed)
    assert res.summary["max_range_violation"] <= 1e-9
    assert res.summary["max_cap_violation"] <= 1e-9


def test_static_baselines_meet_the_budget_every_round(default):
    for name in ("training_first", "inference_first", "equal_split", "static"):
        res = simulate(default, name, rounds=20, seed=0)
        assert res.table["resource_use"].max() <= default.clients.budget.mean() + 1e-9


def test_training_first_trains_and_downloads_together_before_serving(default):
    """q = d = 1 first (raised together where the allotment cannot pay for both), then mu."""
    from jointopt.policies import TrainingFirst, allotment

    for problem in (default, random_problem(30, 5)):
        policy = TrainingFirst()
        policy.reset(problem)
        x, c = policy.x, problem.clients
        use = c.cost_train * x.q + c.cost_download * x.d + c.cost_service * x.mu
        np.testing.assert_allclose(use, np.maximum(allotment(problem), problem.min_use))
        short = x.d < 1.0
        # where training and downloads are not both full, serving gets only its least rate
        # and the download keeps up with training (q exceeds d only at q_min)
        np.testing.assert_allclose(x.mu[short], problem.mu_lo[short])
        np.testing.assert_allclose(x.q[short], np.maximum(x.d[short], c.q_min[short]))
        assert (x.q[~short] == 1.0).all()
    policy = TrainingFirst()
    policy.reset(default)
    assert (policy.x.d > 0.4).all()  # the budget of 3 pays for q = d ~ 0.5 on default


def test_fifo_serving_follows_the_queue_not_its_stationary_law(default):
    """``simulation.queue = "fifo"``: at a moderate load the on-time share matches the M/M/1
    law; a queue at its capacity that starts empty is on time far more often over a short
    run than its stationary law says (the harness's queues behave so)."""
    fifo = default.replace(simulation={**default.to_dict()["simulation"], "queue": "fifo"})
    lam, tau = default.clients.arrival_rate, default.clients.deadline
    for mu, rounds, check in ((3.0 * lam, 400, "law"), (default.mu_lo, 60, "transient")):
        policy = _fixed(fifo, 1.0, 1.0, mu)
        res = simulate(fifo, policy, rounds=rounds, seed=1)
        share = res.table["on_time"].sum() / res.table["requests"].sum()
        law = float(np.sum(lam * (1 - np.exp(-(mu - lam) * tau))) / lam.sum())
        if check == "law":
            assert share == pytest.approx(law, abs=0.02)
        else:
            assert share > law + 0.05


# -- the online controller -------------------------------------------------------------
def test_online_average_use_converges_to_the_budget(default):
    res = simulate(default, "online", rounds=400, seed=3)
    use = res.table["resource_use"].iloc[100:].mean()
    budget = res.summary["budget"]
    assert abs(use - budget) <= 0.02 * budget


def test_virtual_queues_follow_the_update_rule():
    seen = []

    def slot(obs, Z, warm):
        seen.append(Z.copy())
        return obs, np.array([3.0, 1.0, 5.0])

    ctrl = DriftPlusPenalty(slot, budgets=np.array([2.0, 2.0, np.inf]))
    for _ in range(3):
        ctrl.step(None)
    np.testing.assert_allclose(seen[1], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(ctrl.Z, [3.0, 0.0, 0.0])


def test_settle_recharges_the_queues_with_the_measured_use():
    def slot(obs, Z, warm):
        return obs, np.array([3.0, 1.0, 5.0])   # planned use

    ctrl = DriftPlusPenalty(slot, budgets=np.array([2.0, 2.0, np.inf]), Z0=1.0)
    with pytest.raises(RuntimeError):
        ctrl.settle(np.zeros(3))
    ctrl.step(None)
    np.testing.assert_allclose(ctrl.Z, [2.0, 0.0, 0.0])
    ctrl.settle(np.array([0.0, 4.0, 9.0]))    # measured: from Z = 1 before the step
    np.testing.assert_allclose(ctrl.Z, [0.0, 3.0, 0.0])
    ctrl.step(None)                           # the next step starts from the settled Z
    np.testing.assert_allclose(ctrl.Z, [1.0, 2.0, 0.0])


def test_larger_V_gives_higher_accuracy_and_larger_backlog(default):
    """Oracle 8, in expectation (averaged over seeds), from V = 10 up."""
    acc, backlog = [], []
    for V in (10.0, 30.0, 100.0):
        p = default.replace(controller={**default.to_dict()["controller"], "V": V})
        runs = [simulate(p, "online", rounds=150, seed=s).summary for s in range(3)]
        acc.append(np.mean([r["expected_timely_accuracy"] for r in runs]))
        backlog.append(np.mean([r["mean_backlog"] for r in runs]))
    assert acc[0] < acc[1] < acc[2]
    assert backlog[0] < backlog[1] < backlog[2]


@pytest.mark.parametrize("pricing", ["backlog", "exact"])
def test_small_V_is_bang_bang_only_with_the_linear_price(default, pricing):
    """Below V ~ 10 the textbook price (the backlog Z) makes the spend bang-bang: a queue at
    zero makes resources free, the round spends up to its cap and the next one the least, and
    the backlog no longer grows with V (measured, 300 rounds: 2.2 at V = 1, 1.0 at V = 10).
    Pricing at the backlog the decision leaves (``pricing = "exact"``) keeps the backlog
    growing with V and the timely accuracy near its large-V level."""
    runs = {}
    for V in (1.0, 10.0):
        p = default.replace(controller={**default.to_dict()["controller"], "V": V,
                                        "pricing": pricing})
        runs[V] = simulate(p, "online", rounds=80, seed=0).summary
    small, large = runs[1.0], runs[10.0]
    if pricing == "backlog":
        assert small["mean_backlog"] > large["mean_backlog"]
        assert small["avg_timely_accuracy"] < large["avg_timely_accuracy"] - 0.2
    else:
        assert small["mean_backlog"] < 0.5 * large["mean_backlog"]
        assert small["avg_timely_accuracy"] > large["avg_timely_accuracy"] - 0.02


def test_exact_pricing_prices_at_the_backlog_left():
    """One entity with use(pi) = 6 - 2 pi (clipped to [1, 6]), budget 3, backlog Z: the price
    solves pi = max(Z + use(pi) - 3, 0), i.e. pi = (Z + 3) / 3 while use stays inside."""
    seen = []

    def slot(obs, price, warm):
        seen.append(price.copy())
        return price, np.clip(6.0 - 2.0 * price, 1.0, 6.0)

    ctrl = DriftPlusPenalty(slot, budgets=np.array([3.0, np.inf]), Z0=np.array([1.5, 0.0]),
                            pricing="exact", max_use=np.array([6.0, 6.0]))
    ctrl.step(None)
    np.testing.assert_allclose(ctrl.price, [1.5, 0.0], atol=1e-3)
    np.testing.assert_allclose(ctrl.Z, [1.5, 0.0], atol=1e-3)  # use 3 = budget: Z stays
    assert len(seen) < 10 and all(p[1] == 0.0 for p in seen)
    with pytest.raises(ValueError, match="pricing"):
        DriftPlusPenalty(slot, budgets=np.ones(2), pricing="nope")


def test_online_beats_the_myopic_spec_form_on_the_default_scenario(default):
    """The look-ahead horizon is what makes the controller worth using (see lookahead)."""
    myopic = default.replace(controller={**default.to_dict()["controller"], "horizon": 0.0})
    with_h = simulate(default, "online", rounds=200, seed=4).summary
    without = simulate(myopic, "online", rounds=200, seed=4).summary
    assert with_h["avg_timely_accuracy"] > without["avg_timely_accuracy"]


# -- reproducibility -------------------------------------------------------------------
def test_aggregation_noise_lowers_accuracy_only_where_few_clients_aggregate(default):
    """accuracy.aggregation_noise: with every client training nothing changes; with partial
    participation the same decisions are less accurate (the deficit is read, never
    observed: training and serving go as before)."""
    noisy = with_aggregation_noise(default, 0.5)
    full = [simulate(p, _fixed(p, 1.0, 1.0, p.clients.mu_max), rounds=20, seed=3).table
            for p in (default, noisy)]
    assert full[0]["timely_accuracy"].equals(full[1]["timely_accuracy"])
    base, read = (simulate(p, _fixed(p, 0.3, 1.0, p.clients.mu_max), rounds=20, seed=3).table
                  for p in (default, noisy))
    for col in ("K", "mean_aom", "requests", "on_time"):
        assert base[col].equals(read[col]), col
    assert (read["expected_timely_accuracy"] <= base["expected_timely_accuracy"] + 1e-12).all()
    assert read["expected_timely_accuracy"].mean() < base["expected_timely_accuracy"].mean()


def test_online_plans_with_the_aggregation_deficit(default, monkeypatch):
    """From its second round the online policy plans with the deficit linearised at its
    first decision: it trains more, and on the default scenario with noise 0.17 (about what
    the harness fits on ``analytic``) that pays within the same budget, against the same
    controller planning without it (seeds 0-2, 60 rounds)."""
    from jointopt.solvers.jti.round import RoundSolver

    noisy = with_aggregation_noise(default, 0.17)
    aware = [simulate(noisy, "online", rounds=60, seed=s) for s in range(3)]
    monkeypatch.setattr(RoundSolver, "linearise_deficit", lambda self, x: 0.0)
    blind = [simulate(noisy, "online", rounds=60, seed=s) for s in range(3)]
    for a, b in zip(aware, blind, strict=True):
        assert a.table["mean_q"].iloc[0] == b.table["mean_q"].iloc[0]
        assert a.table["mean_q"].iloc[1:].mean() > b.table["mean_q"].iloc[1:].mean()
        assert a.summary["budget_ratio"] <= b.summary["budget_ratio"] + 0.002
    gain = np.mean([a.summary["expected_timely_accuracy"] - b.summary["expected_timely_accuracy"]
                    for a, b in zip(aware, blind, strict=True)])
    assert gain > 0.001


def test_static_plans_with_the_aggregation_deficit(default):
    """The static policy solves again with the deficit linearised at its first solution:
    more participation, within the same budget."""
    from jointopt.policies import Static

    noisy = with_aggregation_noise(default, 0.17)
    plain, aware = Static(), Static()
    plain.reset(default)
    aware.reset(noisy)
    assert aware.x.q.mean() > plain.x.q.mean() + 1e-3
    c = default.clients
    use = c.cost_train * aware.x.q + c.cost_download * aware.x.d + c.cost_service * aware.x.mu
    assert np.all(use <= np.minimum(c.cap, c.budget) + 1e-9)


def test_aggregation_noise_must_not_be_negative(default):
    from jointopt.errors import ValidationError

    with pytest.raises(ValidationError, match="accuracy.aggregation_noise"):
        with_aggregation_noise(default, -0.1)


def test_identical_seeds_give_identical_tables(default):
    a = simulate(default, "online", rounds=30, seed=11).table
    b = simulate(default, "online", rounds=30, seed=11).table
    c = simulate(default, "online", rounds=30, seed=12).table
    assert a.equals(b)
    assert not a.equals(c)


def test_policies_are_reusable_across_runs(default):
    policy = Online()
    first = simulate(default, policy, rounds=20, seed=1).table
    again = simulate(default, policy, rounds=20, seed=1).table
    assert first.equals(again)


# -- CLI --------------------------------------------------------------------------------
def test_simulate_json_has_a_summary_per_policy(capsys):
    assert main(["simulate", "--policy", "all", "--rounds", "15", "--seed", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["summary"]) == set(POLICIES)
    for summary in data["summary"].values():
        assert {"avg_timely_accuracy", "mean_aom", "avg_resource_use", "budget"} <= summary.keys()


def test_simulate_writes_tidy_tables_and_a_figure(tmp_path, capsys):
    import pandas as pd

    assert main(["simulate", "--policy", "equal_split", "--rounds", "10",
                 "--out", str(tmp_path)]) == 0
    rounds = pd.read_csv(tmp_path / "rounds.csv")
    assert len(rounds) == 10 and set(rounds["policy"]) == {"equal_split"}
    assert (tmp_path / "simulation.png").stat().st_size > 0
    assert "avg_timely_accuracy" in capsys.readouterr().out


def test_simulate_rejects_bad_rounds(capsys):
    assert main(["simulate", "--rounds", "0"]) == 2
    assert "--rounds must be >= 1" in capsys.readouterr().err
