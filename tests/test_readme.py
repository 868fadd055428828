"""The README's promises: its Python example runs, its quickstart matches CI."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_python_examples_run():
    blocks = _blocks("python")
    assert blocks, "the README shows the Python API"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_quickstart_is_two_commands_that_ci_runs_verbatim():
    quick = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = [b.strip() for b in re.findall(r"```bash\n(.*?)```", quick, flags=re.S)]
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci, f"CI does not run the README's command: {command}"


def test_scenario_example_loads_and_solves():
    import tomllib

    from jointopt import scenarios, solve

    (toml_block,) = _blocks("toml")
    problem = scenarios.from_dict(tomllib.loads(toml_block))
    assert problem.name == "mine" and problem.controller.sweeps_per_round == 1
    assert solve(problem).ok
