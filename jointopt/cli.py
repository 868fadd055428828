"""The ``jointopt`` command line.

Every sub-command takes a scenario (a built-in name or a TOML/YAML path). Bad input is
reported in one line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from jointopt import report, scenarios
from jointopt.errors import JointoptError


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
