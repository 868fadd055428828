"""Batch parameter sweeps over any scenario, on a process pool; nothing finished is lost.

A sweep is a scenario plus the values to try at dotted paths into it (``clients.budget``,
``controller.V``): a grid (every combination), random draws (``samples`` points drawn
uniformly in ``[lo, hi]`` per path, seeded), policies and seeds. Each point is one
``solve`` or ``simulate`` run. Finished points are written to ``RESULTS/points/`` one file
each, atomically, as they complete: a re-run skips them, a crash or Ctrl-C loses none of
them, and a point that fails records its error while the sweep goes on (failed points
are tried again on the next run). :func:`collect` gathers the points into one tidy table.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import time
import tomllib
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from jointopt.errors import ValidationError

COMMANDS = ("solve", "simulate")


@dataclass(frozen=True)
class SweepSpec:
    """What to run. ``scenario`` is a built-in name or a scenario file path."""

    scenario: str = "default"
    grid: dict[str, list] = field(default_factory=dict)
    random: dict[str, tuple[float, float]] = field(default_factory=dict)
    samples: int = 0
    sample_seed: int = 0
    command: str = "simulate"
    policies: tuple[str, ...] = ("online",)
    seeds: tuple[int, ...] = (0,)
    rounds: int | None = None

    def __post_init__(self):
        if self.command not in COMMANDS:
            raise ValidationError("sweep.command",
                                  f"must be one of {COMMANDS}, got {self.command!r}")
        if self.random and self.samples < 1:
            raise ValidationError("sweep.samples", "must be >= 1 when random ranges are given")
        for path, (lo, hi) in self.random.items():
            if not hi >= lo:
                raise ValidationError(f"sweep.random.{path}", f"needs LO <= HI, got {lo}:{hi}")
        for path, values in self.grid.items():
            if not values:
                raise ValidationError(f"sweep.grid.{path}", "needs at least one value")
        if not self.seeds:
            raise ValidationError("sweep.seeds", "needs at least one seed")

    @classmethod
    def from_toml(cls, path: str | Path) -> SweepSpec:
        """A ``[sweep]`` table (or the whole file) with the fields of this class."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValidationError("sweep", f"cannot read {path}: {exc}") from None
        data = data.get("sweep", data)
        known = set(cls.__dataclass_fields__)
        for key in data:
            if key not in known:
                raise ValidationError(f"sweep.{key}", "is not a known field")
        data = dict(data)
        data["random"] = {k: tuple(v) for k, v in data.get("random", {}).items()}
        for key in ("policies", "seeds"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def points(self) -> list[dict]:
        """Every point: ``{"params": {path: value}, "policy", "seed"}``, in a fixed order."""
        combos = [dict(zip(self.grid, values, strict=True))
                  for values in itertools.product(*self.grid.values())] or [{}]
        if self.random:
            rng = np.random.default_rng(self.sample_seed)
            draws = [{p: float(rng.uniform(lo, hi)) for p, (lo, hi) in self.random.items()}
                     for _ in range(self.samples)]
            combos = [{**c, **r} for c in combos for r in draws]
        policies = self.policies if self.command == "simulate" else ("-",)
        return [{"params": c, "policy": pol, "seed": s}
                for c in combos for pol in policies for s in self.seeds]


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


def point_key(spec: SweepSpec, point: dict) -> str:
    """A stable name for a point: same sweep and point, same key (resumption)."""
    ident = {"scenario": spec.scenario, "command": spec.command, "rounds": spec.rounds,
             **point}
    blob = json.dumps(ident, sort_keys=True, default=float)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_point(spec: SweepSpec, point: dict) -> dict:
    """Run one point; never raises: a failure comes back as a row with its error."""
    from jointopt import scenarios
    from jointopt.api import solve
    from jointopt.surrogate import simulate

    row = {**{f"param.{k}": v for k, v in point["params"].items()},
           "policy": point["policy"], "seed": point["seed"]}
    start = time.perf_counter()
    try:
        data = scenarios.read_scenario(spec.scenario)
        for path, value in point["params"].items():
            set_path(data, path, value)
        problem = scenarios.from_dict(data)
        if spec.command == "solve":
            res = solve(problem)
            metrics = {"objective": res.objective, "solve_status": res.status,
                       "solve_time_s": res.solve_time_s, "iterations": res.iterations}
            metrics.update({k: float(v) for k, v in res.diagnostics.items()
                            if np.ndim(v) == 0 and isinstance(v, int | float | np.floating)})
            for name, values in res.decisions.items():
                metrics[f"mean_{name}"] = float(np.mean(values))
        else:
            res = simulate(problem, point["policy"], rounds=spec.rounds, seed=point["seed"])
            metrics = {k: v for k, v in res.summary.items() if k not in ("seed",)}
        row.update(metrics, status="done", error="")
    except Exception as exc:  # a failing point is recorded, the sweep goes on
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    row["wall_time_s"] = time.perf_counter() - start
    return row


def _write_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, default=float))
    os.replace(tmp, path)


def _done_keys(store: Path) -> set[str]:
    done = set()
    for f in store.glob("*.json"):
        try:
            if json.loads(f.read_text()).get("row", {}).get("status") == "done":
                done.add(f.stem)
        except (OSError, json.JSONDecodeError):
            continue  # a half-written file from a crash: the point runs again
    return done


@dataclass
class SweepReport:
    total: int
    done: int
    failed: int
    skipped: int
    interrupted: bool = False

    def line(self) -> str:
        tail = " (interrupted: run the same command again to resume)" if self.interrupted else ""
        return (f"{self.total} points: {self.done} done, {self.failed} failed, "
                f"{self.skipped} skipped (already done){tail}")


def run_sweep(spec: SweepSpec, out: str | Path, *, workers: int = 1, progress: bool = False,
              executor=None, stop_after: int | None = None) -> SweepReport:
    """Run every point not yet done, writing each as it completes.

    ``workers`` processes (1: in this process); ``executor`` may be any
    ``concurrent.futures``-style executor (e.g. a Dask ``Client.get_executor()``).
    ``stop_after`` stops after that many new points (as an interruption would).
    """
    out = Path(out)
    store = out / "points"
    store.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "sweep.json", {"spec": asdict(spec)})
    points = spec.points()
    keys = [point_key(spec, p) for p in points]
    done = _done_keys(store)
    todo = [(k, p) for k, p in zip(keys, points, strict=True) if k not in done]
    report = SweepReport(total=len(points), done=0, failed=0, skipped=len(points) - len(todo))
    if stop_after is not None:
        todo = todo[:stop_after]

    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="point", file=sys.stderr)

    def record(key, point, row):
        _write_atomic(store / f"{key}.json", {"point": point, "row": row})
        if row["status"] == "done":
            report.done += 1
        else:
            report.failed += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(failed=report.failed)

    try:
        if executor is None and workers <= 1:
            for key, point in todo:
                record(key, point, run_point(spec, point))
        else:
            own = executor is None
            pool = ProcessPoolExecutor(max_workers=workers) if own else executor
            try:
                pending = {pool.submit(run_point, spec, p): (k, p) for k, p in todo}
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        key, point = pending.pop(fut)
                        record(key, point, fut.result())
            finally:
                if own:
                    pool.shutdown(wait=False, cancel_futures=True)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        if bar is not None:
            bar.close()
    return report


def collect(out: str | Path) -> pd.DataFrame:
    """The tidy table of a sweep: one row per (point, policy, seed), params as columns."""
    rows = []
    for f in sorted(Path(out, "points").glob("*.json")):
        try:
            rows.append(json.loads(f.read_text())["row"])
        except (OSError, json.JSONDecodeError, KeyError):
            continue
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    params = sorted(c for c in table.columns if c.startswith("param."))
    first = params + ["policy", "seed", "status"]
    table = table[first + [c for c in table.columns if c not in first]]
    return table.sort_values(params + ["policy", "seed"], kind="stable").reset_index(drop=True)


def write_table(table: pd.DataFrame, out: str | Path, fmt: str = "csv") -> Path:
    """``results.csv`` (or ``results.parquet``, which needs pyarrow) under ``out``."""
    out = Path(out)
    if fmt == "parquet":
        path = out / "results.parquet"
        try:
            table.to_parquet(path, index=False)
        except ImportError as exc:
            raise ValidationError("--format", f"parquet needs pyarrow installed ({exc})") from None
        return path
    path = out / "results.csv"
    table.to_csv(path, index=False)
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
