"""The round-solver benchmark script runs end to end (``--quick``); timings are not checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_round_solver.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_quick_run_prints_table_and_writes_csv(tmp_path):
    out = tmp_path / "bench.csv"
    proc = _run("--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    header = next(line for line in proc.stdout.splitlines() if "fast cold ms" in line)
    for column in ("N", "fast warm ms", "cvxpy compile+1st ms", "cvxpy warm ms",
                   "cvxpy/fast (warm)", "rel obj diff"):
        assert column in header
    assert "Targets" in proc.stdout
    assert ("PASS" in proc.stdout or "MISS" in proc.stdout
            or "not measured" in proc.stdout)
    df = pd.read_csv(out)
    assert list(df["n"]) == [10, 100]
    assert df["fast_cold_ms"].notna().all() and df["fast_warm_ms"].notna().all()
    # CVXPY ran at N = 10 only
    assert df["cvxpy_warm_ms"].notna().tolist() == [True, False]


def test_help():
    proc = _run("--help")
    assert proc.returncode == 0
    for option in ("--quick", "--max-n", "--out"):
        assert option in proc.stdout


def test_surrogate_and_sweep_benchmarks_run_quick():
    """The other benchmark scripts run end to end (timings are not checked)."""
    for name, expect in (("bench_surrogate.py", "online_1sweep_s"), ("bench_sweep.py", "speedup"),
                         ("bench_pricing.py", "solves/round")):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), "--quick"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert expect in proc.stdout


def test_validation_benchmark_runs_quick():
    """The harness validation benchmark runs end to end (needs the train extra)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_validation.py"),
                           "--quick", "--surrogate-seeds", "5", "--replicates", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "spearman" in proc.stdout and "mae" in proc.stdout
    assert "2 real run(s) per policy" in proc.stdout and "run-to-run noise alone" in proc.stdout


def test_planner_benchmark_runs_quick():
    """The deployment-planner benchmark runs end to end (timings are not checked)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_planner.py"),
                           "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "what-if grid" in proc.stdout and "Targets" in proc.stdout


def test_split_training_benchmark_runs_quick(tmp_path):
    """The SplitGP training benchmark runs end to end (needs the train extra)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_split_training.py"),
                           "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "accuracy vs p" in proc.stdout and "splitgp >= all" in proc.stdout
    frame = pd.read_csv(tmp_path / "split_accuracy_vs_p.csv")
    assert set(frame["method"]) == {"local", "fedavg", "multi_exit", "splitgp"}
    assert (tmp_path / "split_accuracy_vs_p.png").stat().st_size > 0


def test_splitgp_claim_exploration_runs_quick(tmp_path):
    """The SplitGP claim exploration (``--quick``) prints its three tables and writes the CSV."""
    out = tmp_path / "claim.csv"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "explore_splitgp_claim.py"),
                           "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "where SplitGP is at or above both baselines" in proc.stdout
    frame = pd.read_csv(out)
    assert len(frame) == len((0.0, 0.2, 0.4, 0.6, 0.8, 1.0))
    np.testing.assert_allclose(frame["margin_headline"], frame["splitgp_headline"]
                               - frame[["local", "fedavg"]].max(axis=1))


def test_hfl_benchmark_runs_quick(tmp_path):
    """HFLOP benchmark (``--quick``): table, targets section and CSV; timings not checked."""
    out = tmp_path / "hfl.csv"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_hfl.py"), "--quick",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "gap_best_%" in proc.stdout and "Targets" in proc.stdout
    df = pd.read_csv(out)
    assert set(df["path"]) == {"highs", "pyomo", "heuristic"}
    exact = df[df["path"] != "heuristic"]
    assert (exact["status"] == "optimal").all()
    assert (exact.groupby(["N", "M"])["objective"].nunique() == 1).all()   # paths agree


def test_hfl_cplex_table_mode(tmp_path):
    """``--cplex-table`` on one cell, one instance: per-instance rows and the ratio table."""
    out = tmp_path / "cplex.csv"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_hfl.py"),
                           "--cplex-table", "--sizes", "1000x100", "--instances", "1",
                           "--min-instances", "1", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "CPLEX/jointopt" in proc.stdout and "proved_by" in proc.stdout
    assert "Targets: every instance proven optimal" in proc.stdout
    df = pd.read_csv(out)
    assert len(df) == 1 and df["status"].iloc[0] == "optimal"
    assert df["heur_objective"].iloc[0] >= df["objective"].iloc[0]


def test_cis_training_benchmark_runs_quick():
    """The CIS early-exit training benchmark runs end to end (needs the train extra)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_cis_training.py"),
                           "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "delta" in proc.stdout and "tiny" in proc.stdout and "0.80" in proc.stdout


def test_equal_loss_gap_reads_the_high_level_at_the_low_levels_loss(benchmark_script):
    """A shared accuracy-of-loss curve gives no gap; an offset gives the offset; a loss outside
    the high-level run's range gives NaN."""
    gap = benchmark_script("explore_loss_accuracy").equal_loss_gap
    K_hi = np.array([[2.0, 2.0], [1.5, 1.6], [1.0, 1.1]])
    acc_hi = 1.0 - 0.4 * K_hi
    K_lo = np.array([[2.0, 2.0], [1.8, 1.9], [1.2, 0.5]])
    out = gap(K_hi, acc_hi, K_lo, 1.0 - 0.4 * K_lo - np.array([0.0, 0.1]))
    np.testing.assert_allclose(out[:, 0], 0.0, atol=1e-12)
    np.testing.assert_allclose(out[:2, 1], 0.1)
    assert np.isnan(out[2, 1])


def test_loss_accuracy_exploration_runs_quick(tmp_path):
    """``explore_loss_accuracy.py --quick``: per-round table, CSV of every run and figure."""
    out, png = tmp_path / "la.csv", tmp_path / "la.png"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "explore_loss_accuracy.py"),
                           "--quick", "--switch", "3", "--out", str(out), "--plot", str(png)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "at equal loss" in proc.stdout and "rounds whose accuracy differs" in proc.stdout
    assert "level 0.2 trains at 1 from round 3 on" in proc.stdout
    frame = pd.read_csv(out)
    assert set(frame["level"]) == {1.0, 0.2} and set(frame["seed"]) == {0, 1}
    assert list(frame.groupby(["level", "seed"]).size()) == [5] * 4   # rounds 0 .. 4
    start = frame[frame["round"] == 0]    # every level starts from the seed's initial model
    assert start.groupby("seed")["K"].nunique().eq(1).all()
    assert png.stat().st_size > 0


def test_switching_pilot_follows_the_low_level_then_the_high_one(benchmark_script):
    import jointopt
    from jointopt.harness.calibrate import pilot_policy
    from jointopt.policies import Observation

    problem = jointopt.load_scenario("analytic")
    low, high = pilot_policy(problem, 0.2), pilot_policy(problem, 1.0)
    switch = benchmark_script("explore_loss_accuracy").Switch(low, high, 3)
    switch.reset(problem)
    n = problem.clients.count
    q = [switch.decide(Observation(t, 1.0, np.ones(n), np.zeros(n))).q.mean() for t in range(5)]
    assert q == pytest.approx([0.2, 0.2, 0.2, 1.0, 1.0])


def test_loss_accuracy_exploration_refuses_bad_input(benchmark_script, capsys):
    """Bad levels, too few seeds, an unknown scenario or another kind: a usage error."""
    main = benchmark_script("explore_loss_accuracy").main
    for args, says in ((["--levels", "1,1"], "two distinct levels"),
                       (["--levels", "a"], "comma list of numbers"),
                       (["--seeds", "1"], "--seeds must be at least 2"),
                       (["--switch", "0"], "--switch must be a round"),
                       (["nosuch"], "neither a built-in scenario"),
                       (["split_default"], "is a split_learning scenario")):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 2 and says in capsys.readouterr().err, args
