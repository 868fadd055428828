"""The CIS exit-weight problem: built-in scenarios, generators, CLI output, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from jointopt.models.cis import DATA_SPLITS, DEVICE_SHARES, serving_split
from jointopt.solvers import PROBLEM_KINDS
from jointopt.solvers.cis import CooperativeInferenceProblem, scenario_grid

import jointopt
from jointopt import scenarios
from jointopt.cli import main
from jointopt.errors import ValidationError

BUILTINS = ("cis_tree7", "cis_tree17", "cis_tree100")


def test_kind_is_registered_and_builtins_load():
    assert PROBLEM_KINDS["cis_early_exit"] is CooperativeInferenceProblem
    for name in BUILTINS:
        p = jointopt.load_scenario(name)
        assert p.kind == "cis_early_exit" and p.name == name
    assert jointopt.load_scenario("cis_tree7").n_nodes == 7
    big = jointopt.load_scenario("cis_tree100")
    assert big.n_nodes == 100 and big.data.device_label_dirichlet == 0.5
    assert big.data_sizes.sum() == 7185


@pytest.mark.parametrize("name", BUILTINS)
def test_dump_then_load_gives_an_equal_problem(tmp_path, name):
    p = jointopt.load_scenario(name)
    again = jointopt.load_scenario(jointopt.dump(p, tmp_path / "copy.toml"))
    assert again == p
    np.testing.assert_array_equal(again.exit_weights("convex"), p.exit_weights("convex"))


@pytest.mark.parametrize("method", CooperativeInferenceProblem.methods)
def test_every_method_solves_with_a_full_result(method):
    p = jointopt.load_scenario("cis_tree7")
    r = jointopt.solve(p, method=method)
    assert r.ok and r.kind == "cis_early_exit"
    frame = r.decisions_frame()
    assert list(frame["exit"]) == [1, 2, 3]
    assert frame["weight"].sum() == pytest.approx(1.0)
    assert r.objective == pytest.approx(p.bound(r.decisions["weight"]))
    d = r.diagnostics
    assert np.asarray(d["participation"]).shape == (7, 3)
    assert set(d["weights_by_rule"]) == set(p.methods) - {"convex"}
    json.dumps(r.to_dict())  # JSON-ready


def test_cli_solve_json_and_text(capsys, tmp_path):
    assert main(["solve", "cis_tree7", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scenario"] == "cis_tree7" and data["status"] == "optimal"
    np.testing.assert_allclose(data["decisions"]["weight"], [0.8, 0.15, 0.05])
    assert main(["solve", "cis_tree7", "--method", "convex", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "CLARABEL" in text and "target_weight" in text
    frame = (tmp_path / "decisions.csv").read_text().splitlines()
    assert frame[0].startswith("index,exit,weight,target_weight") and len(frame) == 4
    assert "variance_proxy" in frame[0]  # per-exit diagnostics join the table
    assert (tmp_path / "exit_weights.png").stat().st_size > 1000


@pytest.mark.parametrize("nodes", [7, 17, 100])
def test_generated_grid_matches_the_spec(nodes):
    problems = list(scenario_grid(nodes=(nodes,)))
    assert len(problems) == len(DEVICE_SHARES) * len(DATA_SPLITS)
    for p in problems:
        share = p.tree.device_share
        np.testing.assert_allclose(p.serving_tree.target_weights, serving_split(share),
                                   atol=1e-12)
        assert p.data_sizes.min() >= 1
        assert p.data_sizes.sum() == (7185 if nodes == 100 else 1437)
    assert len({p.name for p in problems}) == len(problems)


def test_p40_lets_cloud_and_edges_train_shallow_exits():
    p = CooperativeInferenceProblem.three_tier(7, 0.8, "tiny", pi="p40")
    np.testing.assert_allclose(p.participation[0], [0.4, 0.4, 0.2])
    np.testing.assert_allclose(p.participation[1], [0.4, 0.6, 0.0])
    assert np.all(p.data_weight[:, 0] > 0)
    p0 = CooperativeInferenceProblem.three_tier(7, 0.8, "tiny")
    assert p.data_mass[0] == p.data_sizes.sum() > p0.data_mass[0]
    # the cloud's large share, trained only with probability 0.4, raises the variance proxy
    assert p.variance[0] > p0.variance[0]


def test_explicit_nodes_and_errors_name_the_node():
    good = {"nodes": {"parent": [-1, 0, 0, 1], "exit": [3, 2, 2, 1],
                      "arrival": [0, 0, 1, 2], "forward": [0, 1, 0.5, 1],
                      "data_size": [10, 5, 5, 2]}}
    p = CooperativeInferenceProblem.from_dict(good)
    np.testing.assert_allclose(p.serving_tree.exit_rates, [1.0, 0.5, 1.5])
    cases = [
        ({"forward": [0, 1, 0.5, 3]}, "nodes[3].forward", "forwards more than it receives"),
        ({"parent": [-1, 2, 1, 1]}, "nodes[1].parent", "cycle"),
        ({"parent": [-1, 0, -1, 1]}, "nodes[2].parent", "second root"),
        ({"arrival": [0, 0, -1, 2]}, "nodes[2].arrival", "must be >= 0"),
        ({"data_size": [10, -5, 5, 2]}, "nodes[1].data_size", "must be >= 0"),
    ]
    for change, field, words in cases:
        with pytest.raises(ValidationError) as exc:
            CooperativeInferenceProblem.from_dict({"nodes": {**good["nodes"], **change}})
        assert exc.value.field == field and words in str(exc.value), field


@pytest.mark.parametrize("data, field", [
    ({"tree": {"nodes": 7}, "nodes": {"parent": -1, "exit": 1, "arrival": 1.0}}, "tree"),
    # both sections, the explicit one incomplete: the conflict is named, not a missing field
    ({"tree": {"nodes": 7}, "nodes": {"parent": [-1, 0], "exit": [3, 1]}}, "tree"),
    ({}, "tree"),
    ({"tree": {"nodes": 7, "device_share": 0.5}}, "tree.device_share"),
    ({"tree": {"nodes": 7, "device_share": "abc"}}, "tree.device_share"),
    ({"tree": {"nodes": 2}}, "tree.nodes"),
    ({"tree": {"nodes": 7}, "data": {"split": "3x"}}, "data.split"),
    ({"tree": {"nodes": 7}, "training": {"pi": [0.0, 0.5, 1.5]}}, "training.pi[2]"),
    ({"tree": {"nodes": 7}, "training": {"sigma2": [1.0, 0.0, 1.0]}}, "training.sigma2[1]"),
    ({"tree": {"nodes": 7}, "training": {"flops": [1.0, 2.0]}}, "training.flops"),
    ({"tree": {"nodes": 7}, "convex": {"eps": 0.5}}, "convex.eps"),
    ({"tree": {"nodes": 7}, "convex": {"rho": -1.0}}, "convex.rho"),
    ({"tree": {"nodes": 7}, "typo": 1}, "typo"),
])
def test_bad_scenarios_name_the_field(data, field):
    with pytest.raises(ValidationError) as exc:
        CooperativeInferenceProblem.from_dict(data)
    assert exc.value.field == field


def test_unknown_method_is_rejected():
    with pytest.raises(ValidationError, match="method"):
        jointopt.load_scenario("cis_tree7").solve(method="fedavg")


def test_scenario_descriptions_are_one_line():
    rows = {name: desc for name, _, desc in scenarios.describe()}
    for name in BUILTINS:
        assert rows[name] and "\n" not in rows[name]
