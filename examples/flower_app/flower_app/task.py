"""The scenario and the digits task, from the run config (shared by both apps)."""

from __future__ import annotations

import functools

from jointopt import load_scenario
from jointopt.flower import DigitsTask
from jointopt.harness.validate import resize


@functools.lru_cache(maxsize=2)
def problem(scenario: str, clients: int):
    """The scenario with its first ``clients`` clients (one Flower node each)."""
    return resize(load_scenario(scenario), clients)


@functools.lru_cache(maxsize=2)
def task(scenario: str, clients: int) -> DigitsTask:
    """The digits split across the clients, the MLP, local SGD and the request mix."""
    return DigitsTask(problem(scenario, clients))


def from_config(run_config) -> tuple[str, int]:
    return str(run_config["scenario"]), int(run_config["clients"])
