"""Drift: the moving label mix (data) and the error a copy gains with its age (model)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jointopt.models.accuracy import AffineAccuracy, ExponentialAccuracy
from jointopt.models.convergence import ConvergenceModel
from jointopt.models.drift import DriftModel, LabelDrift
from jointopt.models.errors import ValidationError
from jointopt.solvers.jti import Allocation

import jointopt
from jointopt.policies import Fixed
from jointopt.surrogate import simulate

SETTINGS = settings(max_examples=40, deadline=None)
jump_lists = st.lists(st.integers(1, 60), max_size=5, unique=True).map(sorted)


@SETTINGS
@given(jumps=jump_lists, growth=st.floats(0.0, 1.0), jump_error=st.floats(0.0, 3.0),
       ageing=st.sampled_from([0.0, 0.001, 0.05]), since=st.integers(0, 70),
       now=st.integers(0, 70))
def test_gap_is_the_sum_of_a_copys_shocks_since(jumps, growth, jump_error, ageing, since,
                                                 now):
    """A copy fresh in round ``since`` gains ``copy_shock(t, age)`` between rounds
    ``t - 1`` and ``t`` at its age in round ``t - 1``: together its gap."""
    model = DriftModel(growth, jump_error, tuple(jumps), ageing)
    want = sum(model.copy_shock(t, t - 1 - since) for t in range(since + 1, now + 1))
    assert float(model.gap(since, now)) == pytest.approx(want, abs=1e-9)
    if ageing == 0:   # the global model's shocks are a fresh copy's
        assert want == pytest.approx(sum(model.shock(t) for t in range(since + 1, now + 1)),
                                     abs=1e-12)
    # vectorised over the refresh round
    sinces = np.arange(0, 71)
    np.testing.assert_allclose(model.gap(sinces, now),
                               [sum(model.copy_shock(t, t - 1 - s) for t in range(s + 1, now + 1))
                                for s in sinces], atol=1e-9)


@SETTINGS
@given(rate=st.floats(0.0, 2.0), shift=st.floats(0.0, 5.0), jumps=jump_lists,
       t=st.integers(0, 80), seed=st.integers(0, 100))
def test_a_moved_mix_is_a_mix(rate, shift, jumps, t, seed):
    base = np.random.default_rng(seed).dirichlet(np.ones(10), size=4)
    drift = LabelDrift(rate, shift, tuple(jumps))
    moved = drift.mix(base, t)
    np.testing.assert_allclose(moved.sum(axis=1), 1.0)
    assert (moved >= 0).all()
    # the offset counts the rate's rounds and the jumps passed
    assert float(drift.offset(t)) == pytest.approx(rate * t + shift * sum(j <= t for j in jumps))


def test_whole_offsets_rotate_the_labels():
    base = np.eye(5)[:2]
    drift = LabelDrift(rate=1.0)
    np.testing.assert_array_equal(drift.mix(base, 3), np.roll(base, 3, axis=1))
    half = LabelDrift(rate=0.5).mix(base, 1)  # half way between two whole rotations
    np.testing.assert_allclose(half[0], [0.5, 0.5, 0, 0, 0])
    jump = LabelDrift(shift=2.0, jumps=(5,))
    np.testing.assert_array_equal(jump.mix(base, 4), base)
    np.testing.assert_array_equal(jump.mix(base, 5), np.roll(base, 2, axis=1))
    assert not LabelDrift().active and not LabelDrift(shift=1.0).active
    assert LabelDrift(shift=1.0, jumps=(3,)).active and LabelDrift(rate=0.1).active


@pytest.mark.parametrize("kwargs,field", [({"rate": -0.1}, "drift.rate"),
                                          ({"jumps": (3, 2)}, "drift.jumps"),
                                          ({"jumps": (0,)}, "drift.jumps[0]"),
                                          ({"jumps": (1.5,)}, "drift.jumps[0]")])
def test_bad_drift_input_names_the_field(kwargs, field):
    with pytest.raises(ValidationError, match=field.replace("[", r"\[")):
        LabelDrift(**kwargs)


def test_drift_section_is_validated_in_a_scenario():
    data = jointopt.load_scenario("drift").to_dict()
    data["drift"]["window"] = 0
    with pytest.raises(jointopt.ValidationError, match="drift.window"):
        jointopt.load_scenario("drift").from_dict(data)
    for field in ("growth", "ageing"):
        data["drift"] = {field: -1.0}
        with pytest.raises(jointopt.ValidationError, match=f"drift.{field}"):
            jointopt.load_scenario("drift").from_dict(data)


@pytest.mark.parametrize("acc", [AffineAccuracy(0.95, 0.3, 0.0),
                                 ExponentialAccuracy(0.97, 1.5, 0.1)])
def test_error_of_inverts_the_accuracy_map(acc):
    e = np.linspace(0.0, 2.5, 11)
    np.testing.assert_allclose(acc.error_of(acc(e)), e, atol=1e-9)


# -- the surrogate under drift ------------------------------------------------------------
@pytest.mark.parametrize("ageing", [0.0, 0.01])
def test_surrogate_copies_age_and_the_global_model_jumps(ageing):
    """A client that never downloads serves with a copy whose error grows by ``growth`` a
    round, ``jump_error`` at a jump and ``ageing (2k + 1)`` from age ``k`` to ``k + 1``; the
    global model takes the jump too, and no ageing (it is always fresh)."""
    problem = jointopt.load_scenario("drift")
    problem = problem.replace(drift={**problem.to_dict()["drift"], "jumps": [6],
                                     "growth": 0.1, "jump_error": 1.0, "ageing": ageing})
    c = problem.clients
    seen = []

    class Never(Fixed):
        def decide(self, obs):
            seen.append(obs)
            return super().decide(obs)

    policy = Never(Allocation(np.ones(c.count), np.zeros(c.count), c.mu_max.copy()))
    res = simulate(problem, policy, rounds=10, seed=0)
    held = np.array([o.held_error[0] for o in seen])
    ages = np.array([o.age[0] for o in seen]) + 1      # the age it served round t at
    np.testing.assert_array_equal(ages, np.arange(1, 11))
    np.testing.assert_allclose(np.diff(held), np.array([0.1] * 5 + [1.1] + [0.1] * 3)
                               + ageing * (2 * ages[:-1] + 1))
    K_seen = np.array([o.K for o in seen])
    # K_{t+1} = a K_t + b V + c + shock(t + 1): the jump lands in round 6's observation
    K_next = res.table["K"].to_numpy()
    np.testing.assert_allclose(K_seen[1:] - K_next[:-1], [0.1] * 5 + [1.1] + [0.1] * 3)


def test_error_scaled_variance_sets_the_contraction():
    p = np.full(4, 0.25)
    model = ConvergenceModel(0.8, 0.1, 0.01, b_rel=0.2)
    q = np.full(4, 0.5)
    v = float(np.sum(p * p * (1 - q) / q))
    assert model.contraction(q, p) == pytest.approx(0.8 + 0.2 * v)
    assert model.step(2.0, q, p) == pytest.approx(0.8 * 2 + (0.1 + 0.2 * 2) * v + 0.01)
    assert model.at(2.0).step(2.0, q, p) == pytest.approx(model.step(2.0, q, p))
    traj = model.trajectory(3.0, q, p, 400)
    assert traj[-1] == pytest.approx(model.fixed_point(q, p), rel=1e-9)
    # more participation: faster contraction, lower fixed point
    assert model.contraction(np.ones(4), p) < model.contraction(q, p)
    assert ConvergenceModel(0.95, 0.1, 0.01, b_rel=5.0).fixed_point(np.full(4, 0.05), p) \
        == float("inf")
