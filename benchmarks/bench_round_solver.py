"""Benchmark one per-round solve of the joint allocator, fast path against CVXPY path.

Run from the repository root::

    python benchmarks/bench_round_solver.py            # full run (a few minutes)
    python benchmarks/bench_round_solver.py --quick    # tiny sizes, one repetition
    python benchmarks/bench_round_solver.py --max-n 10000 --out results/bench.csv

For each client count N the same seeded instance is solved by both paths
(:class:`jointopt.solvers.jti.round.RoundSolver` with ``method="fast"`` and ``"cvxpy"``):

* **fast cold**: one solve of round 1 by a fresh solver, from its own cold starts;
* **fast warm**: one re-solve of round 2 (new ``K``, ``ebar``, ``Z``) warm-started from the
  fast path's round-1 allocation, by the solver that just solved round 1;
* **1 thread**: the same two fast solves with the passes on one thread (the default uses
  every core the process may run on, see ``JOINTOPT_THREADS``; from 100,000 clients on);
* **cold, no pilot**: the cold solve with both cold starts ascended at full size
  (``controller.pilot = 0``) rather than picked on a 10,000-client pilot (from 100,000 on);
* **cvxpy compile+1st**: build the ``RoundSolver`` (the DPP block problems are compiled on
  their first solve) and solve round 1, i.e. the one-off cost of an online controller;
* **cvxpy warm**: re-solve round 2 on the already compiled solver, warm-started from the
  CVXPY path's round-1 allocation, the per-round cost of the online use case.

Times are medians over a few repetitions (fewer at large N, and fewer once one measurement
has taken ``--rep-budget`` seconds) of ``time.perf_counter`` taken around the ``solve`` call
itself. Every repetition starts from the same solver state (a fresh fast solver; round 1
solved again, untimed, before each timed round-2 re-solve), so no repetition profits from
state the solver kept from the one before. Building the instance (drawing the arrays,
validating them with ``JointTrainingInferenceProblem.from_dict`` and constructing the fast
``RoundSolver``) is timed separately ("build") and never counted in a solve time. The
script prints the targets with the measured PASS/MISS; it never fails on speed.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import math
import platform
import signal
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from jointopt.solvers.jti.problem import JointTrainingInferenceProblem
from jointopt.solvers.jti.round import Allocation, RoundSolver, RoundState

FAST_SIZES = (10, 100, 1_000, 10_000, 100_000, 1_000_000)
CVXPY_SIZES = (10, 100, 1_000)
QUICK_FAST_SIZES = (10, 100)
QUICK_CVXPY_SIZES = (10,)

# targets: (description, N, path/column, limit in ms)
TARGET_FAST_N = 1_000_000
TARGET_FAST_MS = 1_000.0
TARGET_CVXPY_N = 100
TARGET_CVXPY_MS = 20.0

Q_MIN = 0.02
SERVICE_MARGIN = 0.01  # the controller default: mu >= lambda (1 + margin)


# ---------------------------------------------------------------------------------------
# instances
# ---------------------------------------------------------------------------------------
def instance_dict(n: int, seed: int = 0) -> dict:
    """A realistic, always-feasible scenario dict with ``n`` heterogeneous clients.

    Per-client arrays are drawn here (rather than with the scenario's ``dist`` tables) so
    that caps and budgets can be placed relative to each client's least and full resource
    use: every instance is feasible at any N, and a share of the caps binds.

    * request rates ``lambda``: lognormal (median ~0.8, heavy right tail);
    * deadlines: uniform 0.2-2 time units, 5 % of clients without one;
    * costs: training 1-6, download lognormal around 1, service 0.05-0.4 per unit rate;
    * ``mu_max``: 1.5-6 times ``lambda`` plus 1;
    * hard caps between the least use and the full use (``q = d = 1``, ``mu = mu_max``);
    * average budgets between the least use and the cap, so the virtual queues ``Z`` matter.
    """
    rng = np.random.default_rng([seed, 0, n])
    lam = rng.lognormal(math.log(0.8), 0.7, n)
    deadline = np.where(rng.random(n) < 0.95, rng.uniform(0.2, 2.0, n), np.inf)
    cost_train = rng.uniform(1.0, 6.0, n)
    cost_download = rng.lognormal(0.0, 0.4, n)
    cost_service = rng.uniform(0.05, 0.4, n)
    mu_max = lam * rng.uniform(1.5, 6.0, n) + 1.0
    min_use = Q_MIN * cost_train + lam * (1.0 + SERVICE_MARGIN) * cost_service
    full_use = cost_train + cost_download + cost_service * mu_max
    cap = min_use + rng.uniform(0.15, 1.1, n) * (full_use - min_use)
    budget = min_use + rng.uniform(0.2, 0.9, n) * (cap - min_use)
    return {
        "kind": "joint_training_inference",
        "name": f"bench-{n}",
        "description": "benchmark instance (benchmarks/bench_round_solver.py)",
        "clients": {
            "count": n, "seed": seed,
            "data_weight": rng.lognormal(0.0, 0.8, n),
            "arrival_rate": lam, "deadline": deadline,
            "cost_train": cost_train, "cost_download": cost_download,
            "cost_service": cost_service, "cap": cap, "budget": budget,
            "mu_max": mu_max, "q_min": Q_MIN,
        },
        "convergence": {"model": "fitted", "a": 0.9, "b": 0.5, "c": 0.01},
        "accuracy": {"map": "affine", "acc_max": 0.95, "kappa": 0.35, "acc_min": 0.1},
        "controller": {"V": 10.0, "service_margin": SERVICE_MARGIN},
        "state": {"K": 1.5, "Z": 0.5},
    }


def round_state(n: int, rnd: int, seed: int = 0) -> RoundState:
    """The state at the start of round ``rnd``: same seed scheme for every round.

    ``K`` is the global model's error proxy; ``ebar`` (error of the held copies) sits above
    it (the copies are older); ``Z`` are lognormal virtual-queue backlogs, 10 % empty.
    """
    rng = np.random.default_rng([seed, 1, n, rnd])
    K = float(rng.uniform(0.6, 2.0))
    ebar = K + rng.exponential(0.5, n)
    Z = rng.lognormal(math.log(0.5), 1.0, n) * (rng.random(n) < 0.9)
    return RoundState(K, ebar, Z)


def allocation(result) -> Allocation:
    d = result.decisions
    return Allocation(np.asarray(d["q"]), np.asarray(d["d"]), np.asarray(d["mu"]))


# ---------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------
def timed(fn):
    """``(seconds, value)`` of one call, perf_counter around the call, GC paused."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - t0
    finally:
        if enabled:
            gc.enable()
    return seconds, value


def median_ms(run, reps: int, setup=None, budget_s: float = 30.0):
    """Median wall time in ms of ``run(setup())`` over up to ``reps`` repetitions.

    ``setup`` (untimed, before every repetition) puts the solver back into the state the
    measurement is about, so that no repetition profits from the one before (the solver
    may keep state between solves, e.g. last round's prices as a starting guess). Stops
    repeating, after at least one, once the repetitions took ``budget_s`` including setup.
    Returns ``(median ms, last value, repetitions done)``.
    """
    times = []
    value = None
    start = time.perf_counter()
    for _ in range(max(1, reps)):
        ctx = setup() if setup is not None else None
        seconds, value = timed(lambda ctx=ctx: run(ctx))
        times.append(seconds)
        if time.perf_counter() - start >= budget_s:
            break
    return 1e3 * statistics.median(times), value, len(times)


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise :class:`_Timeout` in this block after ``seconds`` of wall time (POSIX only)."""
    if not seconds or not hasattr(signal, "setitimer"):
        yield
        return

    def _raise(signum, frame):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fast_reps(n: int, quick: bool) -> int:
    if quick:
        return 1
    return 7 if n <= 10_000 else (5 if n <= 100_000 else 3)


def cvxpy_reps(n: int, quick: bool) -> tuple[int, int]:
    """(repetitions of compile+first solve, repetitions of the warm re-solve)."""
    if quick:
        return 1, 1
    return (3, 5) if n <= 100 else (1, 3)


@dataclass
class Row:
    n: int
    gen_ms: float = math.nan
    build_ms: float = math.nan
    fast_cold_ms: float = math.nan
    fast_warm_ms: float = math.nan
    threads: int = 1
    fast1_cold_ms: float = math.nan
    fast1_warm_ms: float = math.nan
    fast_cold_no_pilot_ms: float = math.nan
    pilot_clients: int | None = None
    pilot_loss: float = math.nan
    fast_cold_solve_time_s_last_ms: float = math.nan
    fast_it_cold: int | None = None
    fast_it_warm: int | None = None
    fast_status_warm: str = ""
    fast_obj_warm: float = math.nan
    cap_binding_pct: float = math.nan
    cvxpy_init_ms: float = math.nan
    cvxpy_first_ms: float = math.nan
    cvxpy_warm_ms: float = math.nan
    cvxpy_it_first: int | None = None
    cvxpy_it_warm: int | None = None
    cvxpy_status_first: str = ""
    cvxpy_status_warm: str = ""
    cvxpy_obj_warm: float = math.nan
    cvxpy_inaccurate_warnings: int = 0
    cvxpy_block_ms: dict | None = None

    @property
    def cvxpy_compile_first_ms(self) -> float:
        return self.cvxpy_init_ms + self.cvxpy_first_ms

    @property
    def ratio(self) -> float:
        return self.cvxpy_warm_ms / self.fast_warm_ms

    @property
    def rel_obj_diff(self) -> float:
        """``(cvxpy - fast) / |fast|`` on round 2; > 0 when CVXPY found the higher value."""
        return (self.cvxpy_obj_warm - self.fast_obj_warm) / max(abs(self.fast_obj_warm), 1e-12)


def block_resolve_ms(cvx: RoundSolver, reps: int) -> dict:
    """Median ms of one re-solve of each compiled CVXPY block problem, with the parameters
    its last use left: what one DPP re-solve costs, against the per-round solve, which
    needs about four of them per ascent sweep."""
    b = cvx.blocks
    out = {}
    for name, prob, var in (("q", b.q_prob, b.q), ("d", b.d_prob, b.d), ("mu", b.mu_prob, b.mu),
                            ("exchange", b.x_prob, b.xmu)):
        out[name] = median_ms(lambda _, prob=prob, var=var: b._solve(prob, var), reps,
                              budget_s=5.0)[0]
    return out


def bench_size(n: int, *, run_cvxpy: bool, quick: bool, seed: int, log,
               cvxpy_timeout: float | None = None, budget_s: float = 30.0,
               reps: int | None = None) -> Row:
    row = Row(n)
    t0 = time.perf_counter()
    data = instance_dict(n, seed)
    t1 = time.perf_counter()
    problem = JointTrainingInferenceProblem.from_dict(data)
    RoundSolver(problem, "fast")
    t2 = time.perf_counter()
    row.gen_ms, row.build_ms = 1e3 * (t1 - t0), 1e3 * (t2 - t1)
    s1, s2 = round_state(n, 1, seed), round_state(n, 2, seed)
    row.threads = RoundSolver(problem, "fast")._split.threads
    row.pilot_clients = problem.controller.pilot_size(n)

    reps = fast_reps(n, quick) if reps is None else reps

    def cold(threads=None, problem=problem):
        """Median ms of round 1 from cold starts, a fresh solver per repetition
        (construction untimed)."""
        return median_ms(lambda sv: sv.solve(s1), reps,
                         setup=lambda: RoundSolver(problem, "fast", threads=threads),
                         budget_s=budget_s)

    def warm(threads=None):
        """Median ms of round 2 warm-started from round 1, which a fresh solver solves
        first (untimed)."""
        def after_round_1():
            sv = RoundSolver(problem, "fast", threads=threads)
            return sv, allocation(sv.solve(s1))

        return median_ms(lambda c: c[0].solve(s2, warm=c[1]), reps, setup=after_round_1,
                         budget_s=budget_s)

    row.fast_cold_ms, r1, done = cold()
    row.fast_cold_solve_time_s_last_ms = 1e3 * r1.solve_time_s
    row.fast_it_cold = r1.iterations
    row.fast_warm_ms, r2, done_w = warm()
    if row.threads > 1:  # the same on one thread: what the passes' threads bring
        row.fast1_cold_ms = cold(threads=1)[0]
        row.fast1_warm_ms = warm(threads=1)[0]
    if row.pilot_clients is not None:  # both cold starts at full size: what the pilot saves
        no_pilot = JointTrainingInferenceProblem.from_dict(
            {**data, "controller": {**data["controller"], "pilot": 0}})
        row.fast_cold_no_pilot_ms, r0, _ = cold(problem=no_pilot)
        row.pilot_loss = (r0.objective - r1.objective) / max(1.0, abs(r0.objective))
    row.fast_it_warm, row.fast_status_warm = r2.iterations, r2.status
    row.fast_obj_warm = r2.objective
    row.cap_binding_pct = 100.0 * float(np.mean(r2.diagnostics["cap_binding"]))
    log(f"  N={n:>9,}  fast: cold {row.fast_cold_ms:9.2f} ms, warm {row.fast_warm_ms:9.2f} ms"
        f"  ({done}/{done_w} reps, build {row.build_ms:.1f} ms)")

    if run_cvxpy:
        reps_first, reps_warm = cvxpy_reps(n, quick)
        try:
            with warnings.catch_warnings(record=True) as caught, time_limit(cvxpy_timeout):
                warnings.simplefilter("always")
                inits, firsts = [], []
                start = time.perf_counter()
                for _ in range(reps_first):  # a fresh solver each time: compile again
                    t_init, cvx = timed(lambda: RoundSolver(problem, "cvxpy"))
                    t_first, c1 = timed(lambda cvx=cvx: cvx.solve(s1))
                    inits.append(t_init)
                    firsts.append(t_first)
                    if time.perf_counter() - start >= budget_s:
                        break
                row.cvxpy_init_ms = 1e3 * statistics.median(inits)
                row.cvxpy_first_ms = 1e3 * statistics.median(firsts)
                row.cvxpy_it_first, row.cvxpy_status_first = c1.iterations, c1.status
                # warm: the compiled solver solves round 1 again (untimed; the first time
                # it is the solve above), then re-solves round 2 from that allocation
                pending = [allocation(c1)]

                def round_1(cvx=cvx, pending=pending):
                    return pending.pop() if pending else allocation(cvx.solve(s1))

                row.cvxpy_warm_ms, c2, done = median_ms(
                    lambda w, cvx=cvx: cvx.solve(s2, warm=w), reps_warm, setup=round_1,
                    budget_s=budget_s)
        except _Timeout:
            row.cvxpy_status_warm = f"timeout>{cvxpy_timeout:g}s"
            log(f"  N={n:>9,}  cvxpy: gave up after {cvxpy_timeout:g} s (--cvxpy-timeout)")
            return row
        row.cvxpy_it_warm, row.cvxpy_status_warm = c2.iterations, c2.status
        row.cvxpy_block_ms = block_resolve_ms(cvx, 3 if quick else 15)
        row.cvxpy_obj_warm = c2.objective
        row.cvxpy_inaccurate_warnings = sum("inaccurate" in str(w.message) for w in caught)
        log(f"  N={n:>9,}  cvxpy: compile+1st {row.cvxpy_compile_first_ms:9.1f} ms, "
            f"warm {row.cvxpy_warm_ms:9.1f} ms  ({len(firsts)}/{done} reps)")
    return row


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
def _its(it, status) -> str:
    if it is None:
        return "-"
    return f"{it}" + ("!" if status == "max_iter" else "")


def table(rows: list[Row]) -> pd.DataFrame:
    """The printed table (strings, so that missing cells read ``-``)."""

    def ms(x, digits=2, missing="-"):
        return missing if not math.isfinite(x) else f"{x:,.{digits}f}"

    out = []
    for r in rows:
        has_cvx = math.isfinite(r.cvxpy_warm_ms)
        gone = "timeout" if r.cvxpy_status_warm.startswith("timeout") else "-"
        out.append({
            "N": f"{r.n:,}",
            "build ms": ms(r.build_ms, 1),
            "fast cold ms": ms(r.fast_cold_ms),
            "fast warm ms": ms(r.fast_warm_ms),
            "threads": f"{r.threads}",
            "1 thread cold/warm ms": (f"{ms(r.fast1_cold_ms)} / {ms(r.fast1_warm_ms)}"
                                      if math.isfinite(r.fast1_cold_ms) else "-"),
            "cold, no pilot ms": ms(r.fast_cold_no_pilot_ms),
            "pilot loss": f"{r.pilot_loss:.1e}" if math.isfinite(r.pilot_loss) else "-",
            "cvxpy compile+1st ms": ms(r.cvxpy_compile_first_ms, 1, gone),
            "cvxpy warm ms": ms(r.cvxpy_warm_ms, 1, gone),
            "cvxpy/fast (warm)": f"{r.ratio:,.0f}x" if has_cvx else "-",
            "rel obj diff": f"{r.rel_obj_diff:+.1e}" if has_cvx else "-",
            "fast it cold/warm": f"{r.fast_it_cold}/{r.fast_it_warm}",
            "cvxpy it 1st/warm": (f"{_its(r.cvxpy_it_first, r.cvxpy_status_first)}/"
                                  f"{_its(r.cvxpy_it_warm, r.cvxpy_status_warm)}"
                                  if has_cvx else "-"),
            "cvxpy block re-solve ms q/d/mu/exch": (
                "/".join(f"{v:.1f}" for v in r.cvxpy_block_ms.values())
                if r.cvxpy_block_ms else "-"),
            "caps bind %": f"{r.cap_binding_pct:.1f}",
        })
    return pd.DataFrame(out)


def frame(rows: list[Row]) -> pd.DataFrame:
    """Every measured number, one row per N (what ``--out`` writes)."""
    recs = []
    for r in rows:
        rec = dict(vars(r))
        for name, ms_ in (rec.pop("cvxpy_block_ms") or {}).items():
            rec[f"cvxpy_block_{name}_ms"] = ms_
        rec["cvxpy_compile_first_ms"] = r.cvxpy_compile_first_ms
        rec["cvxpy_over_fast_warm"] = r.ratio
        rec["rel_obj_diff"] = r.rel_obj_diff
        recs.append(rec)
    df = pd.DataFrame(recs)
    its = ["fast_it_cold", "fast_it_warm", "cvxpy_it_first", "cvxpy_it_warm"]
    df[its] = df[its].astype("Int64")
    return df


def verdict(value: float, limit: float) -> str:
    return "PASS" if value < limit else "MISS"


def targets(rows: list[Row]) -> list[str]:
    by_n = {r.n: r for r in rows}
    lines = []
    r = by_n.get(TARGET_FAST_N)
    head = f"fast path, one solve at N = {TARGET_FAST_N:,} < {TARGET_FAST_MS:,.0f} ms"
    if r is None:
        lines.append(f"{head}: not measured (N = {TARGET_FAST_N:,} not run)")
    else:
        lines.append(f"{head}: cold {r.fast_cold_ms:,.1f} ms  "
                     f"{verdict(r.fast_cold_ms, TARGET_FAST_MS)}")
        lines.append(f"{'':>{len(head)}}  warm {r.fast_warm_ms:,.1f} ms  "
                     f"{verdict(r.fast_warm_ms, TARGET_FAST_MS)}")
    r = by_n.get(TARGET_CVXPY_N)
    head = f"cvxpy path, warm re-solve at N = {TARGET_CVXPY_N:,} < {TARGET_CVXPY_MS:,.0f} ms"
    if r is None or not math.isfinite(r.cvxpy_warm_ms):
        lines.append(f"{head}: not measured (N = {TARGET_CVXPY_N:,} not run on CVXPY)")
    else:
        lines.append(f"{head}: {r.cvxpy_warm_ms:,.1f} ms  "
                     f"{verdict(r.cvxpy_warm_ms, TARGET_CVXPY_MS)}  "
                     f"({r.cvxpy_it_warm} sweeps of 4 block re-solves)")
        if r.cvxpy_block_ms:
            worst = max(r.cvxpy_block_ms, key=r.cvxpy_block_ms.get)
            lines.append(f"{'':>{len(head)}}  one block re-solve: at most "
                         f"{r.cvxpy_block_ms[worst]:,.1f} ms ({worst})  "
                         f"{verdict(r.cvxpy_block_ms[worst], TARGET_CVXPY_MS)}")
    return lines


def solver_fingerprint() -> str:
    """Which solver source was timed: git commit, and the hash of round.py if modified."""
    import jointopt.solvers.jti.round as round_module

    src = Path(round_module.__file__)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    try:
        git = ["git", "-C", str(src.parent)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", src.name],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head, dirty = "", ""
    state = (f"git {head}" + (", round.py modified" if dirty else "")) if head else "no git"
    return f"solver: {src.name} sha256 {digest} ({state})"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Time one per-round solve of the joint allocator (fast closed-form path "
                    "and CVXPY path), cold and warm-started, for growing client counts N.")
    ap.add_argument("--quick", action="store_true",
                    help=f"tiny run: fast N in {QUICK_FAST_SIZES}, CVXPY N in "
                         f"{QUICK_CVXPY_SIZES}, one repetition")
    ap.add_argument("--sizes", default=None, metavar="N,N,...",
                    help="client counts to run instead of the default ones (both paths; "
                         f"CVXPY only where N <= {max(CVXPY_SIZES):,})")
    ap.add_argument("--reps", type=int, default=None, metavar="R",
                    help="repetitions of each fast-path timing (default: 7 up to 10k "
                         "clients, 5 up to 100k, 3 above)")
    ap.add_argument("--max-n", type=int, default=None, metavar="N",
                    help="skip client counts above N (both paths)")
    ap.add_argument("--out", metavar="CSV", default=None,
                    help="also write every measured number to this CSV file")
    ap.add_argument("--seed", type=int, default=0, help="instance and state seed (default 0)")
    ap.add_argument("--no-cvxpy", action="store_true", help="time the fast path only")
    ap.add_argument("--rep-budget", type=float, default=30.0, metavar="S",
                    help="stop repeating one measurement after S seconds (at least one "
                         "repetition; default 30)")
    ap.add_argument("--cvxpy-timeout", type=float, default=900.0, metavar="S",
                    help="give up the CVXPY timings of one N after S seconds (default 900; "
                         "0 = no limit)")
    args = ap.parse_args(argv)
    if args.max_n is not None and args.max_n < 1:
        ap.error("--max-n must be >= 1")
    if args.reps is not None and args.reps < 1:
        ap.error("--reps must be >= 1")
    if args.sizes is not None:
        try:
            args.sizes = tuple(int(x.replace("_", "")) for x in args.sizes.split(","))
        except ValueError:
            ap.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
        if min(args.sizes) < 1:
            ap.error("--sizes must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    fast_sizes = QUICK_FAST_SIZES if args.quick else FAST_SIZES
    cvxpy_sizes = () if args.no_cvxpy else (QUICK_CVXPY_SIZES if args.quick else CVXPY_SIZES)
    if args.sizes is not None:
        fast_sizes = args.sizes
        cvxpy_sizes = () if args.no_cvxpy else tuple(n for n in args.sizes
                                                      if n <= max(CVXPY_SIZES))
    if args.max_n is not None:
        fast_sizes = tuple(n for n in fast_sizes if n <= args.max_n)
        cvxpy_sizes = tuple(n for n in cvxpy_sizes if n <= args.max_n)
    sizes = sorted(set(fast_sizes) | set(cvxpy_sizes))

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    versions = f"python {platform.python_version()}, numpy {np.__version__}"
    if cvxpy_sizes:
        import cvxpy  # imported up front: its import time is not a compile cost

        versions += f", cvxpy {cvxpy.__version__}"
    log(f"{versions}, {platform.machine()}, seed {args.seed}")
    # one untimed solve first: the process's first solve pays one-off (lazy import) costs
    RoundSolver(JointTrainingInferenceProblem.from_dict(instance_dict(10, args.seed)),
                "fast").solve(round_state(10, 1, args.seed))
    fingerprint = solver_fingerprint()  # taken now: others may edit the file mid-run
    log(fingerprint)
    rows = [bench_size(n, run_cvxpy=n in cvxpy_sizes, quick=args.quick, seed=args.seed, log=log,
                       cvxpy_timeout=args.cvxpy_timeout or None, budget_s=args.rep_budget,
                       reps=args.reps)
            for n in sizes]

    print()
    print(fingerprint)
    print("Per-round solve times (median wall ms of perf_counter around RoundSolver.solve)")
    print(table(rows).to_string(index=False))
    print()
    print("fast cold: round 1 from the solver's cold starts; fast warm: round 2 warm-started "
          "from round 1.")
    print("threads: how many the fast path's passes ran on (JOINTOPT_THREADS, else every "
          "core); 1 thread: the same solves on one; cold, no pilot: both cold starts ascended "
          "at full size (controller.pilot = 0) instead of picked on a 10,000-client pilot; "
          "pilot loss: how far (relative) the cold objective with the pilot falls below the "
          "one without.")
    print("cvxpy compile+1st: RoundSolver(..., 'cvxpy') + first solve (DPP compile happens "
          "there); cvxpy warm: round-2 re-solve on the compiled solver, warm-started.")
    print("rel obj diff: (cvxpy - fast) / |fast| on round 2.  build: from_dict + fast "
          "RoundSolver, not in any solve time.  '!': the ascent stopped at max_iter.")
    print("cvxpy block re-solve: median ms of one re-solve of each compiled block problem "
          "(q, d, mu, exchange) at round 2's last parameters.")
    print()
    print("Targets (measured; informational, never asserted):")
    for line in targets(rows):
        print("  " + line)
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame(rows).to_csv(path, index=False)
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
