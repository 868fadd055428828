"""What every problem and every result of jointopt shares.

A problem is an immutable, validated pydantic value that loads from a plain dict (the
parsed TOML/YAML scenario) and dumps back to one. Pydantic's own errors are turned into
:class:`~jointopt.models.errors.ValidationError` naming the dotted field path, so every
layer reports bad input the same way.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import numpy as np
import pandas as pd
import pydantic
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


def vector_count(data: dict, where: str) -> int:
    """The number of items of a section of per-item vectors: its ``count`` field, else the
    length of its first list; a positive integer, or ``ValidationError`` at ``where.count``."""
    n = data.get("count")
    if n is None:
        lengths = [len(v) for v in data.values() if isinstance(v, list | tuple | np.ndarray)]
        if not lengths:
            raise ValidationError(f"{where}.count", "is required when no field is a list")
        n = lengths[0]
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValidationError(f"{where}.count", f"must be a positive integer, got {n!r}")
    return int(n)


class Section(pydantic.BaseModel):
    """A frozen sub-section of a problem (``[controller]``, ``[accuracy]``, ...)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid",
                                       arbitrary_types_allowed=True)


def _convert(exc: pydantic.ValidationError) -> JointoptError:
    err = exc.errors(include_url=False)[0]
    original = (err.get("ctx") or {}).get("error")
    if isinstance(original, JointoptError):
        return original
    where = _path(tuple(err["loc"]))
    kind = err["type"]
    if kind == "missing":
        return ValidationError(where, "is required")
    if kind == "extra_forbidden":
        return ValidationError(where, "is not a known field")
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return ValidationError(where, f"is invalid: {msg} (got {err.get('input')!r})")


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
