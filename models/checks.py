"""Vectorised input checks that name the culprit (field and client index).

Every public entry point of jointopt validates its inputs with these helpers, so that a
bad value is reported as ``clients[3].arrival_rate must be > 0, got -1.0`` rather than as
a numpy warning or a silent NaN three layers down.
"""

from __future__ import annotations

import reprlib

import numpy as np
from jointopt.models.errors import ValidationError

_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlong = 2, 40, 40, 40
_BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxdict = _BRIEF.maxset = 4


def brief(value) -> str:
    """A short ``repr`` of user input for an error message: a whole section, a long list or
    a list built by YAML aliases is elided (``[1.0, 1.0, 1.0, 1.0, ...]``), never dumped."""
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.size <= 4 else [*value[:4].tolist(), ...]
    return _BRIEF.repr(value)


def _item(field: str, index: int | None) -> str:
    if index is None:
        return field
    # "clients.arrival_rate" -> "clients[3].arrival_rate"
    head, _, tail = field.rpartition(".")
    return f"{head}[{index}].{tail}" if head else f"{field}[{index}]"


def as_vector(field: str, value, n: int | None = None, *, per: str = "client") -> np.ndarray:
    """A read-only float vector; a scalar is broadcast to length ``n`` (one entry per
    ``per``: client, device, host, ...)."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValidationError(
            field, f"must be a number or a list of numbers, got {brief(value)}") from None
    if arr.ndim == 0:
        if n is None:
            raise ValidationError(field, "must be a list when the client count is unknown")
        arr = np.full(n, float(arr))
    elif arr.ndim != 1:
        raise ValidationError(field, f"must be one-dimensional, got shape {arr.shape}")
    elif n is not None and arr.shape[0] != n:
        raise ValidationError(field, f"must have one entry per {per} ({n}), got {arr.shape[0]}")
    arr = arr.copy() if arr.flags.writeable else arr
    if np.isnan(arr).any():
        raise ValidationError(_item(field, int(np.flatnonzero(np.isnan(arr))[0])), "is NaN")
    arr.flags.writeable = False
    return arr


def check_range(field: str, arr, *, gt=None, ge=None, lt=None, le=None,
                finite: bool = True) -> None:
    """Raise ``ValidationError`` naming the first entry outside the given bounds."""
    a = np.atleast_1d(np.asarray(arr, dtype=float))
    scalar = np.ndim(arr) == 0
    tests = []
    if finite:
        tests.append((~np.isfinite(a), "must be finite"))
    if gt is not None:
        tests.append((~(a > gt), f"must be > {gt:g}"))
    if ge is not None:
        tests.append((~(a >= ge), f"must be >= {ge:g}"))
    if lt is not None:
        tests.append((~(a < lt), f"must be < {lt:g}"))
    if le is not None:
        tests.append((~(a <= le), f"must be <= {le:g}"))
    for bad, what in tests:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValidationError(_item(field, None if scalar else i),
                                  f"{what}, got {float(a[i])!r}")


def index_vector(field: str, value, n: int) -> np.ndarray:
    """A non-empty vector of indices into ``n`` items (each in ``0..n-1``), as ints."""
    idx = np.asarray(value, dtype=int).reshape(-1)
    if idx.size == 0:
        raise ValidationError(field, "must list at least one index")
    if idx.min() < 0 or idx.max() >= n:
        raise ValidationError(field, f"indices must lie in 0..{n - 1}")
    return idx


def culprit(field: str, index: int) -> str:
    """``culprit("clients.cap", 3) == "clients[3].cap"``: the name errors use."""
    return _item(field, index)
