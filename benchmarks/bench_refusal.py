"""Time to refuse a hostile size: a count of 10^9 in each problem kind, a YAML alias bomb.

    python benchmarks/bench_refusal.py            # in-process, median of 5, plus the CLI
    python benchmarks/bench_refusal.py --quick    # in-process, one repetition, no CLI

For every count that sizes memory or run time (clients, devices, hosts, tree nodes, rounds,
Monte-Carlo samples, ...), the built-in scenario of its kind gets the value 10^9 and is
validated: ``in-process ms`` is perf_counter around reading the file and validating it
(the refusal itself); ``CLI s`` is the wall time of ``jointopt solve FILE`` in a fresh
process, interpreter start and imports included, under a 4 GiB address-space cap so that a
missing check fails fast instead of swapping (compare the baseline: ``jointopt limits``,
which reads no scenario). The last rows are API-level counts (rounds and
seeds of a simulation or validation) and a YAML alias bomb of 10^10 values in a numeric
field. Nothing is asserted: the table is the result.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w
import yaml

from jointopt import scenarios
from jointopt.errors import JointoptError

BIG = 10**9

#: (kind's built-in scenario, dotted path of a count)
COUNTS = [
    ("default", ("clients", "count")),
    ("default", ("simulation", "rounds")),
    ("hfl_testbed", ("devices",)),
    ("hfl_testbed", ("hosts",)),
    ("hfl_testbed", ("latency", "cuts")),
    ("cis_tree7", ("tree", "nodes")),
    ("cis_tree7", ("training", "rounds")),
    ("cis_tree7", ("n_exits",)),
    ("split_default", ("clients", "count")),
    ("split_default", ("optimizer", "n_threshold_grid")),
    ("planner_example", ("monte_carlo", "n_mc")),
    ("planner_example", ("training_plan", "C")),
    ("planner_example", ("monte_carlo", "n_seeds")),
    ("system_example", ("devices", "count")),
    ("system_example", ("hosts", "count")),
    ("system_example", ("simulation", "rounds")),
]


def _set(data: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return out


def _bomb_yaml() -> str:
    """The default scenario with 10^10 values behind ``clients.arrival_rate`` (ten levels
    of ten aliases; a few hundred bytes)."""
    bomb = "&a0 [" + ", ".join(["1.0"] * 10) + "]"
    for k in range(1, 10):
        bomb = f"&a{k} [{bomb}, " + ", ".join([f"*a{k - 1}"] * 9) + "]"
    data = _set(scenarios.read_scenario("default"), ("clients", "arrival_rate"), "BOMB")
    return yaml.safe_dump(data, sort_keys=False).replace("BOMB", bomb)


def _refuse(fn) -> tuple[float, str]:
    """``(seconds, first line of the error)`` of a call that must raise a jointopt error."""
    start = time.perf_counter()
    try:
        fn()
    except JointoptError as exc:
        return time.perf_counter() - start, str(exc).splitlines()[0]
    raise SystemExit(f"not refused: {fn}")


def _cli(*args: str) -> tuple[float, int]:
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    script = Path(sys.executable).with_name("jointopt")
    start = time.perf_counter()
    proc = subprocess.run([str(script), *args], capture_output=True, text=True,
                          preexec_fn=cap, timeout=120)
    return time.perf_counter() - start, proc.returncode


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one repetition, no CLI runs")
    ap.add_argument("--reps", type=int, default=5, help="repetitions (median; default 5)")
    args = ap.parse_args(argv)
    reps = 1 if args.quick else args.reps
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        for name, path in COUNTS:
            file = Path(tmp) / f"{name}_{'_'.join(path)}.toml"
            file.write_text(tomli_w.dumps(_set(scenarios.read_scenario(name), path, BIG)))
            cases.append((scenarios.load(name).kind, ".".join(path), file))
        bomb = Path(tmp) / "bomb.yaml"
        bomb.write_text(_bomb_yaml())
        cases.append(("joint_training_inference", "YAML alias bomb (10^10 values)", bomb))
        for kind, field, file in cases:
            times = []
            for _ in range(reps):
                seconds, error = _refuse(lambda f=file: scenarios.load(f))
                times.append(seconds)
            cli = _cli("solve", str(file)) if not args.quick else (float("nan"), None)
            rows.append((kind, field, statistics.median(times) * 1e3, *cli, error))

        from jointopt.surrogate import simulate

        problem = scenarios.load("default")
        for field, fn in (("simulate(rounds=10^9)",
                           lambda: simulate(problem, rounds=BIG)),
                          ("simulate(seed=-1)", lambda: simulate(problem, rounds=2, seed=-1))):
            times, error = [], ""
            for _ in range(reps):
                seconds, error = _refuse(fn)
                times.append(seconds)
            rows.append(("joint_training_inference", field, statistics.median(times) * 1e3,
                         float("nan"), None, error))

    print(f"Time to refuse a hostile size (in-process: median of {reps}; CLI: one run, "
          "interpreter start and imports included)")
    print(f"{'kind':<26} {'field':<32} {'in-process ms':>13} {'CLI s':>6} {'rc':>3}  error")
    for kind, field, ms, cli_s, rc, error in rows:
        print(f"{kind:<26} {field:<32} {ms:>13.2f} {cli_s:>6.2f} {rc if rc is not None else '-':>3}"
              f"  {error[:90]}")
    worst = max(r[2] for r in rows)
    print(f"slowest in-process refusal: {worst:.2f} ms")
    if not args.quick:
        base, _ = _cli("limits")
        print(f"CLI baseline (`jointopt limits`: interpreter start and imports, no scenario): "
              f"{base:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
