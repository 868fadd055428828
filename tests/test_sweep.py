"""Batch sweeps: points, resumption, failures, executors, CLI."""

from __future__ import annotations

import pandas as pd
import pytest

from jointopt import sweep
from jointopt.cli import main
from jointopt.errors import ValidationError
from jointopt.sweep import SweepSpec, collect, run_sweep

TIMING = ["wall_time_s", "solve_time_s"]


def _spec(**kw):
    base = dict(scenario="default", grid={"clients.budget": [2.5, 3.0], "controller.V": [10, 30]},
                policies=("online", "equal_split"), seeds=(0, 1), rounds=5)
    return SweepSpec(**{**base, **kw})


def _metrics(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=[c for c in TIMING if c in table.columns])


def test_points_cover_grid_policies_and_seeds():
    spec = _spec()
    points = spec.points()
    assert len(points) == 2 * 2 * 2 * 2
    assert len({sweep.point_key(spec, p) for p in points}) == len(points)
    rnd = SweepSpec(random={"controller.V": (1.0, 100.0)}, samples=4, sample_seed=3)
    values = [p["params"]["controller.V"] for p in rnd.points()]
    assert values == [p["params"]["controller.V"] for p in rnd.points()]  # seeded
    assert all(1.0 <= v <= 100.0 for v in values) and len(set(values)) == 4


def test_set_path_and_bad_specs():
    data = {"clients": {"count": 3}}
    sweep.set_path(data, "clients.budget", 2.0)
    sweep.set_path(data, "controller.V", 5.0)
    assert data == {"clients": {"count": 3, "budget": 2.0}, "controller": {"V": 5.0}}
    with pytest.raises(ValidationError, match="sweep.command"):
        SweepSpec(command="train")
    with pytest.raises(ValidationError, match="sweep.samples"):
        SweepSpec(random={"controller.V": (1.0, 2.0)})
    with pytest.raises(ValidationError, match="--grid"):
        sweep.parse_grid(["clients.budget"])
    assert sweep.parse_grid(["a.b=1,2.5,x"]) == {"a.b": [1, 2.5, "x"]}


def test_resumed_sweep_gives_the_same_table_as_an_uninterrupted_one(tmp_path):
    spec = _spec()
    whole = run_sweep(spec, tmp_path / "whole")
    assert (whole.done, whole.failed) == (16, 0)
    part = run_sweep(spec, tmp_path / "parts", stop_after=5)
    assert part.done == 5
    rest = run_sweep(spec, tmp_path / "parts")
    assert (rest.done, rest.skipped) == (11, 5)
    pd.testing.assert_frame_equal(_metrics(collect(tmp_path / "whole")),
                                  _metrics(collect(tmp_path / "parts")))


def test_ctrl_c_loses_no_finished_point(tmp_path, monkeypatch):
    spec = _spec()
    calls = {"n": 0}
    real = sweep.run_point

    def flaky(s, p):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(s, p)

    monkeypatch.setattr(sweep, "run_point", flaky)
    report = run_sweep(spec, tmp_path)
    assert report.interrupted and report.done == 3
    assert len(collect(tmp_path)) == 3
    monkeypatch.setattr(sweep, "run_point", real)
    again = run_sweep(spec, tmp_path)
    assert (again.done, again.skipped, again.interrupted) == (13, 3, False)


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    spec = _spec(grid={"clients.budget": [3.0, -1.0]}, policies=("equal_split",), seeds=(0,))
    report = run_sweep(spec, tmp_path)
    assert (report.done, report.failed) == (1, 1)
    table = collect(tmp_path)
    bad = table[table["param.clients.budget"] == -1.0].iloc[0]
    assert bad["status"] == "failed" and "clients[0].budget must be > 0" in bad["error"]
    assert table[table["status"] == "done"]["avg_timely_accuracy"].notna().all()


def test_process_pool_gives_the_same_table(tmp_path):
    spec = _spec(command="solve", policies=("online",), seeds=(0,))
    run_sweep(spec, tmp_path / "one", workers=1)
    run_sweep(spec, tmp_path / "two", workers=2)
    one, two = collect(tmp_path / "one"), collect(tmp_path / "two")
    assert len(one) == 4 and "objective" in one.columns
    pd.testing.assert_frame_equal(_metrics(one), _metrics(two))


def test_cli_sweep_from_a_toml_spec_then_plot(tmp_path, capsys):
    spec_file = tmp_path / "sweep.toml"
    spec_file.write_text('[sweep]\nscenario = "default"\nrounds = 4\nseeds = [0]\n'
                         'policies = ["equal_split", "static"]\n'
                         '[sweep.grid]\n"clients.budget" = [2.5, 3.5]\n')
    out = tmp_path / "res"
    assert main(["sweep", "--spec", str(spec_file), "--out", str(out), "--no-progress"]) == 0
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 4 and set(table["policy"]) == {"equal_split", "static"}
    assert {"param.clients.budget", "seed", "wall_time_s", "avg_timely_accuracy"} <= set(table)
    assert "4 points: 4 done, 0 failed, 0 skipped" in capsys.readouterr().err
    assert main(["plot", str(out), "--x", "clients.budget", "--y", "avg_timely_accuracy",
                 "--hue", "policy"]) == 0
    assert (out / "avg_timely_accuracy_vs_clients.budget.png").stat().st_size > 0


def test_cli_rejects_unknown_policy_and_bad_scenario(tmp_path, capsys):
    assert main(["sweep", "--policy", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown policy 'nope'" in capsys.readouterr().err
    assert main(["sweep", "missing-scenario", "--out", str(tmp_path)]) == 2


def test_dask_local_cluster_gives_the_same_table_as_the_process_pool(tmp_path):
    from dask.distributed import Client, LocalCluster

    spec = _spec(policies=("equal_split",), seeds=(0, 1))
    run_sweep(spec, tmp_path / "pool", workers=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        report = run_sweep(spec, tmp_path / "dask", executor=client.get_executor())
    assert report.done == len(spec.points())
    pd.testing.assert_frame_equal(_metrics(collect(tmp_path / "pool")),
                                  _metrics(collect(tmp_path / "dask")))


def test_cli_dask_local(tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["sweep", "--grid", "clients.budget=2.5,3", "--policy", "equal_split",
                 "--rounds", "3", "--workers", "2", "--dask-local", "--out", str(out),
                 "--no-progress"]) == 0
    assert len(pd.read_csv(out / "results.csv")) == 2
    assert "2 points: 2 done" in capsys.readouterr().err
