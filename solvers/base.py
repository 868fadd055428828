"""What every problem and every result of jointopt shares.

A problem is an immutable, validated pydantic value that loads from a plain dict (the
parsed TOML/YAML scenario) and dumps back to one. Pydantic's own errors are turned into
:class:`~jointopt.models.errors.ValidationError` naming the dotted field path, so every
layer reports bad input the same way.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import numpy as np
import pandas as pd
import pydantic
from jointopt.models.checks import as_vector, brief, index_vector
from jointopt.models.errors import JointoptError, ValidationError


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _plain(value: Any) -> Any:
    """numpy values -> plain Python (lists, floats), recursively."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class ProblemBase(pydantic.BaseModel):
    """Frozen, validated, dict-round-trippable problem value."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid",
                                       arbitrary_types_allowed=True)
    kind: ClassVar[str] = ""
    #: Solution methods this kind offers, the default first (``jointopt solve --method``).
    methods: ClassVar[tuple[str, ...]] = ()
    #: The methods that take a ``solver=`` option (``jointopt solve --solver``).
    solver_methods: ClassVar[tuple[str, ...]] = ()
    #: What ``jointopt simulate`` runs for this kind: ``"module:function"``, called as
    #: ``function(problem, args)`` with the parsed command line and returning ``(doc,
    #: text)``: the JSON object for ``--json`` and the text printed otherwise. None: the
    #: kind has no simulator.
    simulator: ClassVar[str | None] = None
    #: Whether ``solve`` takes ``time_limit`` (seconds, every stage included;
    #: ``jointopt solve --time-limit``).
    takes_time_limit: ClassVar[bool] = False

    def solve(self, *, method: str | None = None, **options) -> SolveResult:
        """Solve this problem; each kind implements it (``method`` from :attr:`methods`)."""
        raise NotImplementedError(f"no solver for problem kind {self.kind!r}")

    def check_method(self, method: str | None) -> str:
        """``method`` or the default one; an unknown name raises ``ValidationError``."""
        if method is None:
            return self.methods[0]
        if method not in self.methods:
            raise ValidationError("method", f"{self.kind} problems are solved by "
                                            f"{', '.join(self.methods)}; got {method!r}")
        return method

    def check_solver(self, method: str | None, solver: str | None, *,
                     field: str = "solver") -> None:
        """A ``solver`` given for a method that takes none (:attr:`solver_methods`) raises
        ``ValidationError`` at ``field``: it would be silently ignored."""
        method = self.check_method(method)
        if solver is None or method in self.solver_methods:
            return
        one = len(self.solver_methods) == 1
        takes = (f"only {'method' if one else 'methods'} {', '.join(self.solver_methods)} of "
                 f"{self.kind} problems {'takes' if one else 'take'} one"
                 if self.solver_methods else f"{self.kind} problems take none")
        raise ValidationError(field, f"{solver!r} is not used by method {method!r}: {takes}")

    @classmethod
    def from_dict(cls, data: dict):
        """Validate ``data``; bad input raises ``ValidationError`` naming the field."""
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            error = _convert(exc)
        # raised outside the handler, so that the error carries no pydantic context: Dask
        # (through tblib) pickles an exception's context too, and pydantic's recursed
        raise error

    @pydantic.model_validator(mode="before")
    @classmethod
    def _drop_kind(cls, data):
        if isinstance(data, dict) and "kind" in data:
            data = dict(data)
            if data.pop("kind") != cls.kind:
                raise ValidationError("kind", f"must be {cls.kind!r}")
        return data

    def to_dict(self) -> dict:
        """Plain-Python dict that :meth:`from_dict` turns back into an equal problem."""
        return {"kind": self.kind, **_plain(self.model_dump())}

    def canonical_dict(self) -> dict:
        """:meth:`to_dict` with vectors whose entries are all equal written as one scalar
        (and unset fields dropped): the form scenario files are written in, and the one
        equality compares."""
        return _compact(self.to_dict())

    def replace(self, **changes):
        """A validated copy with top-level fields replaced (sections as dicts or models)."""
        data = self.to_dict()
        data.update({k: _plain(v.model_dump() if isinstance(v, pydantic.BaseModel) else v)
                     for k, v in changes.items()})
        return type(self).from_dict(data)

    def __eq__(self, other):
        return type(self) is type(other) and self.canonical_dict() == other.canonical_dict()

    __hash__ = None


def _compact(value):
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items() if v is not None}
    if isinstance(value, list) and value and all(isinstance(v, float | int) for v in value):
        return value[0] if all(v == value[0] for v in value) else value
    return value


#: A per-item numpy vector field of a problem (validated by the section's own checks).
Vector = Annotated[np.ndarray, pydantic.Field()]


def vector_count(data: dict, where: str, *, limit: str = "clients") -> int:
    """The number of items of a section of per-item vectors: its ``count`` field, else the
    most common length of its lists (so that the one list of another length is the one
    blamed); a positive integer within the size limit ``limit`` (:data:`LIMITS`; a kind
    whose items cost more than the joint allocator's clients registers its own), or
    ``ValidationError`` at ``where.count``."""
    n = data.get("count")
    if n is None:
        lengths = [len(v) for v in data.values() if isinstance(v, list | tuple | np.ndarray)]
        if not lengths:
            raise ValidationError(f"{where}.count", "is required when no field is a list")
        n = Counter(lengths).most_common(1)[0][0]
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValidationError(f"{where}.count", f"must be a positive integer, got {brief(n)}")
    return check_size(f"{where}.count", int(n), limit)


# -- size limits and seeds ---------------------------------------------------------------

@dataclass(frozen=True)
class SizeLimit:
    """An upper bound on a count that sizes memory or run time (clients, rounds, samples...).

    Checked when a problem is validated, before anything is allocated, so that a hostile
    or mistyped size (``count = 1000000000``) is refused at once instead of allocating until
    the memory runs out. The default is sized for the toolkit's benchmarks; the environment
    variable :attr:`env` (``JOINTOPT_MAX_<NAME>``) raises or lowers it."""

    name: str
    default: int
    what: str        # what is counted, plural, e.g. "clients of a joint_training_inference problem"

    @property
    def env(self) -> str:
        return f"JOINTOPT_MAX_{self.name.upper()}"

    def value(self) -> int:
        """The limit in force: :attr:`env` when set (a positive integer), else the default."""
        raw = os.environ.get(self.env, "").strip()
        if not raw:
            return self.default
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise ValidationError(self.env, f"must be a positive integer, got {raw!r}")
        return value


#: Every size limit by name; a problem kind registers its own with :func:`size_limit`.
LIMITS: dict[str, SizeLimit] = {}


def size_limit(name: str, default: int, what: str) -> SizeLimit:
    """Register (or return the registered) size limit ``name``."""
    if name not in LIMITS:
        LIMITS[name] = SizeLimit(name, default, what)
    return LIMITS[name]


for _name, _default, _what in (
        ("clients", 2_000_000, "clients of a joint_training_inference problem (benchmarks "
                               "solve 1,000,000)"),
        ("split_clients", 10_000, "clients of a split_learning problem"),
        ("devices", 100_000, "devices of an hfl or edge_system problem (benchmarks "
                             "solve 10,000)"),
        ("hosts", 10_000, "edge hosts of an hfl or edge_system problem (benchmarks "
                          "solve 100)"),
        ("device_host_pairs", 10_000_000, "devices x hosts of an hfl or edge_system "
                                          "problem (benchmarks solve 1,000,000)"),
        ("nodes", 100_000, "nodes of a cis_early_exit tree (benchmarks train 100)"),
        ("exits", 100, "early exits of a cis_early_exit network"),
        ("rounds", 100_000, "simulated or trained rounds of one run (benchmarks run 1,000)"),
        ("seeds", 1_000, "seeds of one estimate (surrogate seeds averaged per policy, "
                         "serving draws of a real run, real replicates, planner seeds)"),
        ("samples", 1_000_000, "Monte-Carlo samples of one planner estimate (default 2,000)"),
        ("cohort", 100_000, "devices in one planner round (training_plan.K and C)"),
        ("grid", 100_000, "points of a solver's search grid"),
        ("scenario_bytes", 256 * 2**20, "bytes of a scenario file"),
        ("scenario_values", 20_000_000, "values in a scenario file, YAML aliases counted at "
                                        "each use"),
        ("scenario_depth", 32, "levels of nesting in a scenario file")):
    size_limit(_name, _default, _what)


def client_subset(section, names, clients, n: int, overrides: dict
                  ) -> tuple[np.ndarray, dict]:
    """``(idx, clients)``: the clients ``clients`` (indices into ``n``, in that order) of a
    problem's per-client ``section`` as a scenario ``[clients]`` table over the fields
    ``names``, each restricted to ``idx`` or replaced by ``overrides[name]`` (one value per
    kept client). The one place a kind builds the problem of a group of its clients."""
    idx = index_vector("clients", clients, n)
    for key in overrides:
        if key not in names:
            raise ValidationError(f"clients.{key}", "is not a known field")
    table = {"count": int(idx.size), **{
        key: (as_vector(f"clients.{key}", overrides[key], idx.size) if key in overrides
              else np.asarray(getattr(section, key))[idx]).tolist() for key in names}}
    return idx, table


def check_size(field: str, value: int, limit: str) -> int:
    """``value`` if it is within the size limit ``limit``, else ``ValidationError`` naming
    ``field``, the value, the limit and the environment variable that raises it."""
    lim = LIMITS[limit]
    cap = lim.value()
    if value > cap:
        raise ValidationError(field, f"is {value:,}, above the limit of {cap:,} {lim.what}; "
                                     f"to allow it, set the environment variable "
                                     f"{lim.env}={value}")
    return value


def check_count(field: str, value, limit: str) -> int:
    """``value`` as an ``int`` if it is an integer ``>= 1`` (not a bool) within the size
    limit ``limit`` (:func:`check_size`), else ``ValidationError`` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValidationError(field, f"must be an integer >= 1, got {value!r}")
    return check_size(field, int(value), limit)


def Count(limit: str):  # noqa: N802 - a type, used as ``rounds: Count("rounds") = 200``
    """An integer field within the size limit ``limit``; a bad value is reported at the
    field's dotted path."""
    return Annotated[int, pydantic.AfterValidator(lambda v: check_size("", v, limit))]


#: Seeds are non-negative and fit a signed 64-bit integer (they are stored in tables).
SEED_MAX = 2**63 - 1


def check_seed(field: str, value) -> int:
    """A random seed: an integer in ``0..2**63-1`` (not a bool, a float or a string), else
    ``ValidationError`` naming ``field``. The one rule of scenario files and the CLI."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValidationError(field, f"must be an integer seed, got {brief(value)}")
    if not 0 <= value <= SEED_MAX:
        raise ValidationError(field, f"must be in 0..2**63-1, got {value}")
    return int(value)


#: A seed field of a problem (:func:`check_seed`).
Seed = Annotated[int, pydantic.BeforeValidator(lambda v: check_seed("", v))]


class Section(pydantic.BaseModel):
    """A frozen sub-section of a problem (``[controller]``, ``[accuracy]``, ...)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid",
                                       arbitrary_types_allowed=True)


def _convert(exc: pydantic.ValidationError) -> JointoptError:
    err = exc.errors(include_url=False)[0]
    original = (err.get("ctx") or {}).get("error")
    where = _path(tuple(err["loc"]))
    if isinstance(original, ValidationError) and not original.field and where:
        # raised by a field's own check (Count, Seed), which does not know its path
        return ValidationError(where, original.message)
    if isinstance(original, JointoptError):
        return original
    kind = err["type"]
    if kind == "missing":
        return ValidationError(where, "is required")
    if kind == "extra_forbidden":
        return ValidationError(where, "is not a known field")
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return ValidationError(where, f"is invalid: {msg} (got {brief(err.get('input'))})")


@dataclass
class SolveResult:
    """What a solver returns: decisions, objective, status, solver, time, diagnostics."""

    kind: str
    scenario: str
    status: str
    objective: float
    solver: str
    solve_time_s: float
    iterations: int
    decisions: dict[str, np.ndarray]
    diagnostics: dict[str, Any] = field(default_factory=dict)

    OK_STATUSES: ClassVar[tuple[str, ...]] = ("optimal", "converged")

    @property
    def ok(self) -> bool:
        return self.status in self.OK_STATUSES

    def to_dict(self) -> dict:
        """JSON-ready dict (lists for arrays, plain floats)."""
        out = {
            "kind": self.kind, "scenario": self.scenario, "status": self.status,
            "objective": self.objective, "solver": self.solver,
            "solve_time_s": self.solve_time_s, "iterations": self.iterations,
            "decisions": _plain(self.decisions), "diagnostics": _plain(self.diagnostics),
        }
        return finite_or_none(out)

    def decisions_frame(self) -> pd.DataFrame:
        """One row per decision index (client, device, ...), one column per decision."""
        cols = {k: np.asarray(v) for k, v in self.decisions.items() if np.ndim(v) == 1}
        return pd.DataFrame(cols).rename_axis("index").reset_index()


def finite_or_none(value):
    """JSON has no inf or NaN: they become ``None``, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


class Timer:
    """``with Timer() as t: ...; t.seconds``."""

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._start
        return False
