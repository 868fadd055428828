"""Scenario files and problem validation: bad input named, load/dump round trips."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from instances import random_problem
from jointopt.solvers.jti import JointTrainingInferenceProblem

import jointopt
from jointopt import scenarios
from jointopt.errors import InfeasibleError, ValidationError


def _default_dict():
    return scenarios.read_scenario("default")


def _with_clients(**fields):
    data = _default_dict()
    data["clients"] = {**data["clients"], **fields}
    return data


# -- built-ins --------------------------------------------------------------------------
def test_builtins_load_and_describe_themselves():
    names = scenarios.builtin_names()
    assert {"default", "analytic", "large"} <= set(names)
    rows = scenarios.describe()
    assert [r[0] for r in rows] == names
    for name, kind, desc in rows:
        problem = jointopt.load_scenario(name)
        assert problem.kind == kind and problem.name == name
        assert desc and "\n" not in desc


def test_random_draws_are_reproducible_and_seeded():
    a, b = jointopt.load_scenario("default"), jointopt.load_scenario("default")
    np.testing.assert_array_equal(a.clients.arrival_rate, b.clients.arrival_rate)
    other = JointTrainingInferenceProblem.from_dict(_with_clients(seed=8))
    assert not np.array_equal(a.clients.arrival_rate, other.clients.arrival_rate)
    assert np.ptp(a.clients.arrival_rate) > 0  # heterogeneous, as the description says


# -- round trips --------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
@pytest.mark.parametrize("name", ["default", "analytic"])
def test_dump_then_load_gives_an_equal_problem(tmp_path, name, suffix):
    problem = jointopt.load_scenario(name)
    path = jointopt.dump(problem, tmp_path / f"copy{suffix}")
    again = jointopt.load_scenario(path)
    assert again == problem
    assert jointopt.solve(again).objective == jointopt.solve(problem).objective


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 30), seed=st.integers(0, 2**31 - 1))
def test_random_problems_round_trip_through_toml(tmp_path_factory, n, seed):
    problem = random_problem(n, seed)
    path = jointopt.dump(problem, tmp_path_factory.mktemp("rt") / "p.toml")
    assert jointopt.load_scenario(path) == problem


def test_list_of_client_tables_equals_columns():
    cols = random_problem(4, 1).to_dict()
    rows = [{k: v[i] for k, v in cols["clients"].items() if isinstance(v, list)}
            for i in range(4)]
    as_rows = JointTrainingInferenceProblem.from_dict({**cols, "clients": rows})
    assert as_rows.clients.count == 4
    for key in ("arrival_rate", "cap", "mu_max", "q_min"):
        np.testing.assert_array_equal(getattr(as_rows.clients, key),
                                      getattr(random_problem(4, 1).clients, key))


def test_problems_are_immutable():
    problem = jointopt.load_scenario("default")
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        problem.name = "other"
    with pytest.raises(ValueError):
        problem.clients.arrival_rate[0] = 5.0
    changed = problem.replace(name="other")
    assert changed.name == "other" and problem.name == "default"


def test_errors_pickle_for_worker_processes():
    with pytest.raises(ValidationError) as exc:
        JointTrainingInferenceProblem.from_dict(_with_clients(arrival_rate=-1.0))
    back = pickle.loads(pickle.dumps(exc.value))
    assert back.field == exc.value.field and str(back) == str(exc.value)


def test_errors_pickle_the_way_dask_pickles_them():
    """Dask's processes pickle exceptions with tblib, context and traceback included: the
    pydantic error a validation error came from used to recurse forever there."""
    from tblib import pickling_support

    with pytest.raises(ValidationError) as exc:
        JointTrainingInferenceProblem.from_dict(_with_clients(arrival_rate=-1.0))
    assert exc.value.__context__ is None
    pickling_support.install(exc.value)
    back = pickle.loads(pickle.dumps(exc.value))
    assert back.field == exc.value.field and str(back) == str(exc.value)


# -- oracle 10 and friends: bad input names the culprit ---------------------------------
@pytest.mark.parametrize("field, value, culprit, words", [
    ("arrival_rate", [1.0, 2.0, -1.0] + [1.0] * 17, "clients[2].arrival_rate", "must be >= 0"),
    ("q_min", 0.0, "clients[0].q_min", "must be > 0"),
    ("q_min", [0.1] * 5 + [1.5] + [0.1] * 14, "clients[5].q_min", "must be <= 1"),
    ("deadline", -0.5, "clients[0].deadline", "must be > 0"),
    ("cost_train", [1.0] * 19 + [-2.0], "clients[19].cost_train", "must be >= 0"),
    ("mu_max", 1e-3, "clients[0].mu_max", "stable"),
    ("data_weight", [1.0] * 3 + [0.0] + [1.0] * 16, "clients[3].data_weight", "must be > 0"),
    ("arrival_rate", [1.0, 2.0], "clients.arrival_rate", "one entry per client"),
    ("arrival_rate", "fast", "clients.arrival_rate", "number"),
    ("arrival_rate", [1.0] * 7 + [float("nan")] + [1.0] * 12, "clients[7].arrival_rate", "NaN"),
])
def test_bad_client_fields_name_client_and_field(field, value, culprit, words):
    with pytest.raises(ValidationError) as exc:
        JointTrainingInferenceProblem.from_dict(_with_clients(**{field: value}))
    assert exc.value.field == culprit
    assert str(exc.value).startswith(culprit) and words in str(exc.value)


def test_mu_max_at_or_below_the_arrival_rate_is_rejected():
    lam = np.full(20, 2.0)
    mu = np.full(20, 3.0)
    mu[4] = 2.0
    with pytest.raises(ValidationError) as exc:
        JointTrainingInferenceProblem.from_dict(
            _with_clients(arrival_rate=lam.tolist(), mu_max=mu.tolist()))
    assert exc.value.field == "clients[4].mu_max"


@pytest.mark.parametrize("field, family", [("cap", "hard cap"), ("budget", "average budget")])
def test_cap_or_budget_below_least_use_is_infeasible_with_the_shortfall(field, family):
    limits = np.full(20, 8.0)
    limits[6] = 0.1
    with pytest.raises(InfeasibleError) as exc:
        JointTrainingInferenceProblem.from_dict(_with_clients(**{field: limits.tolist()}))
    err = exc.value
    problem = jointopt.load_scenario("default")
    assert err.constraint == family and err.field == f"clients[6].{field}"
    assert err.shortfall == pytest.approx(problem.min_use[6] - 0.1)
    assert "short by" in str(err)


@pytest.mark.parametrize("section, key, value, culprit", [
    ("controller", "V", -1.0, "controller.V"),
    ("controller", "refresh", "sometimes", "controller.refresh"),
    ("convergence", "a", 1.2, "convergence.a"),
    ("accuracy", "kappa", 0.0, "accuracy.kappa"),
    ("state", "K", -0.1, "state.K"),
    ("controller", "typo_field", 1.0, "controller.typo_field"),
])
def test_bad_sections_name_the_field(section, key, value, culprit):
    data = _default_dict()
    data[section] = {**data.get(section, {}), key: value}
    with pytest.raises(ValidationError) as exc:
        JointTrainingInferenceProblem.from_dict(data)
    assert exc.value.field == culprit


def test_missing_and_unknown_top_level_fields():
    data = _default_dict()
    del data["convergence"]
    with pytest.raises(ValidationError, match="convergence is required"):
        scenarios.from_dict(data)
    with pytest.raises(ValidationError, match="kind must be one of"):
        scenarios.from_dict({**_default_dict(), "kind": "nope"})
    with pytest.raises(ValidationError, match="clients.speed is not a known field"):
        scenarios.from_dict(_with_clients(speed=1.0))


def test_unreadable_files_are_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("kind = [unclosed")
    with pytest.raises(ValidationError, match="not valid TOML"):
        jointopt.load_scenario(bad)
    with pytest.raises(ValidationError, match="neither a built-in"):
        jointopt.load_scenario(tmp_path / "missing.toml")
    other = tmp_path / "x.json"
    other.write_text("{}")
    with pytest.raises(ValidationError, match="must end in"):
        jointopt.load_scenario(other)


def test_calibration_pilots_are_checked_and_round_trip():
    """[calibration] pilots: levels in (0, 1], "q_min" or "uniform"; the built-in default
    and drift add a 0.1 pilot, a scenario without the section (analytic) gets the usual
    five."""
    from jointopt.solvers.jti.problem import DEFAULT_PILOTS

    from jointopt.errors import ValidationError

    problem = jointopt.load_scenario("default")
    assert problem.calibration.pilots == [1.0, 0.5, 0.2, 0.1, "q_min", "uniform"]
    assert jointopt.load_scenario("drift").calibration.pilots == problem.calibration.pilots
    assert jointopt.load_scenario("analytic").calibration.pilots == list(DEFAULT_PILOTS)
    data = problem.to_dict()
    assert type(problem).from_dict(data).calibration == problem.calibration
    for bad, where in (([], "calibration.pilots"), ([0.5, 0], "calibration.pilots[1]"),
                       ([1.5], "calibration.pilots[0]"), (["max"], "calibration.pilots[0]"),
                       ([True], "calibration.pilots[0]"), ("q_min", "calibration.pilots")):
        data["calibration"] = {"pilots": bad}
        with pytest.raises(ValidationError) as err:
            type(problem).from_dict(data)
        assert err.value.field == where
