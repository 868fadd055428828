"""Batch sweeps: points, resumption, failures, executors, CLI."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import threading
import time

import pandas as pd
import pytest

from jointopt import scenarios, sweep
from jointopt.cli import main
from jointopt.errors import ValidationError
from jointopt.sweep import SweepSpec, collect, open_sweep, run_sweep

TIMING = ["wall_time_s", "solve_time_s"]


def _spec(**kw):
    base = dict(scenario="default", grid={"clients.budget": [2.5, 3.0], "controller.V": [10, 30]},
                policies=("online", "equal_split"), seeds=(0, 1), rounds=5)
    return SweepSpec(**{**base, **kw})


def _metrics(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=[c for c in TIMING if c in table.columns])


def test_points_cover_grid_policies_and_seeds():
    spec = _spec(command="simulate")
    points = spec.points()
    assert len(points) == 2 * 2 * 2 * 2
    assert len({sweep.point_key(spec, p, "digest") for p in points}) == len(points)
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
    with pytest.raises(ValidationError, match="sweep.samples needs random ranges"):
        SweepSpec(samples=5)           # was silently ignored
    with pytest.raises(ValidationError, match="sweep.rounds must be >= 1"):
        SweepSpec(rounds=0)
    for option in ({"rounds": 5}, {"policies": ("online",)}, {"seeds": (0, 1)}):
        with pytest.raises(ValidationError, match="applies to simulate points only"):
            SweepSpec(command="solve", **option)   # would be ignored by solve points
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


def test_ctrl_c_loses_no_finished_point(tmp_path):
    spec = _spec()
    calls = {"n": 0}

    def flaky(s, p, scenario):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return sweep.run_point(s, p, scenario)

    report = run_sweep(spec, tmp_path, runner=flaky)
    assert report.interrupted and report.done == 3
    assert len(collect(tmp_path)) == 3
    assert not list((tmp_path / "points").glob("*.claim"))   # claims released
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
    spec = SweepSpec(grid={"clients.budget": [2.5, 3.0], "controller.V": [10, 30]},
                     command="solve")
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
    import dask
    from dask.distributed import Client, LocalCluster

    spec = _spec(policies=("equal_split",), seeds=(0, 1))
    run_sweep(spec, tmp_path / "pool", workers=2)
    # a task whose worker dies is retried by the scheduler (allowed-failures times, 0
    # here to keep the test fast), then comes back as KilledWorker: recorded as the
    # point's failure, and the sweep ends normally
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         dashboard_address=None) as cluster, Client(cluster) as client:
        report = run_sweep(spec, tmp_path / "dask", executor=client.get_executor())
        killed = run_sweep(_tiny(grid={"clients.budget": [2.0]}), tmp_path / "kill",
                           executor=client.get_executor(), runner=_kill_worker)
    assert report.done == len(spec.points())
    pd.testing.assert_frame_equal(_metrics(collect(tmp_path / "pool")),
                                  _metrics(collect(tmp_path / "dask")))
    assert (killed.done, killed.failed) == (0, 1)
    bad = collect(tmp_path / "kill").iloc[0]
    assert bad["status"] == "failed" and "KilledWorker" in bad["error"]


def test_cli_dask_local(tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["sweep", "--grid", "clients.budget=2.5,3", "--policy", "equal_split",
                 "--rounds", "3", "--workers", "2", "--dask-local", "--out", str(out),
                 "--no-progress"]) == 0
    assert len(pd.read_csv(out / "results.csv")) == 2
    assert "2 points: 2 done" in capsys.readouterr().err


# --- issue 14: sweeps never return stale, mixed or silently wrong results ----------------

def _tiny(**kw):
    """Two cheap simulate points (equal_split, 3 rounds) of the default scenario."""
    base = dict(scenario="default", grid={"clients.budget": [2.5, 3.0]},
                policies=("equal_split",), rounds=3)
    return SweepSpec(**{**base, **kw})


def test_editing_the_scenario_reruns_every_point(tmp_path):
    scenario = tmp_path / "mine.toml"
    data = scenarios.read_scenario("default")
    scenario.write_text(scenarios.dumps(scenarios.from_dict(data)))
    spec, out = _tiny(scenario=str(scenario)), tmp_path / "res"
    assert run_sweep(spec, out).done == 2
    before = collect(out)
    data["clients"]["deadline"] = 0.05                 # same path, new content
    scenario.write_text(scenarios.dumps(scenarios.from_dict(data)))
    again = run_sweep(spec, out)
    assert (again.done, again.skipped, again.stale) == (2, 0, 2)
    after = collect(out)
    assert len(after) == 2                             # only the current content's points
    assert (after["avg_timely_accuracy"] < before["avg_timely_accuracy"]).all()
    same = run_sweep(spec, out)                        # unchanged now: resumes
    assert (same.done, same.skipped) == (0, 2)


def test_point_keys_cover_content_and_every_option():
    spec = _tiny(command="simulate")
    point = spec.points()[0]
    key = sweep.point_key(spec, point, "a")
    others = [sweep.point_key(spec, point, "b"),                       # scenario content
              sweep.point_key(_tiny(command="simulate", rounds=4), point, "a"),
              sweep.point_key(spec, {**point, "seed": 1}, "a"),
              sweep.point_key(spec, {**point, "policy": "online"}, "a"),
              sweep.point_key(SweepSpec(command="solve"), {"params": point["params"]}, "a")]
    assert len({key, *others}) == 6


def test_a_directory_of_another_sweep_is_refused(tmp_path, capsys):
    out = tmp_path / "res"
    run_sweep(_tiny(), out)
    table = (out / "sweep.json").read_text()
    for other in (_tiny(rounds=4), _tiny(grid={"controller.V": [10, 30]}),
                  _tiny(policies=("online",)), _tiny(seeds=(0, 1))):
        with pytest.raises(ValidationError, match="holds another sweep"):
            run_sweep(other, out)
    assert (out / "sweep.json").read_text() == table
    assert len(collect(out)) == 2                      # never mixed
    args = ["sweep", "--grid", "clients.budget=2.5,3", "--policy", "equal_split",
            "--out", str(out), "--no-progress"]
    assert main([*args, "--rounds", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rounds 3 there, 4 here" in err
    # the same sweep, its default command spelled out, is a resume
    assert main([*args, "--rounds", "3", "--command", "simulate"]) == 0
    assert "2 skipped (already done)" in capsys.readouterr().err


def _slow(spec, point, scenario):
    """A runner that takes a while, so that two copies of a sweep overlap."""
    time.sleep(0.05)
    row = sweep.run_point(spec, point, scenario)
    _CALLS.append(point["params"]["controller.V"])
    return row


_CALLS: list = []


@pytest.mark.filterwarnings("ignore:waiting for")
def test_two_copies_of_one_sweep_share_the_work(tmp_path):
    spec = _tiny(grid={"controller.V": [float(v) for v in range(1, 9)]})
    out, reports, errors = tmp_path / "res", [], []
    _CALLS.clear()

    def copy():
        try:
            reports.append(run_sweep(spec, out, runner=_slow))
        except Exception as exc:  # pragma: no cover - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=copy) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(_CALLS) == sorted(p["params"]["controller.V"] for p in spec.points())
    assert sorted((r.done, r.by_other) for r in reports)[0][0] >= 1     # both worked
    assert all(r.done + r.by_other + r.skipped == 8 for r in reports)
    assert len(collect(out)) == 8
    assert not [p.name for p in (out / "points").iterdir() if not p.name.endswith(".json")]


def test_a_forked_child_does_not_keep_a_claim_alive(tmp_path):
    """A pool worker forked while the sweep holds claims must not keep them: after a
    ``kill -9`` of the sweep, its orphaned workers would block every later run."""
    claim = sweep._Claim.take(tmp_path / "k.claim")
    assert claim is not None and sweep._Claim.take(tmp_path / "k.claim") is None
    assert str(os.getpid()) in sweep._Claim.holder(tmp_path / "k.claim")
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:                                       # the child outlives the claim's owner
        os.write(ready_w, b"x")                        # (its at-fork hook has run)
        os.read(stop_r, 1)
        os._exit(0)
    try:
        os.read(ready_r, 1)
        assert sweep._HELD == {claim.fd}
        os.close(claim.fd)                             # the owner "dies": its copy closes
        sweep._HELD.clear()
        again = sweep._Claim.take(tmp_path / "k.claim")
        assert again is not None                       # the child held no copy
        again.release()
    finally:
        os.write(stop_w, b"x")
        os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, stop_r, stop_w):
            os.close(fd)


def _kill_worker(spec, point, scenario):
    """Test runner: the point at ``clients.budget == 2.0`` kills the worker process that
    runs it (SIGKILL, as the out-of-memory killer would); other points run normally. Never
    kills the test process itself."""
    if (point["params"].get("clients.budget") == 2.0
            and multiprocessing.parent_process() is not None):
        os.kill(os.getpid(), signal.SIGKILL)
    return sweep.run_point(spec, point, scenario)


def test_a_dead_worker_costs_only_its_point(tmp_path):
    spec = _tiny(grid={"clients.budget": [2.5, 3.0, 3.5, 2.0, 4.0, 4.5]})
    report = run_sweep(spec, tmp_path, workers=2, runner=_kill_worker)
    assert (report.done, report.failed) == (5, 1)      # innocent points are never blamed
    table = collect(tmp_path)
    assert len(table) == 6
    bad = table[table["param.clients.budget"] == 2.0].iloc[0]
    assert bad["status"] == "failed" and "died 3 times" in bad["error"]
    assert table[table["status"] == "done"]["avg_timely_accuracy"].notna().all()


def test_corrupt_point_files_are_run_again(tmp_path):
    spec = _tiny(grid={"clients.budget": [2.5, 3.0, 3.5, 4.0]})
    run_sweep(spec, tmp_path)
    clean = _metrics(collect(tmp_path))
    files = sorted((tmp_path / "points").glob("*.json"))
    other = json.loads(files[3].read_text())
    files[0].write_text("1")
    files[1].write_text('{"row": {"status": "done"}}')
    files[2].write_text(json.dumps(other))             # another point's valid file
    files[3].write_text(files[3].read_text()[:40])     # half written
    with pytest.warns(UserWarning, match="4 stored point file") as caught:
        report = run_sweep(spec, tmp_path)
    message = str(caught[0].message)
    assert all(why in message for why in ("not a JSON object", "format None",
                                          "key or inputs are not this point's", "unreadable"))
    assert (report.done, report.skipped, report.invalid) == (4, 0, 4)
    pd.testing.assert_frame_equal(_metrics(collect(tmp_path)), clean)


def _one_scenario_per_kind():
    first = {}
    for name, kind, _ in scenarios.describe():
        first.setdefault(kind, name)
    return sorted(first.items())


@pytest.mark.parametrize(("kind", "name"), _one_scenario_per_kind())
def test_every_kind_sweeps_with_its_own_command_and_tidy_rows(tmp_path, kind, name):
    from jointopt.api import solve

    run = open_sweep(SweepSpec(scenario=name), tmp_path)
    expected = "simulate" if kind == "joint_training_inference" else "solve"
    assert run.spec.command == expected
    if expected == "simulate":
        return                                         # simulate rows: tests above
    report = run.run()
    row = run.table().iloc[0]
    assert report.done == 1 and row["status"] == "done", row.get("error")
    result = solve(name)
    assert row["solve_status"] == result.status and math.isfinite(row["objective"])
    # every scalar diagnostic is a column (numbers, flags and text alike)
    scalars = {k for k, v in result.diagnostics.items() if isinstance(v, bool | int | float | str)}
    assert scalars <= set(row.index)


def test_headline_columns_of_each_kind(tmp_path):
    table = {}
    for name in ("hfl_testbed", "planner_example", "cis_tree7"):
        run = open_sweep(SweepSpec(scenario=name), tmp_path / name)
        run.run()
        table[name] = run.table().iloc[0]
    assert table["hfl_testbed"]["used_hosts"] == 4 and table["hfl_testbed"]["feasible"]
    assert "mean_association" not in table["hfl_testbed"]      # indices are not averaged
    assert table["planner_example"]["verdict"] == "CONDITIONAL"
    assert table["planner_example"]["gates.G4"] == "fail"
    assert table["cis_tree7"]["bound_by_rule.equal"] > table["cis_tree7"]["objective"]


def test_cli_refuses_ignored_options_and_documents_defaults(tmp_path, capsys):
    out = str(tmp_path / "res")
    assert main(["sweep", "--grid", "clients.budget=3", "--samples", "5", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--samples needs --random" in err
    assert main(["sweep", "hfl_testbed", "--command", "simulate", "--out", out]) == 2
    assert "simulate needs a joint_training_inference scenario" in capsys.readouterr().err
    assert main(["sweep", "hfl_testbed", "--policy", "online", "--out", out]) == 2
    assert "sweep.policies applies to simulate points only" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()             # refused before anything is written
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: simulate for joint_training_inference scenarios, solve for every" in text
    assert "rounds for simulate (default: the scenario's" in text
    assert "results table format: csv, or parquet" in text


def test_cli_hfl_sweep_runs_solve_by_default(tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["sweep", "hfl_testbed", "--grid", "participation_ratio=0.5,1.0",
                 "--out", str(out), "--no-progress"]) == 0
    table = pd.read_csv(out / "results.csv")
    assert list(table["status"]) == ["done", "done"]
    assert list(table["objective"]) == [2.0, 8.0]
