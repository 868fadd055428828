"""The ``jointopt`` command line.

Every sub-command takes a scenario (a built-in name or a TOML/YAML path). Bad input is
reported in one line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import sys

from jointopt import report, scenarios
from jointopt.errors import JointoptError, ValidationError
from jointopt.models.accuracy import ACCURACY_MAPS
from jointopt.solvers import PROBLEM_KINDS
from jointopt.solvers.base import LIMITS, check_seed, check_size

_json_docs: list[dict] = []


def _print_json(doc: dict) -> None:
    """Queue the one JSON object a ``--json`` command prints: :func:`main` writes it to
    stdout after the command has finished and stdout is the real one again."""
    _json_docs.append(doc)


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send everything written to stdout to stderr while a ``--json`` command runs: Python's
    ``sys.stdout`` and file descriptor 1, so that a solver library's banner or log (HiGHS
    prints its banner from C when a model is created) can never reach the JSON on stdout."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:      # no file descriptor 1 (an embedding host): Python-level only
        saved = None
    if saved is not None:
        os.dup2(2, 1)
    real, sys.stdout = sys.stdout, sys.stderr
    try:
        yield
    finally:
        sys.stdout = real
        with contextlib.suppress(Exception):
            ctypes.CDLL(None).fflush(None)    # C stdio buffers written while redirected
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


class _Checked(argparse.Action):
    """An integer option checked by the rule scenario files follow (``check(flag, value)``:
    a seed, or a count within a size limit), so that a bad value is one line, exit 2."""

    def __init__(self, *args, check, **kwargs):
        super().__init__(*args, type=int, **kwargs)
        self.check = check

    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, self.check(option_string, value))


def _count(limit: str, minimum: int = 1):
    """The check of a count option: at least ``minimum``, within the size limit ``limit``."""
    def check(flag: str, value: int) -> int:
        if value < minimum:
            raise ValidationError(flag, f"must be >= {minimum}, got {value}")
        return check_size(flag, value, limit)
    return check


@contextlib.contextmanager
def _flag_names(paths: dict[str, str]):
    """Name the option in an error about the scenario field it overrides
    (``{"monte_carlo.n_mc": "--n-mc"}``): the field's own rule checked the value."""
    try:
        yield
    except ValidationError as exc:
        if exc.field not in paths:
            raise
        raise ValidationError(f"{paths[exc.field]} ({exc.field})", exc.message) from None


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
    problem.check_solver(args.method, args.solver, field="--solver")
    options = {"solver": args.solver} if args.solver else {}
    if args.time_limit is not None:
        if not type(problem).takes_time_limit:
            raise ValidationError("--time-limit", f"{problem.kind} problems take no time limit")
        if not args.time_limit > 0:
            raise ValidationError("--time-limit", f"must be > 0 seconds, got {args.time_limit}")
        options["time_limit"] = args.time_limit
    result = solve(problem, method=args.method, **options)
    written = report.write_outputs(result, problem, args.out) if args.out else []
    if args.json:
        _print_json(result.to_dict())
    else:
        print(report.text_report(result))
        for path in written:
            print(f"wrote {path}")
    return 0 if result.ok else 1


def _cmd_simulate(args) -> int:
    """Run the simulator of the scenario's kind (its ``simulator`` entry point)."""
    import importlib

    problem = scenarios.load(args.scenario)
    entry = type(problem).simulator
    if entry is None:
        kinds = [k for k, cls in PROBLEM_KINDS.items() if cls.simulator]
        raise ValidationError("scenario", f"simulate takes a scenario of kind "
                                          f"{', '.join(kinds)}; got kind {problem.kind!r}")
    module, _, name = entry.partition(":")
    doc, text = getattr(importlib.import_module(module), name)(problem, args)
    if args.json:
        _print_json(doc)
    else:
        print(text)
    return 0


def _cmd_sweep(args) -> int:
    from dataclasses import replace

    from jointopt import sweep

    spec = sweep.SweepSpec.from_toml(args.spec) if args.spec else sweep.SweepSpec()
    changes = {}
    if args.scenario:
        changes["scenario"] = args.scenario
    if args.grid:
        changes["grid"] = {**spec.grid, **sweep.parse_grid(args.grid)}
    if args.random:
        changes["random"] = {**spec.random, **sweep.parse_random(args.random)}
    if args.samples is not None:
        if not changes.get("random", spec.random):
            raise ValidationError("--samples", "needs --random PATH=LO:HI (it is the number of "
                                               "random draws); without it it would be ignored")
        changes["samples"] = args.samples
    if args.command:
        changes["command"] = args.command
    if args.policy:
        from jointopt.policies import POLICIES

        names = [p for item in args.policy for p in item.split(",")]
        changes["policies"] = tuple(POLICIES) if names == ["all"] else tuple(names)
    if args.seeds:
        try:
            changes["seeds"] = tuple(int(s) for s in args.seeds.split(","))
        except ValueError:
            raise ValidationError("--seeds", f"expects S1,S2,..., got {args.seeds!r}") from None
    if args.rounds is not None:
        changes["rounds"] = args.rounds
    if args.workers < 1:
        raise ValidationError("--workers", f"must be >= 1, got {args.workers}")
    # the scenario is read and checked once, the options against its kind, and the
    # directory taken (another sweep's is refused), all before any worker starts
    run = sweep.open_sweep(replace(spec, **changes), args.out)
    executor, cluster, limit = None, None, None
    if args.scheduler or args.dask_local:
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise ValidationError("--scheduler", "needs Dask: pip install -e \".[dask]\"") from None
        if args.dask_local:
            cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                   processes=True, dashboard_address=None)
            client = Client(cluster)
        else:
            client = Client(args.scheduler)
        executor = client.get_executor()
        # two points per worker thread in flight; each holds a claim file open
        limit = min(512, max(2 * args.workers, 2 * sum(client.nthreads().values())))
    progress = sys.stderr.isatty() and not args.no_progress
    try:
        report = run.run(workers=args.workers, progress=progress, executor=executor,
                         max_in_flight=limit)
    finally:
        if executor is not None:
            client.close()
            if cluster is not None:
                cluster.close()
    table = run.table()
    path = sweep.write_table(table, args.out, args.format) if len(table) else None
    print(report.line(), file=sys.stderr)
    if path:
        print(f"wrote {path} ({len(table)} rows)")
    return 130 if report.interrupted else (1 if report.failed else 0)


def _cmd_plot(args) -> int:
    from pathlib import Path

    import pandas as pd

    src = Path(args.results)
    if src.is_dir():
        cands = [src / "results.parquet", src / "results.csv"]
        src = next((c for c in cands if c.exists()), cands[-1])
    if not src.exists():
        raise ValidationError("RESULTS", f"{args.results!r}: no results table found")
    try:
        table = pd.read_parquet(src) if src.suffix == ".parquet" else pd.read_csv(src)
    except ValueError as exc:  # not UTF-8, not CSV/Parquet (pandas' and pyarrow's errors)
        reason = " ".join(str(exc).split())[:120]
        raise ValidationError("RESULTS", f"{str(src)!r} is not a results table "
                                         f"({type(exc).__name__}: {reason})") from None
    out = report.plot_sweep(table, args.x, args.y, args.hue,
                            args.out or src.with_name(f"{args.y}_vs_{args.x}.png"))
    print(f"wrote {out}")
    return 0


def _cmd_validate(args) -> int:
    from jointopt.policies import POLICIES
    from jointopt.solvers.jti import JointTrainingInferenceProblem

    problem = scenarios.load(args.scenario)
    if not isinstance(problem, JointTrainingInferenceProblem):
        raise ValidationError("scenario", f"validate needs a joint_training_inference scenario, "
                                          f"got kind {problem.kind!r}")
    names = [p for item in (args.policies or ["all"]) for p in item.split(",") if p]
    names = list(POLICIES) if names == ["all"] else names
    for name in names:
        if name not in POLICIES:
            raise ValidationError("--policies", f"unknown policy {name!r}; choose from "
                                                f"{', '.join(POLICIES)} or all")
    try:
        from jointopt.harness.validate import (
            describe_calibration,
            resize,
            validate,
            write_validation,
        )
    except ImportError as exc:
        raise ValidationError("validate", f"needs the train extra (torch, scikit-learn): "
                                          f"pip install -e \".[train]\" ({exc})") from None
    if args.engine == "flower":
        if args.serving_draws not in (None, 1):
            raise ValidationError("--serving-draws", f"must be 1 with --engine flower (its "
                                                     f"nodes serve one request stream per "
                                                     f"round), got {args.serving_draws}")
        try:
            import jointopt.flower  # noqa: F401
        except ImportError as exc:
            raise ValidationError("--engine", f"flower needs the flower extra: pip install -e "
                                              f"\".[flower]\" ({exc})") from None
    if args.clients is not None:
        problem = resize(problem, args.clients)
    progress = sys.stderr.isatty() and not args.no_progress
    options = {"rounds": args.rounds, "surrogate_seeds": args.surrogate_seeds,
               "closed_loop": True if args.closed_loop else None, "engine": args.engine,
               "accuracy_map": args.accuracy_map, "serving_draws": args.serving_draws,
               "replicates": args.replicates, "pilot_runs": args.pilot_runs}
    if args.seeds is not None:
        return _validate_paired(args, problem, names, options, progress)
    result = validate(problem, names, seed=args.seed, progress=progress, **options)
    written = write_validation(result, args.out) if args.out else []
    if args.json:
        _print_json(result.to_dict())
    else:
        cols = ["policy", "predicted", "measured", "abs_error"]
        print(result.table[cols].to_string(index=False, float_format="{:.4f}".format))
        print(f"spearman {result.spearman:.3f}  mae {result.mae:.4f}{result.noise_note()}  "
              f"({len(names)} policies, {result.rounds_run} rounds, seed {args.seed}, "
              f"engine {args.engine}, {result.serving_draws} serving draws, "
              f"{result.replicates} real run(s) per policy, {result.pilot_runs} run(s) "
              f"per pilot)")
        print("calibration: " + describe_calibration(
            result.calibration, problem.calibration.aggregation_noise))
        for path in written:
            print(f"wrote {path}")
    return 0


def _cmd_bench(args) -> int:
    """``jointopt bench density``: the HFL cost-vs-edge-density study (F1 data)."""
    from jointopt import hfl

    doc, text = hfl.density_command(args)
    if args.json:
        _print_json(doc)
    else:
        print(text)
    return 0


def _validate_paired(args, problem, names, options, progress) -> int:
    from jointopt.harness.validate import validate_seeds, write_paired

    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        raise ValidationError("--seeds", f"expects S1,S2,..., got {args.seeds!r}") from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValidationError("--seeds", f"needs at least two distinct seeds, got {args.seeds!r}")
    for seed in seeds:
        check_seed("--seeds", seed)
    if "online" not in names or len(names) < 2:
        raise ValidationError("--policies", "the paired gain needs online and a baseline")
    paired = validate_seeds(problem, names, seeds=seeds, progress=progress, **options)
    written = write_paired(paired, args.out) if args.out else []
    if args.json:
        _print_json(paired.to_dict())
        return 0
    first = paired.results[0]
    print(f"{problem.name}: measured average timely accuracy, {first.rounds_run} rounds, "
          f"engine {first.engine}, {first.serving_draws} serving draws, {first.replicates} "
          f"real run(s) per policy, {first.pilot_runs} run(s) per pilot")
    table = paired.table
    print(table.pivot(index="policy", columns="seed", values="measured")
          .loc[names].to_string(float_format="{:.4f}".format))
    print("\nper seed:")
    per_seed = paired.per_seed()
    if per_seed["noise_mae"].isna().all():  # one real run per policy cannot measure them
        per_seed = per_seed.drop(columns=["noise_spearman", "noise_mae"])
    print(per_seed.to_string(index=False, float_format="{:.4f}".format))
    gains = paired.gains()
    print(f"\nonline minus each baseline, paired over {len(seeds)} seeds (95% interval):")
    print(gains.to_string(index=False, float_format="{:+.4f}".format))
    best = paired.best_gain()
    print(f"\n{problem.name}: online - best baseline ({best['baseline']}) = "
          f"{best['measured_gain']:+.4f} [{best['measured_lo']:+.4f}, "
          f"{best['measured_hi']:+.4f}] in real training; surrogate "
          f"{best['predicted_gain']:+.4f} [{best['predicted_lo']:+.4f}, "
          f"{best['predicted_hi']:+.4f}]")
    pairs = paired.separated_pairs()
    print(f"pairs of policies real training separates (95%): {pairs['separated']} of "
          f"{pairs['pairs']}; the surrogate orders {pairs['agree']} of them the same way")
    for path in written:
        print(f"wrote {path}")
    return 0


def _cmd_plan(args) -> int:
    import time

    from jointopt.planner import plan

    start = time.perf_counter()
    given = {"monte_carlo.n_mc": ("--n-mc", args.n_mc), "monte_carlo.seed": ("--seed", args.seed)}
    with _flag_names({path: flag for path, (flag, value) in given.items() if value is not None}):
        result = plan(args.scenario, seed=args.seed, n_mc=args.n_mc,
                      with_tornado=not args.no_tornado, with_whatif=not args.no_whatif)
    written = result.write(args.out) if args.out else []
    check = None
    if args.verify_des:
        from jointopt.planner import verify_des

        check = verify_des(result)
        if args.out:
            from pathlib import Path

            check.table.to_csv(Path(args.out) / "des_check.csv", index=False)
            written.append(Path(args.out) / "des_check.csv")
    if args.json:
        doc = result.summary_json()
        if check is not None:
            doc["des_check"] = check.to_dict()
        _print_json(doc)
    else:
        print(f"verdict: {result.verdict}")
        for line in result.evaluation.reasons:
            print(f"  {line}")
        for g, r in result.gates.items():
            print(f"  {g}: {r['status']}")
        if check is not None:
            print(check.table.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
            changed = [f"{g} {check.gates_planner[g]} -> {check.gates_des[g]}"
                       for g in check.gates_planner
                       if check.gates_planner[g] != check.gates_des[g]]
            print(f"verdict under the simulated values: {check.verdict_des} ("
                  + ("changes" if check.verdict_changes else "unchanged")
                  + (f"; gates {', '.join(changed)}" if changed else "")
                  + (f"; marginal: {', '.join(check.marginal)}" if check.marginal else "")
                  + ")")
        for path in written:
            print(f"wrote {path}")
        print(f"({time.perf_counter() - start:.2f} s)", file=sys.stderr)
    return 0 if check is None or check.ok else 1


def _cmd_limits(args) -> int:
    rows = [(lim.name, f"{lim.value():,}", f"{lim.default:,}", lim.env, lim.what)
            for lim in LIMITS.values()]
    head = ("limit", "in force", "default", "environment variable", "counts")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    for row in [head, *rows]:
        print("  ".join(f"{v:<{w}}" for v, w in zip(row, widths, strict=False)) + "  " + row[4])
    return 0


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr, exit 2, like every
    other error of the command line (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"jointopt: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jointopt",
        description="Joint training-inference resource allocation for federated and edge learning.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("scenarios", help="list the built-in scenarios",
                       description="List the built-in scenarios, one a line: name, problem "
                                   "kind, description. A name works wherever a command takes "
                                   "a SCENARIO; to start a file of your own, copy one from "
                                   "jointopt/data/scenarios.")
    p.set_defaults(func=_cmd_scenarios)

    p = sub.add_parser("limits", help="list the size limits and how to raise them",
                       description="The size limits checked when a scenario is read (clients, "
                                   "devices, rounds, samples, ...): a larger count is refused "
                                   "before anything is allocated. Each is raised (or lowered) by "
                                   "its environment variable, e.g. JOINTOPT_MAX_CLIENTS=5000000.")
    p.set_defaults(func=_cmd_limits)

    p = sub.add_parser("solve", help="solve a scenario (one allocation round)")
    p.add_argument("scenario", nargs="?", default="default",
                   help="built-in scenario name or a .toml/.yaml path (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--out", metavar="DIR", help="write result.json, decisions.csv, a figure")
    p.add_argument("--method", help="solution method of the scenario's kind, its first the "
                                    "default (" + "; ".join(
                                        f"{kind}: {', '.join(cls.methods)}"
                                        for kind, cls in PROBLEM_KINDS.items()) + ")")
    p.add_argument("--time-limit", type=float, metavar="S",
                   help="wall-clock limit of the whole solve in seconds (" + ", ".join(
                       kind for kind, cls in PROBLEM_KINDS.items() if cls.takes_time_limit)
                   + "); refused by other kinds")
    p.add_argument("--solver", help="solver of a method that takes one (" + "; ".join(
        f"{kind} {', '.join(cls.solver_methods)}" for kind, cls in PROBLEM_KINDS.items()
        if cls.solver_methods) + "); refused with any other method")
    p.set_defaults(func=_cmd_solve)

    from jointopt.policies import POLICIES

    p = sub.add_parser("simulate", help="simulate a scenario: policies in the surrogate "
                                        "(joint_training_inference), the testbed latency "
                                        "(hfl), both plans online (edge_system)")
    p.add_argument("scenario", nargs="?", default="default",
                   help="built-in scenario name or a .toml/.yaml path (default: %(default)s)")
    p.add_argument("--policy", choices=[*POLICIES, "all"],
                   help="policy to run, or 'all' on the same seed (default: online)")
    p.add_argument("--rounds", action=_Checked, check=_count("rounds"),
                   help="rounds to simulate (default: the scenario's; hfl: 100)")
    p.add_argument("--seed", action=_Checked, check=check_seed, default=0,
                   help="random seed (default: %(default)s)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object with the summary (keyed by policy or "
                        "configuration)")
    p.add_argument("--out", metavar="DIR",
                   help="write the samples, the summary and a figure")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    g = p.add_argument_group("hfl (latency simulator)")
    g.add_argument("--config", action="append", metavar="NAME,...",
                   help="flat, proximity, hflop (default: all three)")
    g.add_argument("--multiplier", metavar="X,...", default="1",
                   help="workload multipliers, e.g. 1,10,100 (default: %(default)s)")
    g.add_argument("--proc-scale", type=float, default=1.0,
                   help="processing times multiplied by this factor (default: %(default)s)")
    g.add_argument("--cloud-increase", type=float, default=0.0, metavar="S",
                   help="cloud compute increase in %%: cloud processing times x (1 - S/100) "
                        "(default: %(default)s)")
    g.add_argument("--overflow", choices=("scaled", "base"), default="scaled",
                   help="proximity devices sent to the cloud: by the overflow rule at the "
                        "simulated load (scaled) or pinned to those at multiplier 1 (base)")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("sweep", help="run a parameter sweep; resumable, on a pool or Dask")
    p.add_argument("scenario", nargs="?",
                   help="built-in scenario name or a scenario file (default: the --spec "
                        "file's, else default)")
    p.add_argument("--spec", metavar="TOML", help="sweep description ([sweep] table)")
    p.add_argument("--grid", action="append", metavar="PATH=V1,V2,...",
                   help="values at a dotted path into the scenario (repeatable)")
    p.add_argument("--random", action="append", metavar="PATH=LO:HI",
                   help="uniform draws at a dotted path (repeatable; with --samples)")
    p.add_argument("--samples", type=int, help="number of random draws (needs --random)")
    p.add_argument("--command", choices=("solve", "simulate"),
                   help="what each point runs (default: simulate for joint_training_inference "
                        "scenarios, solve for every other kind)")
    p.add_argument("--policy", action="append",
                   help="policies for simulate (NAME,... or all; default: online)")
    p.add_argument("--seeds", help="seeds for simulate, S1,S2,... (default: 0)")
    p.add_argument("--rounds", type=int,
                   help="rounds for simulate (default: the scenario's simulation.rounds)")
    p.add_argument("--out", required=True, metavar="RESULTS",
                   help="results directory; it belongs to one sweep (another is refused)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes (default: 1, in this process)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler")
    p.add_argument("--dask-local", action="store_true", help="a Dask LocalCluster of --workers")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv",
                   help="results table format: csv, or parquet with pyarrow "
                        "(default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("plot", help="line plot of a sweep's results table")
    p.add_argument("results", metavar="RESULTS", help="results directory or table file")
    p.add_argument("--x", required=True, help="column on the x axis, e.g. param.clients.budget")
    p.add_argument("--y", required=True, help="metric, e.g. avg_timely_accuracy")
    p.add_argument("--hue", help="column that splits the lines, e.g. policy")
    p.add_argument("--out", help="PNG path (default: next to the table)")
    p.set_defaults(func=_cmd_plot)
    p = sub.add_parser("validate", help="check the calibrated surrogate against real "
                                        "federated training (needs the train extra)")
    p.add_argument("scenario", nargs="?", default="default",
                   help="built-in scenario name or a .toml/.yaml path (default: %(default)s)")
    p.add_argument("--policies", action="append", metavar="NAME,...",
                   help="policies to compare (comma separated, repeatable, or all; default all)")
    p.add_argument("--rounds", action=_Checked, check=_count("rounds", 2),
                   help="rounds of each run (default: the scenario's)")
    p.add_argument("--seed", action=_Checked, check=check_seed, default=0,
                   help="random seed (default: %(default)s)")
    p.add_argument("--seeds", metavar="S1,S2,...",
                   help="paired mode: validate on each seed and report online's gain over "
                        "every baseline with a 95%% interval (replaces --seed)")
    p.add_argument("--closed-loop", action="store_true",
                   help="the online policy re-estimates its model while it runs")
    p.add_argument("--accuracy-map", choices=tuple(ACCURACY_MAPS),
                   help="family of accuracy map calibrated to real training (default: the "
                        "scenario's accuracy.calibrate, else its accuracy.map)")
    p.add_argument("--clients", action=_Checked, check=_count("clients"),
                   help="keep only the scenario's first N clients")
    p.add_argument("--surrogate-seeds", action=_Checked, check=_count("seeds"), default=20,
                   help="surrogate runs averaged per policy (default: %(default)s)")
    p.add_argument("--replicates", action=_Checked, check=_count("seeds"), default=1,
                   metavar="R", help="real training runs averaged per policy (run seeds S, "
                                     "then S + r*10**9 for r = 1..R-1, S the seed); with 2 "
                                     "or more each seed also reports noise_spearman and "
                                     "noise_mae, the Spearman and MAE that the R-run "
                                     "averages' own run-to-run noise would leave a perfect "
                                     "surrogate (default: %(default)s)")
    p.add_argument("--pilot-runs", action=_Checked, check=_count("seeds"), default=1,
                   metavar="N", help="runs of each calibration pilot, fitted together; "
                                     "the pilots take N times as long (default: "
                                     "%(default)s)")
    p.add_argument("--serving-draws", action=_Checked, check=_count("seeds"), metavar="N",
                   help="request streams the trained models answer each round of a real "
                        "run (the training happens once; the first stream alone is what the "
                        "policy observes, the measured timely accuracy pools them all) "
                        "(default: 10 on the harness engine, 1 on flower, whose nodes serve "
                        "one stream and refuse more)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (policies: predicted, measured; spearman)")
    p.add_argument("--out", metavar="DIR", help="write validation.csv, validation_rounds.csv, "
                                                "validation_windows.csv (where in the run "
                                                "the policies differ, on each side), "
                                                "calibration.json and validation.png; with "
                                                "--seeds: validation_all.csv, gains.csv, "
                                                "per_seed.csv, windows_all.csv and figures")
    p.add_argument("--engine", choices=("harness", "flower"), default="harness",
                   help="real training on the in-house vmap FedAvg harness, or on Flower's "
                        "Simulation Engine (needs the flower extra) (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_cmd_validate)
    p = sub.add_parser("bench", help="studies over generated instances (density: HFL "
                                     "savings vs edge density, the source's F1)")
    p.add_argument("study", choices=("density",), help="which study")
    p.add_argument("--x", default="2,4,8,16,32,64",
                   help="densities 1:x, devices per host (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=50, help="instances per density "
                                                         "(default: %(default)s)")
    p.add_argument("--devices", type=int, default=200, help="devices N (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--out", metavar="DIR", help="write density.csv, density_summary.csv, "
                                                "density.png")
    p.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_bench)
    p = sub.add_parser("plan", help="deployment planner: go / no-go, time and cost of "
                                    "cross-device FL (Markdown + JSON + PNG report)")
    p.add_argument("scenario", nargs="?", default="planner_example",
                   help="deployment_plan scenario name or path (default: %(default)s)")
    p.add_argument("--out", metavar="DIR", help="write report.md, report.json and PNG figures")
    p.add_argument("--json", action="store_true",
                   help="print verdict, gates and estimates as one JSON object")
    p.add_argument("--seed", action=_Checked, check=check_seed,
                   help="Monte-Carlo seed (default: the scenario's monte_carlo.seed)")
    p.add_argument("--n-mc", type=int, help="Monte-Carlo rounds (default: the scenario's "
                                            "monte_carlo.n_mc, whose rules it follows)")
    p.add_argument("--no-tornado", action="store_true", help="skip the tornado sensitivity")
    p.add_argument("--no-whatif", action="store_true", help="skip the what-if grid")
    p.add_argument("--verify-des", action="store_true",
                   help="also check the estimates against a scaled-down SimPy simulation "
                        "and the verdict under the simulated values (exit 1 if a quantity is "
                        "outside tolerance)")
    p.set_defaults(func=_cmd_plan)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"jointopt: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.formatwarning = _one_line_warning
    _json_docs.clear()
    try:
        args = build_parser().parse_args(argv)
        with _stdout_to_stderr() if getattr(args, "json", False) else contextlib.nullcontext():
            code = args.func(args)
        for doc in _json_docs:
            print(json.dumps(doc))
        return code
    except JointoptError as exc:
        _error(exc)
        return 2
    except BrokenPipeError:  # e.g. `jointopt solve | head`: the reader left, not an error
        sys.stderr.close()
        return 0
    except OSError as exc:
        _error(exc)
        return 2


def _error(exc: Exception) -> None:
    """One line on stderr, whatever the error holds (the planner reports its problems
    together, one per line: they are joined with "; ")."""
    message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    print(f"jointopt: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
