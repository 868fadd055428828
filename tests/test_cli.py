"""The ``jointopt`` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jointopt import scenarios
from jointopt.cli import main

SCRIPT = Path(sys.executable).with_name("jointopt")


def test_console_script_solves_the_default_scenario_as_json():
    out = subprocess.run([str(SCRIPT), "solve", "--json"], capture_output=True, text=True,
                         check=True)
    data = json.loads(out.stdout)
    assert {"scenario", "status", "objective", "solve_time_s", "decisions"} <= data.keys()
    assert data["scenario"] == "default" and data["status"] == "converged"
    n = scenarios.load("default").n
    for key in ("q", "d", "mu"):
        assert len(data["decisions"][key]) == n


def test_readable_table_by_default(capsys):
    assert main(["solve", "default"]) == 0
    out = capsys.readouterr().out
    assert "objective" in out and "timely accuracy" in out and "mu" in out


def test_scenarios_lists_each_builtin_on_one_line(capsys):
    assert main(["scenarios"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(scenarios.builtin_names())
    assert lines[0].split()[0] == scenarios.builtin_names()[0]


def test_file_path_and_out_dir(tmp_path, capsys):
    path = scenarios.dump(scenarios.load("analytic"), tmp_path / "mine.yaml")
    out_dir = tmp_path / "out"
    assert main(["solve", str(path), "--out", str(out_dir), "--method", "cvxpy"]) == 0
    for name in ("result.json", "decisions.csv", "allocation.png"):
        assert (out_dir / name).stat().st_size > 0
    result = json.loads((out_dir / "result.json").read_text())
    assert result["solver"] == "bca-cvxpy"
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["solve", "no-such-scenario"], "neither a built-in"),
    (["solve", "{bad}"], "neither a built-in"),
    (["solve", "--method", "simplex"], "solved by fast, numpy, cvxpy; got 'simplex'"),
])
def test_errors_are_one_line_exit_2_no_traceback(args, words):
    out = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and words in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_invalid_scenario_file_error_names_the_client(tmp_path):
    data = scenarios.read_scenario("default")
    data["clients"]["arrival_rate"] = [1.0] * 3 + [-1.0] + [1.0] * 16
    path = tmp_path / "bad.toml"
    import tomli_w

    path.write_text(tomli_w.dumps(data))
    out = subprocess.run([str(SCRIPT), "solve", str(path)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == ("jointopt: error: clients[3].arrival_rate must be >= 0, "
                                  "got -1.0")


def test_json_stdout_holds_only_the_json_whatever_a_solver_prints(capfd, monkeypatch):
    """A solver library that prints (from Python, or from C straight to file descriptor 1,
    as HiGHS's banner does) never reaches stdout of a --json command; it goes to stderr."""
    import jointopt.api

    real_solve = jointopt.api.solve

    def noisy_solve(*args, **kwargs):
        print("python-level banner")
        os.write(1, b"fd-level banner\n")
        return real_solve(*args, **kwargs)

    monkeypatch.setattr(jointopt.api, "solve", noisy_solve)
    assert main(["solve", "default", "--json"]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["scenario"] == "default"
    assert "python-level banner" in err and "fd-level banner" in err
    assert main(["solve", "default"]) == 0       # without --json stdout is left alone
    assert "fd-level banner" in capfd.readouterr().out
