"""Scenario files: TOML (or YAML) in, validated immutable problem out, and back.

A scenario is a file with a top-level ``kind`` naming the problem type; the rest is that
problem's fields. Built-in scenarios ship in ``jointopt/data/scenarios`` and are addressed
by name (``default``); anything else is a path.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import tomli_w
import yaml

from jointopt.errors import ValidationError
from jointopt.solvers import PROBLEM_KINDS, ProblemBase

SUFFIXES = (".toml", ".yaml", ".yml")


def _builtin_dir():
    return resources.files("jointopt.data") / "scenarios"


def builtin_names() -> list[str]:
    """Names of the scenarios shipped with jointopt, sorted."""
    return sorted(p.name.rsplit(".", 1)[0] for p in _builtin_dir().iterdir()
                  if p.name.endswith(SUFFIXES))


def _read(text: str, suffix: str, where: str) -> dict:
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        data = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ValidationError(where, f"is not valid {suffix.lstrip('.').upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationError(where, "must hold a table of scenario fields")
    return data


def read_scenario(source: str | Path) -> dict:
    """The raw dict of a built-in scenario name or a scenario file path."""
    source = str(source)
    if source in builtin_names():
        for suffix in SUFFIXES:
            entry = _builtin_dir() / f"{source}{suffix}"
            if entry.is_file():
                return _read(entry.read_text(), suffix, f"scenario {source!r}")
    path = Path(source)
    if not path.is_file():
        raise ValidationError(
            "scenario", f"{source!r} is neither a built-in scenario ({', '.join(builtin_names())}) "
                        "nor an existing file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValidationError("scenario", f"{source!r} must end in .toml, .yaml or .yml")
    return _read(path.read_text(), ".yaml" if suffix == ".yml" else suffix, str(path))


def from_dict(data: dict) -> ProblemBase:
    """Validate a scenario dict into the problem type its ``kind`` names."""
    kind = data.get("kind")
    if kind not in PROBLEM_KINDS:
        raise ValidationError("kind", f"must be one of {sorted(PROBLEM_KINDS)}, got {kind!r}")
    return PROBLEM_KINDS[kind].from_dict(data)


def load(source: str | Path | ProblemBase) -> ProblemBase:
    """A problem from a built-in name, a file path, or a problem (returned as it is)."""
    if isinstance(source, ProblemBase):
        return source
    return from_dict(read_scenario(source))


def dumps(problem: ProblemBase, fmt: str = "toml") -> str:
    """The problem as scenario text (``toml`` or ``yaml``); :func:`from_dict` reads it back."""
    data = problem.canonical_dict()
    if fmt == "toml":
        return tomli_w.dumps(data)
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False)
    raise ValueError(f"fmt must be 'toml' or 'yaml', got {fmt!r}")


def dump(problem: ProblemBase, path: str | Path) -> Path:
    """Write the problem to ``path`` (format from the suffix)."""
    path = Path(path)
    fmt = "yaml" if path.suffix.lower() in (".yaml", ".yml") else "toml"
    path.write_text(dumps(problem, fmt))
    return path


def describe() -> list[tuple[str, str, str]]:
    """``(name, kind, one-line description)`` of each built-in scenario."""
    out = []
    for name in builtin_names():
        data = read_scenario(name)
        out.append((name, str(data.get("kind", "?")),
                    str(data.get("description", "")).strip().splitlines()[0:1][0]
                    if data.get("description") else ""))
    return out


__all__ = ["builtin_names", "describe", "dump", "dumps", "from_dict", "load", "read_scenario"]
