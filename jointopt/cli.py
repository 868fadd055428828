"""The ``jointopt`` command line.

Every sub-command takes a scenario (a built-in name or a TOML/YAML path). Bad input is
reported in one line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from jointopt import report, scenarios
from jointopt.errors import JointoptError, ValidationError


def _cmd_scenarios(args) -> int:
    rows = scenarios.describe()
    width = max(len(name) for name, _, _ in rows)
    kind_w = max(len(kind) for _, kind, _ in rows)
    for name, kind, desc in rows:
        print(f"{name:<{width}}  {kind:<{kind_w}}  {desc}")
    return 0


def _cmd_solve(args) -> int:
    from jointopt.api import solve

    problem = scenarios.load(args.scenario)
    result = solve(problem, method=args.method, solver=args.solver)
    written = report.write_outputs(result, problem, args.out) if args.out else []
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(report.text_report(result))
        for path in written:
            print(f"wrote {path}")
    return 0 if result.ok else 1


def _cmd_simulate(args) -> int:
    from jointopt.policies import POLICIES
    from jointopt.solvers.jti import JointTrainingInferenceProblem
    from jointopt.surrogate import compare, summary_frame

    problem = scenarios.load(args.scenario)
    if not isinstance(problem, JointTrainingInferenceProblem):
        raise ValidationError("scenario", f"simulate needs a joint_training_inference scenario, "
                                          f"got kind {problem.kind!r}")
    names = list(POLICIES) if args.policy == "all" else [args.policy]
    if args.rounds is not None and args.rounds < 1:
        raise ValidationError("--rounds", f"must be >= 1, got {args.rounds}")
    progress = sys.stderr.isatty() and not args.no_progress
    results = compare(problem, names, rounds=args.rounds, seed=args.seed, progress=progress)
    written = report.write_simulation(results, args.out) if args.out else []
    if args.json:
        print(json.dumps({"scenario": problem.name, "rounds": results[0].summary["rounds"],
                          "seed": args.seed,
                          "summary": {r.policy: _json_safe(r.summary) for r in results}}))
    else:
        cols = ["policy", "avg_timely_accuracy", "mean_aom", "avg_resource_use", "budget",
                "mean_backlog", "mean_K"]
        print(summary_frame(results)[cols].to_string(index=False, float_format="{:.4f}".format))
        for path in written:
            print(f"wrote {path}")
    return 0


def _json_safe(d: dict) -> dict:
    import math

    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jointopt",
        description="Joint training-inference resource allocation for federated and edge learning.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("scenarios", help="list the built-in scenarios")
    p.set_defaults(func=_cmd_scenarios)

    p = sub.add_parser("solve", help="solve a scenario (one allocation round)")
    p.add_argument("scenario", nargs="?", default="default",
                   help="built-in scenario name or a .toml/.yaml path (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--out", metavar="DIR", help="write result.json, decisions.csv, a figure")
    p.add_argument("--method", choices=("fast", "cvxpy"), default="fast",
                   help="closed-form fast path (default) or CVXPY block problems")
    p.add_argument("--solver", help="conic solver for --method cvxpy (default CLARABEL, then SCS)")
    p.set_defaults(func=_cmd_solve)

    from jointopt.policies import POLICIES

    p = sub.add_parser("simulate", help="run policies in the surrogate for many rounds")
    p.add_argument("scenario", nargs="?", default="default",
                   help="built-in scenario name or a .toml/.yaml path (default: %(default)s)")
    p.add_argument("--policy", default="online", choices=[*POLICIES, "all"],
                   help="policy to run, or 'all' on the same seed (default: %(default)s)")
    p.add_argument("--rounds", type=int, help="rounds to simulate (default: the scenario's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object with the summary keyed by policy")
    p.add_argument("--out", metavar="DIR",
                   help="write rounds.csv, summary.csv, aom.csv and simulation.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except JointoptError as exc:
        print(f"jointopt: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `jointopt solve | head`: the reader left, not an error
        sys.stderr.close()
        return 0
    except OSError as exc:
        print(f"jointopt: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
