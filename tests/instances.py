"""Random instances for the tests: always-feasible joint training-inference problems and
tiny HFLOP instances for brute force."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from jointopt.solvers.hfl.problem import HFLProblem
from jointopt.solvers.jti import JointTrainingInferenceProblem, RoundState


def random_problem(n: int, seed: int, *, deadlines: bool = True, caps: bool = True,
                   free_share: float = 0.2, **controller) -> JointTrainingInferenceProblem:
    """``free_share`` of the clients have no backlog (Z = 0), i.e. free resources: the
    source of exact ties (a resource with no gain and no price)."""
    rng = np.random.default_rng(seed)
    lam = rng.lognormal(0.0, 0.7, n)
    cost_train = rng.uniform(1.0, 5.0, n)
    cost_download = rng.uniform(0.2, 2.0, n)
    cost_service = rng.uniform(0.05, 0.4, n)
    q_min = rng.uniform(0.01, 0.2, n)
    mu_max = lam * rng.uniform(1.5, 6.0, n) + 1.0
    min_use = q_min * cost_train + lam * 1.01 * cost_service
    full_use = cost_train + cost_download + cost_service * mu_max
    # caps somewhere between the least and the full use: some bind, some do not
    cap = min_use + rng.uniform(0.1, 1.2, n) * (full_use - min_use) if caps else np.inf
    if deadlines:
        deadline = np.where(rng.random(n) < 0.85, rng.uniform(0.2, 2.0, n), np.inf)
    else:
        deadline = np.inf
    K = float(rng.uniform(0.5, 3.0))
    data = {
        "kind": "joint_training_inference",
        "name": f"random-{n}-{seed}",
        "clients": {
            "count": n, "data_weight": rng.uniform(0.2, 2.0, n).tolist(),
            "arrival_rate": lam.tolist(), "deadline": np.broadcast_to(deadline, n).tolist(),
            "cost_train": cost_train.tolist(), "cost_download": cost_download.tolist(),
            "cost_service": cost_service.tolist(),
            "cap": np.broadcast_to(cap, n).tolist(),
            "budget": (min_use * rng.uniform(1.1, 3.0, n)).tolist(),
            "mu_max": mu_max.tolist(), "q_min": q_min.tolist(),
        },
        "convergence": {"a": float(rng.uniform(0.5, 0.95)), "b": float(rng.uniform(0.05, 2.0)),
                        "c": float(rng.uniform(0.0, 0.05))},
        "accuracy": {"acc_max": 0.95, "kappa": float(rng.uniform(0.05, 0.3)), "acc_min": 0.0},
        "controller": {"V": float(rng.uniform(1.0, 30.0)), **controller},
        "state": {"K": K, "ebar": (K * rng.uniform(0.7, 1.6, n)).tolist(),
                  "Z": (rng.uniform(0.05, 2.0, n) * (rng.random(n) >= free_share)).tolist()},
    }
    return JointTrainingInferenceProblem.from_dict(data)


def with_aggregation_noise(problem, beta: float):
    """``problem`` with ``accuracy.aggregation_noise = beta``."""
    return problem.replace(accuracy={**problem.to_dict()["accuracy"], "aggregation_noise": beta})


def state_of(problem) -> RoundState:
    return RoundState.initial(problem)


@st.composite
def tiny_hfl(draw, max_n=5, max_m=3):
    """HFLOP instances small enough to enumerate, zero costs, demands and capacities
    included; costs integral or halves (then ``Delta = 0``)."""
    n = draw(st.integers(1, max_n))
    m = draw(st.integers(1, max_m))
    ints = st.integers(0, 3)
    scale = draw(st.sampled_from([1.0, 0.5]))
    return HFLProblem.from_dict({
        "workload": draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)),
        "capacities": draw(st.lists(st.integers(0, 12), min_size=m, max_size=m)),
        "device_costs": [[scale * draw(ints) for _ in range(m)] for _ in range(n)],
        "edge_costs": [scale * draw(ints) for _ in range(m)],
        "local_to_global_ratio": draw(st.sampled_from([1.0, 2.0, 4.0])),
        "participation_ratio": draw(st.sampled_from([0.0, 0.5, 0.7, 1.0])),
    })
