"""Random HFLOP instances with the source experiments' settings.

[authors' code semantics] for the draws; [project choice]: an explicit ``seed`` (0 is a
valid seed, authors' defect 7) or ``numpy.random.Generator`` everywhere; integer draws
``U{a..b}`` include both ends. Bit-exact reproduction of the authors' Python ``random``
streams is not attempted (their seeds were wall-clock based).
"""

from __future__ import annotations

import math

import numpy as np
from jointopt.solvers.hfl.problem import HFLProblem


def _rng(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def generic(n, m, seed=0, *, rho=1.0, l=4.0, c_max_capacity=100, d_max=10,  # noqa: E741
            zero_cost_lan=False, c_min=0, c_max=10, name="random", **extra) -> HFLProblem:
    """Generic generator: ``R_j ~ U{0..C_max}``, ``c^e_j ~ U{c_min..c_max}``, ``D_i ~
    U{0..D_max}``; with
    ``zero_cost_lan`` homes ``h(i) ~ U{0..M-1}`` (cost 0 at home, 1 elsewhere), else
    ``c^d_ij ~ U{c_min..c_max}``."""
    rng = _rng(seed)
    R = rng.integers(0, c_max_capacity, m, endpoint=True).astype(float)
    ce = rng.integers(c_min, c_max, m, endpoint=True).astype(float)
    data = {"name": name, "capacities": R, "edge_costs": ce,
            "local_to_global_ratio": float(l), "participation_ratio": float(rho)}
    if zero_cost_lan:
        data["homes"] = rng.integers(0, m, n)
    else:
        data["device_costs"] = rng.integers(c_min, c_max, (n, m), endpoint=True).astype(float)
    data["workload"] = rng.integers(0, d_max, n, endpoint=True).astype(float)
    data.update(extra)
    return HFLProblem.from_dict(data)


def runtime_instance(n, m, seed=0, **extra) -> HFLProblem:
    """Runtime-experiment preset: ``rho = 0.7``, ``l = 4``, ``c ~ U{0..10}``, ``D ~ U{0..20}``,
    ``C_max = floor(10 N 20 / M)``, random LAN, model v2 (``linking="v2"`` is left to the
    caller: the default formulation v3 has the same optimum)."""
    return generic(n, m, seed, rho=0.7, l=4, c_max_capacity=math.floor(10 * n * 20 / m),
                   d_max=20, c_min=0, c_max=10, name=f"runtime-{n}x{m}-s{seed}", **extra)


def density_instance(x, seed=0, *, n=200, **extra) -> HFLProblem:
    """Cost-vs-edge-density preset: density 1:x, ``M = floor(200/x)``, zero-cost LAN,
    ``c^e = 1``, unit costs, ``rho = 1``, ``l = 2``, ``D_max = 40``,
    ``C_max = floor(2 N 40 / M)``."""
    m = max(1, math.floor(n / x))
    rng = _rng(seed)
    R = rng.integers(0, math.floor(2 * n * 40 / m), m, endpoint=True).astype(float)
    homes = rng.integers(0, m, n)
    D = rng.integers(0, 40, n, endpoint=True).astype(float)
    data = {"name": f"density-1:{x}-s{seed}", "capacities": R, "edge_costs": 1.0,
            "homes": homes, "workload": D, "local_to_global_ratio": 2.0,
            "participation_ratio": 1.0, "accounting": {"unit_costs": True}}
    data.update(extra)
    return HFLProblem.from_dict(data)


def testbed(multiplier: float = 1.0, *, l=2.0, **extra) -> HFLProblem:  # noqa: E741
    """The METR-LA testbed instance from the built-in scenario ``hfl_testbed``, with
    the workload scaled by ``multiplier`` (x1, x10, x100)."""
    import tomllib
    from importlib import resources

    text = (resources.files("jointopt.data") / "scenarios" / "hfl_testbed.toml").read_text()
    data = tomllib.loads(text)
    data["workload"] = [w * multiplier for w in data["workload"]]
    data["local_to_global_ratio"] = float(l)
    if multiplier != 1.0:
        data["name"] = f"{data['name']}-x{multiplier:g}"
    data.update(extra)
    return HFLProblem.from_dict(data)


def clustered_random_workload(seed=0, **extra) -> HFLProblem:
    """Clustered random-workload variant [authors' code]: testbed clusters and
    capacities, ``D_i ~ U{0..floor(1.7 sum R / N)}`` (the capacities argument is honoured,
    authors' defect 7)."""
    base = testbed(**extra)
    rng = _rng(seed)
    hi = math.floor(1.7 * base.capacities.sum() / base.N)
    D = rng.integers(0, hi, base.N, endpoint=True).astype(float)
    return base.replace(workload=D, name=f"testbed-random-s{seed}")
