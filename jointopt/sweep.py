"""Batch parameter sweeps over any scenario, on a process pool or Dask; nothing finished is
lost, nothing stale or foreign is ever returned.

A sweep is a scenario plus the values to try at dotted paths into it (``clients.budget``,
``controller.V``): a grid (every combination), random draws (``samples`` points drawn
uniformly in ``[lo, hi]`` per path, seeded), and for ``simulate`` sweeps policies and seeds.
Each point is one ``solve`` (any problem kind) or one ``simulate`` run (joint
training-inference scenarios; the default command for them, ``solve`` for every other kind).

The results directory holds:

- ``sweep.json``: the manifest, the one sweep spec the directory belongs to and a digest of
  the scenario's content. Another spec (grid, rounds, policies, ...) is refused with a
  one-line error, so rows of two sweeps never mix.
- ``points/<key>.json``: one file per finished point, written atomically (a unique
  temporary name, then a rename) as it completes. The key is a hash of the point (its
  parameter values, policy, seed), the command, the rounds and the *content* of the scenario
  (not its path): edit the scenario and every point runs again, the old files are ignored.
  A re-run skips points already done (failed ones run again); a stored file that is not a
  valid point of this sweep (a half-written or hand-edited file) is reported on stderr and
  the point runs again.
- ``points/<key>.claim``: held (an OS file lock) while a point runs. Two copies of one sweep
  into one directory share the work: each point runs once, a copy waits at the end for the
  points the other is running, and both write the complete table. The lock dies with its
  process, so a killed run leaves nothing that blocks the next one.

With a process pool (``workers > 1``), a worker that dies (killed, out of memory) breaks
the pool: the points it held run again on a fresh pool, each alone, and a point whose worker
dies :data:`MAX_WORKER_DEATHS` times is recorded as failed with that reason. On Dask the
scheduler retries a task whose worker died, and a task that keeps killing its workers
comes back as ``KilledWorker``, recorded the same way. ``workers=1`` runs points in this
process: a point that kills it kills the sweep (run again to resume).

:func:`collect` gathers the points of a directory's sweep into one tidy table.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import os
import socket
import sys
import tempfile
import time
import tomllib
import warnings
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from jointopt.errors import JointoptError, ValidationError

try:
    import fcntl
except ImportError:  # no POSIX file locks (Windows): copies may repeat work, never corrupt
    fcntl = None

COMMANDS = ("solve", "simulate")
#: Version of the manifest and point files; files of another version are not reused.
FORMAT = 2
#: A point whose worker process dies this many times (the first run and two retries, each
#: retry alone on a fresh pool) is recorded as failed.
MAX_WORKER_DEATHS = 3
#: Seconds between looks at points that a concurrent copy of the sweep is running.
POLL_S = 0.1
#: Row columns a solve result's diagnostics may not overwrite (they are renamed ``diag.X``).
_RESERVED = ("status", "error", "policy", "seed", "wall_time_s", "objective", "solve_status",
             "solver", "solve_time_s", "iterations")


@dataclass(frozen=True)
class SweepSpec:
    """What to run. ``scenario`` is a built-in name or a scenario file path.

    ``None`` means "not given": ``command`` defaults to ``simulate`` for a
    joint_training_inference scenario and ``solve`` for every other kind; ``policies``
    (default ``("online",)``), ``seeds`` (default ``(0,)``) and ``rounds`` (default: the
    scenario's) apply to ``simulate`` points only and are refused for ``solve``;
    ``samples`` and ``sample_seed`` (default 0) only with ``random`` ranges.
    """

    scenario: str = "default"
    grid: dict[str, list] = field(default_factory=dict)
    random: dict[str, tuple[float, float]] = field(default_factory=dict)
    samples: int | None = None
    sample_seed: int | None = None
    command: str | None = None
    policies: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    rounds: int | None = None

    def __post_init__(self):
        if self.command is not None and self.command not in COMMANDS:
            raise ValidationError("sweep.command",
                                  f"must be one of {COMMANDS}, got {self.command!r}")
        if self.random and (self.samples is None or self.samples < 1):
            raise ValidationError("sweep.samples", "must be >= 1 when random ranges are given, "
                                                   f"got {self.samples}")
        for name in ("samples", "sample_seed"):
            if getattr(self, name) is not None and not self.random:
                raise ValidationError(f"sweep.{name}", "needs random ranges (--random "
                                      "PATH=LO:HI); without them it would be ignored")
        for path, (lo, hi) in self.random.items():
            if not hi >= lo:
                raise ValidationError(f"sweep.random.{path}", f"needs LO <= HI, got {lo}:{hi}")
        for path, values in self.grid.items():
            if not values:
                raise ValidationError(f"sweep.grid.{path}", "needs at least one value")
        if self.seeds is not None and not self.seeds:
            raise ValidationError("sweep.seeds", "needs at least one seed")
        if self.policies is not None and not self.policies:
            raise ValidationError("sweep.policies", "needs at least one policy")
        if self.rounds is not None and (isinstance(self.rounds, bool) or self.rounds < 1):
            raise ValidationError("sweep.rounds", f"must be >= 1, got {self.rounds}")
        if self.command == "solve":
            self._refuse_simulate_options("solve")

    def _refuse_simulate_options(self, why: str) -> None:
        for name in ("policies", "seeds", "rounds"):
            if getattr(self, name) is not None:
                raise ValidationError(f"sweep.{name}", f"applies to simulate points only, "
                                                       f"and this sweep runs {why}")

    @classmethod
    def from_dict(cls, data: dict) -> SweepSpec:
        """The fields of this class from a plain dict (a ``[sweep]`` table, a manifest)."""
        known = set(cls.__dataclass_fields__)
        for key in data:
            if key not in known:
                raise ValidationError(f"sweep.{key}", "is not a known field")
        data = dict(data)
        data["grid"] = {k: list(v) for k, v in (data.get("grid") or {}).items()}
        data["random"] = {k: tuple(v) for k, v in (data.get("random") or {}).items()}
        for key in ("policies", "seeds"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | Path) -> SweepSpec:
        """A ``[sweep]`` table (or the whole file) with the fields of this class."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ValidationError("sweep", f"cannot read {path}: {exc}") from None
        return cls.from_dict(data.get("sweep", data))

    def resolve(self, problem) -> SweepSpec:
        """This spec with its defaults made explicit for ``problem`` (the scenario's value):
        the command from the problem's kind, policies and seeds for ``simulate``. Options
        that would be ignored, or a command the kind cannot run, are refused."""
        from jointopt.policies import POLICIES
        from jointopt.solvers.jti import JointTrainingInferenceProblem

        simulable = isinstance(problem, JointTrainingInferenceProblem)
        command = self.command or ("simulate" if simulable else "solve")
        if command == "simulate" and not simulable:
            raise ValidationError("sweep.command", f"simulate needs a joint_training_inference "
                                                   f"scenario, got kind {problem.kind!r}: "
                                                   "use solve (the default for this kind)")
        if command == "solve":
            self._refuse_simulate_options(f"solve (the command for {problem.kind} scenarios)")
            return replace(self, command="solve")
        policies = self.policies or ("online",)
        for name in policies:
            if name not in POLICIES:
                raise ValidationError("sweep.policies", f"unknown policy {name!r}; choose from "
                                                        f"{', '.join(POLICIES)} or all")
        return replace(self, command="simulate", policies=tuple(policies),
                       seeds=tuple(self.seeds or (0,)))

    def points(self) -> list[dict]:
        """Every point in a fixed order: ``{"params": {path: value}}``, plus ``policy`` and
        ``seed`` unless the command is ``solve`` (see :meth:`resolve` for the command a
        spec without one gets)."""
        combos = [dict(zip(self.grid, values, strict=True))
                  for values in itertools.product(*self.grid.values())] or [{}]
        if self.random:
            rng = np.random.default_rng(self.sample_seed or 0)
            draws = [{p: float(rng.uniform(lo, hi)) for p, (lo, hi) in self.random.items()}
                     for _ in range(self.samples)]
            combos = [{**c, **r} for c in combos for r in draws]
        if self.command == "solve":
            return [{"params": c} for c in combos]
        return [{"params": c, "policy": pol, "seed": s}
                for c in combos for pol in self.policies or ("online",)
                for s in self.seeds or (0,)]


def set_path(data: dict, path: str, value) -> None:
    """``set_path(d, "clients.budget", 2.5)``: set a dotted path in a scenario dict."""
    keys = path.split(".")
    node = data
    for key in keys[:-1]:
        nxt = node.get(key)
        if nxt is None:
            nxt = node[key] = {}
        if not isinstance(nxt, dict):
            raise ValidationError(path, f"{key!r} is not a section")
        node = nxt
    node[keys[-1]] = value


def _canonical(value) -> str:
    """The JSON text that identifies a value: keys sorted, and a whole number written the
    same as an int or a float (``3`` on the command line, ``3.0`` in a spec file)."""
    return json.dumps(_numbers_as_floats(value), sort_keys=True, default=str)


def _numbers_as_floats(value):
    if isinstance(value, dict):
        return {k: _numbers_as_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_numbers_as_floats(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53:
        return float(value)
    return value


def scenario_digest(data: dict) -> str:
    """SHA-256 of a scenario's content (its parsed dict): the same for the same fields and
    values whatever the file's name, path, comments or layout."""
    return hashlib.sha256(_canonical(data).encode()).hexdigest()


def point_ident(spec: SweepSpec, point: dict, digest: str) -> dict:
    """Everything a point's result depends on: the scenario's content (``digest``), the
    command, the rounds, the point's parameter values, policy and seed."""
    return {"format": FORMAT, "scenario_sha256": digest, "command": spec.command,
            "rounds": spec.rounds, **point}


def point_key(spec: SweepSpec, point: dict, digest: str) -> str:
    """A stable name for a point: the same inputs give the same key (resumption); any
    change to them, the scenario's content included, gives another."""
    return _key_of(_canonical(point_ident(spec, point, digest)))


def _key_of(ident_text: str) -> str:
    return hashlib.sha256(ident_text.encode()).hexdigest()[:24]


def _scalar(value):
    """A plain scalar for a table cell, or ``None`` for anything else."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | float | str):
        return value
    return None


def solve_metrics(result) -> dict:
    """The tidy-row columns of any kind's solve result, read generically from the result:
    ``objective``, ``solve_status``, ``solver``, ``solve_time_s``, ``iterations``; every
    scalar diagnostic (number, flag or text, e.g. a planner's ``verdict``), the scalar
    entries of a diagnostic that is a table of them as ``name.entry`` (``gates.G4``);
    and the mean of each real-valued per-item decision as ``mean_<name>``. Vectors,
    integer decisions (indices, assignments) and nested values are left out."""
    row = {"objective": result.objective, "solve_status": result.status,
           "solver": result.solver, "solve_time_s": result.solve_time_s,
           "iterations": result.iterations}
    for name, value in result.diagnostics.items():
        column = f"diag.{name}" if name in _RESERVED else name
        if _scalar(value) is not None:
            row[column] = _scalar(value)
        elif isinstance(value, dict):
            row.update({f"{column}.{k}": _scalar(v) for k, v in value.items()
                        if _scalar(v) is not None})
    for name, values in result.decisions.items():
        values = np.asarray(values)
        if values.ndim == 1 and values.size and values.dtype.kind == "f":
            row[f"mean_{name}"] = float(np.mean(values))
    return row


def run_point(spec: SweepSpec, point: dict, scenario: dict) -> dict:
    """Run one point of a resolved spec on the scenario's content (``scenario``, read once
    for the whole sweep); never raises: a failure comes back as a row with its error."""
    from jointopt import scenarios
    from jointopt.surrogate import simulate

    row = _identity_row(point)
    start = time.perf_counter()
    try:
        data = copy.deepcopy(scenario)
        for path, value in point["params"].items():
            set_path(data, path, value)
        problem = scenarios.from_dict(data)
        if spec.command == "solve":
            metrics = solve_metrics(problem.solve())
        else:
            res = simulate(problem, point["policy"], rounds=spec.rounds, seed=point["seed"])
            metrics = {k: v for k, v in res.summary.items() if k != "seed"}
        row.update(metrics, status="done", error="")
    except Exception as exc:  # a failing point is recorded, the sweep goes on
        row.update(status="failed", error=_error_text(exc))
    row["wall_time_s"] = time.perf_counter() - start
    return row


def _identity_row(point: dict) -> dict:
    row = {f"param.{k}": v for k, v in point["params"].items()}
    row.update({k: point[k] for k in ("policy", "seed") if k in point})
    return row


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _failed_row(point: dict, error: str) -> dict:
    return {**_identity_row(point), "status": "failed", "error": error, "wall_time_s": 0.0}


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a uniquely named temporary file and a rename:
    readers see the old file or the new one, never a part, and concurrent writers never
    share a temporary file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _dumps(value) -> str:
    return json.dumps(value, default=float)


def _same(a, b) -> bool:
    return a == b or _canonical(a) == _canonical(b)   # the second: 3 and 3.0, NaN


def _check_point(data, key: str, ident: dict) -> tuple[dict | None, str]:
    """``(row, "")`` for a valid stored point of ``key`` (whose inputs are ``ident``),
    else ``(None, why not)``."""
    if not isinstance(data, dict):
        return None, "not a JSON object"
    if data.get("format") != FORMAT:
        return None, f"format {data.get('format')!r}, expected {FORMAT}"
    if data.get("key") != key or not _same(data.get("ident"), ident):
        return None, "its key or inputs are not this point's"
    row = data.get("row")
    if not isinstance(row, dict):
        return None, "no row"
    if row.get("status") not in ("done", "failed"):
        return None, f"status {row.get('status')!r}"
    expected = _identity_row(ident)
    if not all(_same(row.get(k), v) for k, v in expected.items()):
        return None, "its row is not this point's"
    if not isinstance(row.get("error"), str) or not isinstance(row.get("wall_time_s"),
                                                                int | float):
        return None, "its row lacks error or wall_time_s"
    if row["status"] == "failed" and not row["error"]:
        return None, "a failed row without its error"
    if row["status"] == "done" and not set(row) - set(expected) - {"status", "error",
                                                                   "wall_time_s"}:
        return None, "a done row without results"
    return row, ""


def _read_point(path: Path, key: str, ident: dict):
    """``(row or None, why not, stamp)``; ``stamp`` tells a rewritten file from this one."""
    try:
        st = path.stat()
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, "", None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"unreadable ({type(exc).__name__})", _stamp_of(path)
    row, why = _check_point(data, key, ident)
    return row, why, (st.st_ino, st.st_mtime_ns, st.st_size)


def _stamp_of(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


#: File descriptors of the claims this process holds. A forked child (a pool worker)
#: closes its copies at once: a lock belongs to the open file, which a child's copy would
#: keep alive after this process died (an orphaned worker blocking every later run).
_HELD: set[int] = set()


def _drop_inherited_claims() -> None:
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited_claims)


class _Claim:
    """An exclusive OS lock on ``points/<key>.claim`` while this process runs the point;
    the file names the holder (``pid@host``). The kernel drops the lock when the process
    dies, so no claim outlives its run."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self.fd = path, fd
        if fd is not None:
            _HELD.add(fd)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode())

    @staticmethod
    def holder(path: Path) -> str:
        """Who holds the claim at ``path`` (``pid@host``), as far as its file says."""
        try:
            return path.read_text().strip() or "?"
        except (OSError, UnicodeDecodeError):
            return "?"

    @classmethod
    def take(cls, path: Path) -> _Claim | None:
        """The claim, or ``None`` while another process (or copy) holds it."""
        if fcntl is None:
            return cls(path, None)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            try:  # the previous holder may have removed the file after we opened it
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    return cls(path, fd)
            except FileNotFoundError:
                pass
            os.close(fd)

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        _HELD.discard(self.fd)
        os.close(self.fd)
        self.fd = None


@contextlib.contextmanager
def _directory_lock(out: Path):
    """Hold ``RESULTS/.lock`` (blocking) while the manifest is read and written."""
    if fcntl is None:
        yield
        return
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _scenario_ref(scenario: str) -> str:
    from jointopt import scenarios

    if scenario in scenarios.builtin_names():
        return scenario
    return str(Path(scenario).resolve())


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class SweepReport:
    """What one run of a sweep did: points in all, run here (done or failed), skipped."""

    total: int
    done: int
    failed: int
    skipped: int
    interrupted: bool = False
    #: points a concurrent copy of the sweep ran while this one waited
    by_other: int = 0
    #: stored points of another version of the scenario (or of jointopt), ignored
    stale: int = 0
    #: stored files that were not valid points of this sweep, run again
    invalid: int = 0

    def line(self) -> str:
        extra = [f"{self.by_other} done by a concurrent run"] if self.by_other else []
        if self.invalid:
            extra.append(f"{self.invalid} invalid stored points run again")
        if self.stale:
            extra.append(f"{self.stale} stored points of an earlier version of the scenario "
                         "ignored")
        tail = "".join(f", {e}" for e in extra)
        if self.interrupted:
            tail += " (interrupted: run the same command again to resume)"
        return (f"{self.total} points: {self.done} done, {self.failed} failed, "
                f"{self.skipped} skipped (already done){tail}")


@dataclass
class Sweep:
    """A sweep bound to its results directory (from :func:`open_sweep`): the spec resolved
    against the scenario, the scenario's content, and every point with its key."""

    spec: SweepSpec
    out: Path
    digest: str
    scenario: dict | None = None
    points: list[dict] = field(init=False)
    keys: list[str] = field(init=False)

    def __post_init__(self):
        self.points = self.spec.points()
        self.keys = [_key_of(_canonical(self._ident(p))) for p in self.points]

    @property
    def store(self) -> Path:
        return self.out / "points"

    def _ident(self, point: dict) -> dict:
        return point_ident(self.spec, point, self.digest)

    def run(self, *, workers: int = 1, progress: bool = False, executor=None,
            stop_after: int | None = None, max_in_flight: int | None = None,
            runner=run_point) -> SweepReport:
        """Run every point not yet done, writing each as it completes.

        ``workers`` processes (1: in this process); ``executor`` may be any
        ``concurrent.futures``-style executor (e.g. a Dask ``Client.get_executor()``), with
        at most ``max_in_flight`` points submitted at once (default twice ``workers``).
        ``stop_after`` stops after that many new points (as an interruption would).
        ``runner(spec, point, scenario) -> row`` runs one point (default :func:`run_point`;
        it must be picklable by reference for a pool: tests pass one that kills its worker).
        """
        if self.scenario is None:
            raise JointoptError("this sweep was read back from its directory; open it with "
                                "open_sweep to run it")
        self.store.mkdir(parents=True, exist_ok=True)
        todo, report, stamps = self._scan()
        if stop_after is not None:
            todo = todo[:stop_after]
        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="point", file=sys.stderr)
        run = _Run(self, report, bar, stamps, deque(todo))
        try:
            if executor is None and workers <= 1:
                run.inline(runner)
            else:
                limit = max_in_flight or 2 * max(workers, 1)
                run.pooled(runner, executor, workers, limit)
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            run.release_all()
            if bar is not None:
                bar.close()
        return report

    def _scan(self):
        """Points to run, the report's starting counts and each stored file's stamp."""
        names = {e.name for e in os.scandir(self.store)} if self.store.is_dir() else set()
        wanted = {f"{k}.json" for k in self.keys}
        report = SweepReport(total=len(self.points), done=0, failed=0, skipped=0,
                             stale=sum(1 for n in names
                                       if n.endswith(".json") and n not in wanted))
        todo, stamps, bad = [], {}, []
        for key, point in zip(self.keys, self.points, strict=True):
            row, why, stamp = None, "", None
            if f"{key}.json" in names:
                row, why, stamp = _read_point(self.store / f"{key}.json", key,
                                              self._ident(point))
            if row is not None and row["status"] == "done":
                report.skipped += 1
                continue
            if why:
                bad.append(f"{key}.json ({why})")
            stamps[key] = stamp
            todo.append((key, point))
        if bad:
            report.invalid = len(bad)
            shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
            warnings.warn(f"{len(bad)} stored point file(s) in {self.store} are not valid "
                          f"points of this sweep and run again: {shown}", stacklevel=3)
        return todo, report, stamps

    def table(self) -> pd.DataFrame:
        """The tidy table: one row per point of this sweep that has a valid stored result
        (done or failed), in the points' order; params as ``param.*`` columns."""
        rows = []
        for key, point in zip(self.keys, self.points, strict=True):
            row, _, _ = _read_point(self.store / f"{key}.json", key, self._ident(point))
            if row is not None:
                rows.append(row)
        table = pd.DataFrame(rows)
        if table.empty:
            return table
        first = [c for c in _identity_row(self.points[0]) if c in table.columns] + ["status"]
        return table[first + [c for c in table.columns if c not in first]]


class _Run:
    """The bookkeeping of one :meth:`Sweep.run`: claims, counters, the points left."""

    def __init__(self, sweep: Sweep, report: SweepReport, bar, stamps: dict, queue: deque):
        self.sweep, self.report, self.bar, self.stamps = sweep, report, bar, stamps
        self.queue = queue           # points not yet tried to claim
        self.deferred = deque()      # points a concurrent copy holds
        self.claims: dict[str, _Claim] = {}
        self.told = False

    def next_point(self):
        """``(key, point)`` claimed by this run, or ``None`` when none can be claimed now.
        A point another copy finished in the meantime is counted and skipped."""
        for source in (self.queue, self.deferred):
            for _ in range(len(source)):
                key, point = source.popleft()
                claim = _Claim.take(self.sweep.store / f"{key}.claim")
                if claim is None:
                    self.deferred.append((key, point))
                    continue
                path = self.sweep.store / f"{key}.json"
                if _stamp_of(path) != self.stamps[key]:
                    row, _, _ = _read_point(path, key, self.sweep._ident(point))
                    if row is not None:  # a concurrent copy ran it since this run looked
                        claim.release()
                        self.report.by_other += 1
                        self._tick()
                        continue
                self.claims[key] = claim
                return key, point
        return None

    def waiting(self) -> bool:
        return bool(self.queue or self.deferred)

    def wait_for_others(self) -> None:
        """Nothing to run here but points another run holds: say so once, look again soon."""
        if not self.told:
            self.told = True
            holders = sorted({_Claim.holder(self.sweep.store / f"{k}.claim")
                              for k, _ in self.deferred})
            warnings.warn(f"waiting for {len(self.deferred)} point(s) that another run of this "
                          f"sweep is running (pid@host {', '.join(holders[:3])}); they run "
                          "here if it stops", stacklevel=4)
        time.sleep(POLL_S)

    def record(self, key: str, point: dict, row: dict) -> None:
        ident = self.sweep._ident(point)
        _write_atomic(self.sweep.store / f"{key}.json",
                      _dumps({"format": FORMAT, "key": key, "ident": ident, "row": row}))
        self.claims.pop(key).release()
        if row["status"] == "done":
            self.report.done += 1
        else:
            self.report.failed += 1
        self._tick()

    def _tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(failed=self.report.failed)

    def release_all(self) -> None:
        for claim in self.claims.values():
            claim.release()
        self.claims.clear()

    def inline(self, runner) -> None:
        spec, scenario = self.sweep.spec, self.sweep.scenario
        while self.waiting():
            item = self.next_point()
            if item is None:
                self.wait_for_others()
                continue
            key, point = item
            self.record(key, point, runner(spec, point, scenario))

    def pooled(self, runner, executor, workers: int, limit: int) -> None:
        """Keep up to ``limit`` points in flight. A broken pool of our own is replaced; the
        points it held are suspects, each run again alone (nothing else in flight) so that
        a point whose worker dies is known, and recorded as failed after
        :data:`MAX_WORKER_DEATHS` deaths."""
        spec, scenario = self.sweep.spec, self.sweep.scenario
        own = executor is None
        pool = ProcessPoolExecutor(max_workers=workers) if own else executor
        pending: dict = {}
        suspects: deque = deque()
        deaths: Counter = Counter()
        alone = False        # a suspect is in flight, alone
        try:
            while True:
                broken = False
                while len(pending) < limit and not alone:
                    if suspects:
                        if pending:
                            break
                        item, alone = suspects.popleft(), True
                    elif not self.waiting():
                        break
                    else:
                        item = self.next_point()
                        if item is None:
                            break
                    try:
                        pending[pool.submit(runner, spec, item[1], scenario)] = item
                    except BrokenProcessPool:
                        if not own:
                            raise JointoptError("the executor given to the sweep is broken (a "
                                                "worker died): run again to resume, or let "
                                                "the sweep own its pool (workers=N)") from None
                        suspects.appendleft(item)
                        broken = True
                        break
                if not pending and not broken:
                    if not (self.waiting() or suspects):
                        return
                    self.wait_for_others()   # only points a concurrent copy holds are left
                    continue
                if not broken:
                    finished, _ = wait(pending, timeout=POLL_S if self.deferred else None,
                                       return_when=FIRST_COMPLETED)
                    for fut in finished:
                        exc = fut.exception()
                        if isinstance(exc, BrokenProcessPool) and own:
                            broken = True
                            continue
                        key, point = pending.pop(fut)
                        self.record(key, point, fut.result() if exc is None
                                    else _failed_row(point, _error_text(exc)))
                        alone = False
                if broken:
                    self._lost(pending, suspects, deaths)
                    alone = False
                    pool.shutdown(wait=True, cancel_futures=True)
                    pool = ProcessPoolExecutor(max_workers=workers)
        finally:
            if own:
                pool.shutdown(wait=False, cancel_futures=True)

    def _lost(self, pending: dict, suspects: deque, deaths: Counter) -> None:
        """The points in flight when a pool broke: each finished one recorded, each other
        one a suspect, or failed once its worker died :data:`MAX_WORKER_DEATHS` times."""
        for fut, (key, point) in pending.items():
            if fut.done() and fut.exception() is None:
                self.record(key, point, fut.result())
                continue
            deaths[key] += 1
            if deaths[key] >= MAX_WORKER_DEATHS:
                self.record(key, point, _failed_row(
                    point, f"WorkerDied: the worker process running this point died "
                           f"{deaths[key]} times (killed by a signal or out of memory)"))
            else:
                suspects.append((key, point))
        pending.clear()


def _read_manifest(out: Path) -> dict | None:
    path = out / "sweep.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValidationError("--out", f"{str(out)!r}: cannot read its sweep.json "
                                       f"({type(exc).__name__}); use another directory, or "
                                       "delete it to start over") from None
    return data if isinstance(data, dict) else {}


def _manifest(spec: SweepSpec, digest: str) -> dict:
    return json.loads(json.dumps({"format": FORMAT, "spec": asdict(spec),
                                  "scenario_ref": _scenario_ref(spec.scenario),
                                  "scenario_sha256": digest}))


def _differences(old: dict, new: dict) -> list[str]:
    out = []
    if old.get("scenario_ref") != new["scenario_ref"]:
        out.append(f"scenario {_short(old.get('scenario_ref'))} there, "
                   f"{_short(new['scenario_ref'])} here")
    old_spec = old.get("spec") if isinstance(old.get("spec"), dict) else {}
    for name, value in new["spec"].items():
        if name != "scenario" and _canonical(old_spec.get(name)) != _canonical(value):
            out.append(f"{name} {_short(old_spec.get(name))} there, {_short(value)} here")
    return out


def open_sweep(spec: SweepSpec, out: str | Path) -> Sweep:
    """Bind ``spec`` to the results directory ``out``: read and validate the scenario once
    (a bad one fails here), resolve the spec's defaults for its kind, and take the
    directory: a new one, or one that already belongs to this spec (a resume). A directory
    of another spec is refused (``ValidationError`` naming what differs); one whose
    scenario has been edited since is this spec's, and every point runs again."""
    from jointopt import scenarios

    out = Path(out)
    data = scenarios.read_scenario(spec.scenario)
    spec = spec.resolve(scenarios.from_dict(data))
    digest = scenario_digest(data)
    manifest = _manifest(spec, digest)
    out.mkdir(parents=True, exist_ok=True)
    with _directory_lock(out):
        old = _read_manifest(out)
        if old is not None:
            if old.get("format") != FORMAT:
                raise ValidationError("--out", f"{str(out)!r} holds a sweep written by another "
                                               "version of jointopt; use another directory, "
                                               "or delete it to start over")
            diff = _differences(old, manifest)
            if diff:
                raise ValidationError("--out", f"{str(out)!r} holds another sweep ("
                                      f"{'; '.join(diff)}): a results directory holds one "
                                      "sweep; use another directory, or delete it to start "
                                      "over")
        if old != manifest:
            _write_atomic(out / "sweep.json", json.dumps(manifest, indent=1))
    return Sweep(spec, out, digest, data)


def run_sweep(spec: SweepSpec, out: str | Path, **options) -> SweepReport:
    """``open_sweep(spec, out).run(**options)``: see :meth:`Sweep.run`."""
    return open_sweep(spec, out).run(**options)


def collect(out: str | Path) -> pd.DataFrame:
    """The tidy table of the sweep a results directory belongs to (its ``sweep.json``):
    one row per point with a valid stored result, for the scenario content the sweep last
    ran on; points of an earlier version of the scenario are left out."""
    out = Path(out)
    manifest = _read_manifest(out)
    if manifest is None or manifest.get("format") != FORMAT:
        raise ValidationError("RESULTS", f"{str(out)!r} holds no sweep of this version of "
                                         "jointopt (no valid sweep.json)")
    return Sweep(SweepSpec.from_dict(manifest["spec"]), out, manifest["scenario_sha256"]).table()


def write_table(table: pd.DataFrame, out: str | Path, fmt: str = "csv") -> Path:
    """``results.csv`` (or ``results.parquet``, which needs pyarrow) under ``out``, written
    through a unique temporary file and a rename (concurrent copies never clash)."""
    if fmt not in ("csv", "parquet"):
        raise ValidationError("--format", f"must be csv or parquet, got {fmt!r}")
    path = Path(out) / f"results.{fmt}"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if fmt == "parquet":
            try:
                table.to_parquet(tmp, index=False)
            except ImportError as exc:
                raise ValidationError("--format",
                                      f"parquet needs pyarrow installed ({exc})") from None
        else:
            table.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return path


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["clients.budget=2,3,4"]`` -> ``{"clients.budget": [2.0, 3.0, 4.0]}`` (numbers
    where they parse, strings otherwise)."""
    grid = {}
    for item in items:
        path, sep, values = item.partition("=")
        if not sep or not path or not values:
            raise ValidationError("--grid", f"expects PATH=V1,V2,..., got {item!r}")
        grid[path] = [_value(v) for v in values.split(",")]
    return grid


def parse_random(items: list[str]) -> dict[str, tuple[float, float]]:
    """``["controller.V=1:100"]`` -> ``{"controller.V": (1.0, 100.0)}``."""
    out = {}
    for item in items:
        path, sep, rng = item.partition("=")
        lo, colon, hi = rng.partition(":")
        try:
            out[path] = (float(lo), float(hi))
        except ValueError:
            raise ValidationError("--random", f"expects PATH=LO:HI, got {item!r}") from None
        if not sep or not colon:
            raise ValidationError("--random", f"expects PATH=LO:HI, got {item!r}")
    return out


def _value(text: str):
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text
