"""One edge system, one plan: the user-facing side (text report rows, files, the system
figure, the online simulation). The plan itself is
:class:`jointopt.solvers.system.EdgeSystemProblem`.

    >>> import jointopt
    >>> result = jointopt.solve("system_example")
    >>> result.decisions["association"], result.diagnostics["siloed"]["timely_accuracy"]
"""

from __future__ import annotations

import numpy as np

from jointopt.solvers.base import SolveResult


def headline_rows(result: SolveResult) -> list[tuple[str, str]]:
    """``(label, value)`` rows of a system plan: the joint plan against the siloed one."""
    d, s = result.diagnostics, result.diagnostics["siloed"]

    def pair(key, fmt):
        return f"{format(d[key], fmt)} (siloed {format(s[key], fmt)})"

    rows = [("mode", d["mode"]),
            ("timely accuracy", pair("timely_accuracy", ".4f")),
            ("edge overload", pair("edge_overload", ".4g") + " req/s"),
            ("training comm", pair("comm_per_round", ".4g") + " per global round"),
            ("open hosts", " ".join(str(h) for h in np.asarray(result.decisions["placement"]))),
            ("participants", f"{d['participants']} (required {d['required_participants']})"),
            ("requests served", f"device {d['share_device']:.1%}, edge {d['share_edge']:.1%}, "
                                f"cloud {d['share_cloud']:.1%}"),
            ("loop", f"{d['loop_status']}, best iterate {d['best_iterate']} "
                     f"of {result.iterations}")]
    if "exit_weights" in d:
        rows.append(("exit weights", " ".join(f"{w:.3f}" for w in d["exit_weights"])
                     + f" ({d['exit_rule']})"))
    rows.append(("note", "heuristic over exact stage solvers; no optimality claim"))
    return rows


def deployment_plan(problem, result: SolveResult | None = None):
    """The ``deployment_plan`` problem of the system's plan (stage G): the scenario named by
    ``deployment.base`` with the plan's hierarchical topology written over it
    (:func:`jointopt.solvers.system.deployment.deployment_problem`); ``result`` defaults to
    the joint plan."""
    from jointopt import scenarios
    from jointopt.errors import ValidationError
    from jointopt.solvers.system.deployment import deployment_problem

    base = problem.deployment.base
    if base is None:
        raise ValidationError("deployment.base", "is required to plan the deployment: name a "
                                                 "deployment_plan scenario holding the fleet's "
                                                 "telemetry, costs and budgets")
    data = scenarios.read_scenario(base)
    if data.get("kind") != "deployment_plan":
        raise ValidationError("deployment.base", f"must name a deployment_plan scenario, got "
                                                 f"kind {data.get('kind')!r}")
    if result is None:
        result = problem.solve()
    return deployment_problem(problem, result, data)
