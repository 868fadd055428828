"""Scenario files: TOML (or YAML) in, validated immutable problem out, and back.

A scenario is a file with a top-level ``kind`` naming the problem type; the rest is that
problem's fields. Built-in scenarios ship in ``jointopt/data/scenarios`` and are addressed
by name (``default``); anything else is a path.

Every file is read the same guarded way (:func:`parse_scenario_bytes`): it must be UTF-8
text within the size limit ``scenario_bytes``; the parsed value may nest at most
``scenario_depth`` levels and hold at most ``scenario_values`` values, YAML aliases counted
at each use (so an alias bomb is refused before anything expands it). A file that breaks
any of these is reported as one ``ValidationError`` naming the file.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import tomli_w
import yaml

from jointopt.errors import ValidationError
from jointopt.models.checks import brief
from jointopt.solvers import PROBLEM_KINDS, ProblemBase
from jointopt.solvers.base import LIMITS, check_size

SUFFIXES = (".toml", ".yaml", ".yml")


def _builtin_dir():
    return resources.files("jointopt.data") / "scenarios"


def builtin_names() -> list[str]:
    """Names of the scenarios shipped with jointopt, sorted."""
    return sorted(p.name.rsplit(".", 1)[0] for p in _builtin_dir().iterdir()
                  if p.name.endswith(SUFFIXES))


def parse_scenario_bytes(data: bytes, suffix: str, where: str) -> dict:
    """The table a TOML (``suffix`` ``.toml``) or YAML scenario text holds, or one
    ``ValidationError`` naming ``where`` (the file): not UTF-8, not valid TOML/YAML, nested
    too deeply, too many values (YAML aliases counted at each use), not a table."""
    check_size(f"{where}: size in bytes", len(data), "scenario_bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(where, f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                                     f"{exc.start}); a scenario is a TOML or YAML text file"
                              ) from None
    fmt = "TOML" if suffix == ".toml" else "YAML"
    try:
        parsed = tomllib.loads(text) if suffix == ".toml" else yaml.load(text, _YamlLoader)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        message = " ".join(str(exc).split())
        raise ValidationError(where, f"is not valid {fmt}: {message}") from None
    except RecursionError:
        raise ValidationError(where, f"nests too deeply to be read (the limit is "
                                     f"{LIMITS['scenario_depth'].value()} levels)") from None
    if not isinstance(parsed, dict):
        raise ValidationError(where, "must hold a table of scenario fields")
    values, depth = _extent(parsed, where)
    check_size(f"{where}: nesting depth", depth, "scenario_depth")
    check_size(f"{where}: number of values", values, "scenario_values")
    return parsed


# the C parser where PyYAML has one (the pure-Python one recurses per nesting level)
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _extent(data, where: str) -> tuple[int, int]:
    """``(values, depth)`` of parsed scenario data, without recursion: a table or list
    shared by YAML aliases is counted at each use but walked once, so that a billion-value
    alias bomb is measured in microseconds; a YAML value that contains itself is refused."""
    memo: dict[int, tuple[int, int]] = {}
    open_: set[int] = set()
    stack: list[tuple[object, bool]] = [(data, False)]
    while stack:
        node, closing = stack.pop()
        key = id(node)
        children = list(node.values()) if isinstance(node, dict) else node
        if closing:
            values, depth = 1, 0
            for child in children:
                v, d = memo.get(id(child), (1, 0)) if isinstance(child, dict | list) else (1, 0)
                values, depth = values + v, max(depth, d)
            memo[key] = (values, depth + 1)
            open_.discard(key)
            continue
        if key in memo:
            continue
        if key in open_:
            raise ValidationError(where, "holds a value that contains itself (a recursive "
                                         "YAML alias)")
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if isinstance(c, dict | list))
    return memo[id(data)]


def read_scenario(source: str | Path) -> dict:
    """The raw dict of a built-in scenario name or a scenario file path."""
    source = str(source)
    if source in builtin_names():
        for suffix in SUFFIXES:
            entry = _builtin_dir() / f"{source}{suffix}"
            if entry.is_file():
                return parse_scenario_bytes(entry.read_bytes(), suffix, f"scenario {source!r}")
    path = Path(source)
    if not path.is_file():
        raise ValidationError(
            "scenario", f"{source!r} is neither a built-in scenario ({', '.join(builtin_names())}) "
                        "nor an existing file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValidationError("scenario", f"{source!r} must end in .toml, .yaml or .yml")
    check_size(f"{path}: size in bytes", path.stat().st_size, "scenario_bytes")
    return parse_scenario_bytes(path.read_bytes(), ".yaml" if suffix == ".yml" else suffix,
                                str(path))


def from_dict(data: dict) -> ProblemBase:
    """Validate a scenario dict into the problem type its ``kind`` names."""
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in PROBLEM_KINDS:
        raise ValidationError("kind", f"must be one of {sorted(PROBLEM_KINDS)}, "
                                      f"got {brief(kind)}")
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


__all__ = ["builtin_names", "describe", "dump", "dumps", "from_dict", "load",
           "parse_scenario_bytes", "read_scenario"]
