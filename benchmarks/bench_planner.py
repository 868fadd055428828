"""Benchmark the deployment planner (``jointopt plan``) on the built-in example.

Run from the repository root::

    python benchmarks/bench_planner.py            # the example at its own Monte-Carlo sizes
    python benchmarks/bench_planner.py --quick    # small Monte-Carlo sizes, one repetition

Stages timed with ``time.perf_counter`` (median over ``--reps``): the estimates + gates +
verdict with the lever search (``evaluate``), the what-if grid over the declared levers, the
tornado, and writing the report (Markdown, JSON, PNG figures). ``cli wall`` is the wall time
of ``python -m jointopt.cli plan planner_example --out DIR`` in a fresh process (imports
included), the number the spec's target refers to: under 10 s on the 2-core reference
machine. The script prints PASS/MISS against that target; it never fails on speed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 10.0


def _time(fn, reps):
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small Monte-Carlo sizes, 1 rep")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per stage (default 3)")
    ap.add_argument("--scenario", default="planner_example")
    args = ap.parse_args(argv)

    from jointopt.solvers.planner.gates import evaluate
    from jointopt.solvers.planner.whatif import tornado, what_if

    from jointopt.planner import default_grid, load_plan, plan

    problem = load_plan(args.scenario)
    reps = 1 if args.quick else args.reps
    if args.quick:
        problem = problem.with_changes({"monte_carlo": {"n_mc": 200, "n_outer": 50,
                                                        "n_mc_grid": 100, "seed": 0}})
    mc = problem.monte_carlo
    evaluate(problem, search_levers=False)  # warm-up (imports, allocator)
    rows = [
        ("evaluate (estimates, gates, levers)", _time(lambda: evaluate(problem), reps)),
        ("what-if grid", _time(lambda: what_if(problem, default_grid(problem),
                                               n_outer=min(mc.n_outer, 100)), reps)),
        ("tornado", _time(lambda: tornado(problem, n_outer=min(mc.n_outer, 100)), reps)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        res = plan(problem, with_tornado=True)
        rows.append(("write report (md, json, png)", _time(lambda: res.write(tmp), reps)))
        cli = None
        if not args.quick:
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "jointopt.cli", "plan", args.scenario,
                                   "--out", str(Path(tmp) / "cli")], capture_output=True,
                                  text=True)
            cli = time.perf_counter() - t
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
    print(f"scenario {problem.name}: n_mc {mc.n_mc}, n_outer {mc.n_outer}, n_mc_grid "
          f"{mc.n_mc_grid}, verdict {res.verdict}")
    print(f"{'stage':<38} {'seconds':>8}")
    for name, s in rows:
        print(f"{name:<38} {s:>8.3f}")
    print("Targets")
    if cli is None:
        print(f"  cli wall < {TARGET_S:g} s: not measured in --quick mode")
    else:
        verdict = "PASS" if cli < TARGET_S else "MISS"
        print(f"  cli wall {cli:.2f} s < {TARGET_S:g} s: {verdict} "
              "(shared machines inflate this; re-measure on a quiet one)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
