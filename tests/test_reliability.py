"""Every bad input gets one line on stderr and exit 2; hostile sizes are refused.

A table-driven fuzz test feeds malformed scenario files of every problem kind to the CLI
(in-process: ``jointopt.cli.main``) and asserts exit status 2, exactly one line on stderr
naming the culprit field or the file, and nothing on stdout. The mutations are chosen so
that each file is malformed by construction (a value of a type no field accepts there, an
unknown key, bytes that are not UTF-8 text, nesting, an alias bomb, a hostile count, a bad
seed), so that an accepted file is a bug, not noise.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import yaml
from jointopt.solvers import PROBLEM_KINDS
from jointopt.solvers.base import LIMITS

from jointopt import scenarios
from jointopt.cli import main
from jointopt.errors import ValidationError


def _one_per_kind() -> dict[str, str]:
    """A built-in scenario of each problem kind (the smallest file of the kind)."""
    found: dict[str, str] = {}
    for name, kind, _ in scenarios.describe():
        if kind in PROBLEM_KINDS:
            best = found.get(kind)
            size = len(json.dumps(scenarios.read_scenario(name), default=str))
            if best is None or size < len(json.dumps(scenarios.read_scenario(best), default=str)):
                found[kind] = name
    return found


KINDS = _one_per_kind()

#: Counts that size memory or time, per kind: a billion of any of them must be refused.
COUNTS = {
    "joint_training_inference": [("clients", "count"), ("simulation", "rounds")],
    "hfl": [("devices",), ("hosts",), ("latency", "cuts")],
    "cis_early_exit": [("tree", "nodes"), ("training", "rounds"), ("n_exits",)],
    "split_learning": [("clients", "count"), ("optimizer", "w_grid"),
                       ("optimizer", "n_threshold_grid")],
    "deployment_plan": [("monte_carlo", "n_mc"), ("monte_carlo", "n_outer"),
                        ("monte_carlo", "n_mc_grid"), ("monte_carlo", "n_seeds"),
                        ("training_plan", "K"), ("training_plan", "C")],
    "edge_system": [("devices", "count"), ("hosts", "count"), ("training", "rounds"),
                    ("simulation", "rounds"), ("model", "threshold_grid"), ("loop", "w_grid")],
}


def _leaves(value, path=()):
    """``(path, value)`` of every leaf: scalars and lists of scalars (lists of tables are
    walked into, each field once: ``device_classes[1].ram_mb`` is ``device_classes[0]``'s)."""
    seen = set()
    for leaf, item in _all_leaves(value, path):
        schema = tuple(p if isinstance(p, str) else "*" for p in leaf)
        if schema not in seen:
            seen.add(schema)
            yield leaf, item


def _all_leaves(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _all_leaves(item, (*path, key))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            yield from _all_leaves(item, (*path, i))
    else:
        yield path, value


def _tables(value, path=()):
    if isinstance(value, dict):
        yield path
        for key, item in value.items():
            yield from _tables(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict):
                yield from _tables(item, (*path, i))


def _set(data: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
    node[path[-1]] = value
    return out


def _confused(value):
    """A value of a type no field accepts where ``value`` stands."""
    if isinstance(value, bool):
        return "abc"
    if isinstance(value, int | float):
        return "abc"
    if isinstance(value, str):
        return {"x": 1}
    if isinstance(value, list):
        return ["abc"]
    return "abc"


def _names(path: tuple) -> set[str]:
    """Words an error about ``path`` may name: its keys (the culprit or its section)."""
    return {str(p) for p in path if isinstance(p, str)}


def _run(args, capsys) -> tuple[int | str, str, str]:
    """``(exit status, stdout, stderr)`` of the CLI run in-process; an exception that escapes
    ``main`` (a traceback for the user) is the status ``"traceback: <error>"``."""
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    except Exception as exc:
        code = f"traceback: {type(exc).__name__}: {str(exc)[:100]}"
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _check_refused(code, out, err, names, where):
    lines = err.splitlines()
    assert code == 2, f"{where}: exit {code}, stderr {err[-300:]!r}"
    assert out == "", f"{where}: stdout {out[:200]!r}"
    assert len(lines) == 1 and lines[0].startswith("jointopt: error: "), f"{where}: {err!r}"
    assert any(n in lines[0] for n in names), f"{where}: {lines[0]!r} names none of {names}"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fuzz_malformed_fields_of_every_kind(kind, tmp_path, capsys):
    """Every leaf of the kind's scenario given a value of the wrong type, and an unknown key
    in every table: one line naming the field (or its section), exit 2, empty stdout."""
    base = scenarios.read_scenario(KINDS[kind])
    cases = [(path, _set(base, path, _confused(value))) for path, value in _leaves(base)]
    cases += [((*path, "zz_unknown"), _set(base, (*path, "zz_unknown"), 1))
              for path in _tables(base)]
    failures = []
    for i, (path, data) in enumerate(cases):
        file = tmp_path / f"case{i}.toml"
        file.write_text(tomli_w.dumps(data))
        code, out, err = _run(["solve", str(file)], capsys)
        try:
            _check_refused(code, out, err, _names(path) | {file.name}, ".".join(map(str, path)))
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fuzz_malformed_files_of_every_kind(kind, tmp_path, capsys):
    """Bytes that are not UTF-8 (TOML and YAML), a value nested 5,000 deep, a YAML alias bomb
    (10^10 values) in a field, a recursive alias, a file cut short: one line naming the file."""
    base = scenarios.read_scenario(KINDS[kind])
    text = tomli_w.dumps(base).encode()
    leaf = next(p for p, v in _leaves(base) if isinstance(v, int | float)
                and not isinstance(v, bool))
    bomb = "&a0 [" + ", ".join(["1.0"] * 10) + "]"
    for k in range(1, 10):
        bomb = f"&a{k} [{bomb}, " + ", ".join([f"*a{k - 1}"] * 9) + "]"
    as_yaml = yaml.safe_dump(_set(base, leaf, "PLACEHOLDER"), sort_keys=False)
    files = {
        "latin1.toml": text.replace(b'"', b'"\xe9', 1),
        "random.yaml": bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8)),
        "utf16.toml": tomli_w.dumps(base).encode("utf-16"),
        "deep.toml": tomli_w.dumps(_set(base, leaf, 1.0)).replace(
            "= 1.0", "= " + "[" * 5000 + "]" * 5000, 1).encode(),
        "deep.yaml": as_yaml.replace("PLACEHOLDER", "[" * 5000 + "]" * 5000).encode(),
        "deep40.yaml": as_yaml.replace("PLACEHOLDER", "[" * 40 + "1" + "]" * 40).encode(),
        "bomb.yaml": as_yaml.replace("PLACEHOLDER", bomb).encode(),
        "recursive.yaml": as_yaml.replace("PLACEHOLDER", "&r [1, *r]").encode(),
        "cut.toml": text[: len(text) // 2].rsplit(b"=", 1)[0] + b"= [1, 2",
    }
    failures = []
    for name, data in files.items():
        file = tmp_path / name
        file.write_bytes(data)
        code, out, err = _run(["solve", str(file)], capsys)
        try:
            _check_refused(code, out, err, {str(file)}, name)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_hostile_counts_are_refused_naming_field_value_limit_and_variable(kind, tmp_path,
                                                                          capsys):
    base = scenarios.read_scenario(KINDS[kind])
    for path in COUNTS[kind]:
        file = tmp_path / "big.toml"
        file.write_text(tomli_w.dumps(_set(base, path, 10**9)))
        code, out, err = _run(["solve", str(file)], capsys)
        _check_refused(code, out, err, {".".join(map(str, path))}, path)
        assert "1,000,000,000" in err and "above the limit of" in err
        assert "JOINTOPT_MAX_" in err, err


@pytest.mark.parametrize("kind", ["joint_training_inference", "deployment_plan", "edge_system"])
def test_bad_seeds_in_files_name_the_seed_field(kind, tmp_path, capsys):
    base = scenarios.read_scenario(KINDS[kind])
    paths = [p for p, _ in _leaves(base) if p[-1] == "seed"]
    assert paths
    for path in paths:
        for bad in ("abc", 1.5, -1, True):
            file = tmp_path / "seed.toml"
            file.write_text(tomli_w.dumps(_set(base, path, bad)))
            code, out, err = _run(["solve", str(file)], capsys)
            field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)[1:]
            _check_refused(code, out, err, {field}, (path, bad))
            assert len(err) < 200, err  # the section is not dumped


def test_a_limit_is_raised_or_lowered_by_its_environment_variable(monkeypatch, tmp_path):
    data = scenarios.read_scenario("default")
    n = scenarios.from_dict(data).n
    monkeypatch.setenv("JOINTOPT_MAX_CLIENTS", str(n - 1))
    with pytest.raises(ValidationError) as exc:
        scenarios.from_dict(data)
    assert exc.value.field == "clients.count" and f"JOINTOPT_MAX_CLIENTS={n}" in str(exc.value)
    monkeypatch.setenv("JOINTOPT_MAX_CLIENTS", str(n))
    assert scenarios.from_dict(data).n == n
    monkeypatch.setenv("JOINTOPT_MAX_CLIENTS", "many")
    with pytest.raises(ValidationError, match="JOINTOPT_MAX_CLIENTS must be a positive"):
        scenarios.from_dict(data)


def test_every_limit_is_documented_in_the_readme_with_its_default():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line.split("|")[2].strip()
            for line in readme.splitlines() if line.startswith("| `JOINTOPT_MAX_")}
    for limit in LIMITS.values():
        assert rows.get(limit.env) == f"{limit.default:,}", limit.env


@pytest.mark.parametrize("args, names", [
    (["simulate", "--seed", "-1"], {"--seed"}),
    (["simulate", "--seed", "-1", "--json"], {"--seed"}),
    (["validate", "--seed", "-1"], {"--seed"}),
    (["plan", "--seed", "-1"], {"--seed"}),
    (["simulate", "--rounds", "0"], {"--rounds"}),
    (["simulate", "--rounds", "1000000000"], {"--rounds", "JOINTOPT_MAX_ROUNDS"}),
    (["validate", "--surrogate-seeds", "1000000000"], {"JOINTOPT_MAX_SEEDS"}),
    (["plan", "--n-mc", "-1"], {"--n-mc"}),
    (["plan", "--n-mc", "0"], {"--n-mc"}),
    (["plan", "--n-mc", "1000000000"], {"JOINTOPT_MAX_SAMPLES"}),
    (["solve", "--method", "fast", "--solver", "SCS"], {"--solver"}),
    (["solve", "split_default", "--method", "exact", "--solver", "SCS"], {"--solver"}),
    (["simulate", "--seed", "abc"], {"--seed"}),          # argparse's errors: one line too
    (["solve", "--no-such-option"], {"--no-such-option"}),
])
def test_bad_options_are_one_line_exit_2(args, names, capsys):
    code, out, err = _run(args, capsys)
    _check_refused(code, out, err, names, args)


def test_the_planners_problems_together_are_one_line(tmp_path, capsys):
    data = scenarios.read_scenario("planner_example")
    data["model"]["header_bytes"] = -1.0
    data["server"]["pue"] = 0.5
    file = tmp_path / "plan.toml"
    file.write_text(tomli_w.dumps(data))
    code, out, err = _run(["plan", str(file)], capsys)
    _check_refused(code, out, err, {"model.header_bytes"}, "two problems")
    assert "server.pue" in err


def test_plan_n_mc_follows_the_rule_of_the_scenario_file(tmp_path, capsys):
    """``--n-mc 0`` is refused as ``n_mc = 0`` in the file is (it used to mean 2,000)."""
    data = scenarios.read_scenario("planner_example")
    data["monte_carlo"]["n_mc"] = 0
    file = tmp_path / "plan.toml"
    file.write_text(tomli_w.dumps(data))
    _, _, from_file = _run(["plan", str(file)], capsys)
    _, _, from_flag = _run(["plan", "--n-mc", "0"], capsys)
    assert "--n-mc (monte_carlo.n_mc) 0; must be >= 10" in from_flag
    assert from_file.split("monte_carlo.n_mc ")[1] == from_flag.split("monte_carlo.n_mc) ")[1]


def test_plot_refuses_a_text_column_and_a_binary_table(tmp_path, capsys):
    table = tmp_path / "results.csv"
    table.write_text("param.x,policy,status,acc\n1,online,done,0.5\n2,online,done,0.6\n")
    code, out, err = _run(["plot", str(table), "--x", "x", "--y", "policy"], capsys)
    _check_refused(code, out, err, {"--y"}, "text column")
    assert "acc" in err  # the numeric columns are listed
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 8)
    code, out, err = _run(["plot", str(binary), "--x", "a", "--y", "b"], capsys)
    _check_refused(code, out, err, {"RESULTS"}, "binary table")
    code, _, _ = _run(["plot", str(table), "--x", "x", "--y", "acc",
                       "--out", str(tmp_path / "ok.png")], capsys)
    assert code == 0 and (tmp_path / "ok.png").stat().st_size > 0


def test_per_client_split_writes_its_outputs_and_a_failed_figure_writes_none(tmp_path, capsys,
                                                                              monkeypatch):
    data = scenarios.read_scenario("split_default")  # its first 3 clients: a quicker solve
    data["clients"] = {k: v[:3] for k, v in data["clients"].items()}
    small = tmp_path / "split3.toml"
    small.write_text(tomli_w.dumps(data))
    out = tmp_path / "pc"
    code, _, err = _run(["solve", str(small), "--method", "per_client", "--out", str(out)],
                        capsys)
    assert code == 0, err  # was KeyError 'per_cut' after result.json was written
    assert sorted(p.name for p in out.iterdir()) == ["decisions.csv", "result.json", "split.png"]

    from jointopt import report

    done = tmp_path / "done"
    assert _run(["solve", "cis_tree7", "--out", str(done)], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in done.iterdir()}

    def broken(result, problem, path):
        raise ValidationError("figure", "cannot be drawn")

    monkeypatch.setitem(report.FIGURES, "cis_early_exit", ("exit_weights.png", broken))
    fresh = tmp_path / "fresh"
    code, _, err = _run(["solve", "cis_tree7", "--out", str(fresh)], capsys)
    assert code == 2 and "figure cannot be drawn" in err
    assert not fresh.exists()  # no half-written result.json
    assert _run(["solve", "cis_tree7", "--out", str(done)], capsys)[0] == 2
    assert {p.name: p.read_bytes() for p in done.iterdir()} == before  # untouched


@pytest.mark.parametrize("kind, change, field, words", [
    ("split_learning", {"clients": {"f_client": [1e8, 2e8]}}, "clients.f_client",
     "one entry per client (8), got 2"),
    ("hfl", {"capacities": [40, 120]}, "capacities", "one entry per host (4), got 2"),
    ("hfl", {"workload": [1.0, 2.0]}, "workload", "one entry per device (20), got 2"),
    ("cis_early_exit", {"nodes": {"parent": [-1, 0], "exit": [3, 1]}}, "tree",
     "both given"),
    ("cis_early_exit", {"tree": {"device_share": "abc"}}, "tree.device_share", "got 'abc'"),
])
def test_messages_name_the_culprit(kind, change, field, words):
    data = scenarios.read_scenario(KINDS[kind])
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
    with pytest.raises(ValidationError) as exc:
        scenarios.from_dict(data)
    assert exc.value.field == field and words in str(exc.value), str(exc.value)


def test_solve_help_lists_every_kinds_methods(capsys):
    with pytest.raises(SystemExit):
        main(["solve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for kind, cls in PROBLEM_KINDS.items():
        assert f"{kind}: {', '.join(cls.methods)}" in text
    with pytest.raises(SystemExit):
        main(["scenarios", "--help"])
    assert "name, problem kind, description" in " ".join(capsys.readouterr().out.split())


def test_solver_for_a_method_without_one_is_refused_by_the_api():
    import jointopt

    with pytest.raises(ValidationError, match="not used by method 'fast'"):
        jointopt.solve("default", method="fast", solver="SCS")
    with pytest.raises(ValidationError, match="cis_early_exit problems"):
        jointopt.solve("cis_tree7", method="equal", solver="SCS")


def test_min_latency_reports_what_the_conic_solver_said(monkeypatch):
    """An ``optimal_inaccurate`` answer of the chosen cut is the result's status, and a cut
    where one solver is inaccurate is retried with the next (no warning reaches the user)."""
    import warnings

    from jointopt.solvers.split import optimize

    data = scenarios.read_scenario("split_default")
    data["network"]["cuts"] = [1, 4]  # CLARABEL is inaccurate at cut 4, SCS is not
    data["entropy"] = {k: v[0:4:3] if isinstance(v, list) else v
                       for k, v in data["entropy"].items()}
    problem = scenarios.from_dict(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = problem.solve(method="min_latency")
    assert result.ok and result.diagnostics["conic_solver"] in ("CLARABEL", "SCS")
    assert all("solver_status" in row for row in result.diagnostics["per_cut"]
               if row["status"] == "optimal")
    original = optimize.solve_cut_latency

    def inaccurate(*args, **kwargs):
        row = original(*args, **kwargs)
        if row["status"] == "optimal":
            row["solver_status"] = "optimal_inaccurate"
        return row

    monkeypatch.setattr(optimize, "solve_cut_latency", inaccurate)
    result = problem.solve(method="min_latency")
    assert result.status == "optimal_inaccurate" and not result.ok


def test_planner_decisions_have_a_row_and_a_name_per_device_class():
    problem = scenarios.load("planner_example")
    frame = problem.solve(n_mc=200).decisions_frame()
    assert list(frame["class"]) == [c.name for c in problem.device_classes]
    dropped = frame[~frame["included"]]
    assert len(dropped) >= 1 and dropped["p_success"].isna().all()
    assert frame.loc[frame["included"], "share"].sum() == pytest.approx(1.0)


def test_refusal_benchmark_runs_quick(capsys, benchmark_script):
    """The benchmark of refusal times runs end to end (times are printed, not checked)."""
    bench = benchmark_script("bench_refusal")
    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "slowest in-process refusal" in out and "tree.nodes" in out
