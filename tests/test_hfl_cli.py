"""HFL entry points of the command line and the latency simulator's options."""

from __future__ import annotations

import json

import numpy as np
import pytest
from jointopt.models import hfl as hm
from jointopt.solvers.hfl import generators as gen

from jointopt import hfl
from jointopt.cli import main


def test_simulate_hfl_testbed_json(capsys):
    assert main(["simulate", "hfl_testbed", "--rounds", "5", "--multiplier", "1,10",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {(r["configuration"], r["multiplier"]): r for r in data["summary"]}
    assert set(rows) == {(c, k) for c in ("flat", "proximity", "hflop") for k in (1.0, 10.0)}
    assert all(r["samples"] == 20 * 5 for r in rows.values())
    assert rows[("flat", 1.0)]["net_mean"] > rows[("hflop", 1.0)]["net_mean"]


def test_simulate_rejects_policies_for_hfl(capsys):
    assert main(["simulate", "hfl_testbed", "--policy", "online"]) == 2
    assert "--policy" in capsys.readouterr().err


def test_pinned_overflow_and_processing_scale():
    tb = gen.testbed()
    base = hm.overflow_rule(tb.workload, tb.capacities, tb.home)
    kw = dict(rounds=4, seed=3, assignment=np.zeros(tb.N, int))
    pinned = hfl.simulate(tb, ["proximity"], multiplier=10, overflow="base", **kw)
    scaled = hfl.simulate(tb, ["proximity"], multiplier=10, **kw)
    over = sorted(pinned.loc[pinned["where"] == "overflow", "client"].unique())
    assert over == sorted(np.flatnonzero(base < 0))       # the x1 overflow set, kept at x10
    assert (scaled["where"] == "overflow").sum() > (pinned["where"] == "overflow").sum()
    explicit = hfl.simulate(tb, ["proximity"], multiplier=10, overflow=[0, 3], **kw)
    assert sorted(explicit.loc[explicit["where"] == "overflow", "client"].unique()) == [0, 3]
    double = hfl.simulate(tb, ["proximity"], multiplier=10, proc_scale=2.0, **kw)
    assert double["proc_ms"].to_numpy() == pytest.approx(2 * scaled["proc_ms"].to_numpy())
    assert double["net_ms"].equals(scaled["net_ms"])


def test_solve_time_limit_option(capsys):
    assert main(["solve", "hfl_testbed", "--time-limit", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "optimal"
    assert main(["solve", "default", "--time-limit", "5"]) == 2
    assert "take no time limit" in capsys.readouterr().err
    assert main(["solve", "hfl_testbed", "--time-limit", "0"]) == 2


def test_baseline_methods_from_the_cli(capsys):
    assert main(["solve", "hfl_testbed", "--method", "proximity", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "overloaded" and data["diagnostics"]["saving_pct"] == 90.0
    assert main(["solve", "hfl_testbed", "--method", "uncapacitated", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "optimal"


def test_bench_density_json_and_files(tmp_path, capsys):
    assert main(["bench", "density", "--x", "8,16", "--seeds", "2", "--devices", "48",
                 "--json", "--out", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["x"] for r in data["summary"]] == [8, 16]
    for r in data["summary"]:
        assert r["instances"] == 2 and r["hflop_mean"] <= r["uncapacitated_mean"] + 1e-9
    assert (tmp_path / "density.png").stat().st_size > 0
    assert main(["bench", "density", "--x", "0"]) == 2
